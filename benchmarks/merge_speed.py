"""Merge speed bar (issue 5): loradex vs PEFT add_weighted_adapter, same device, same process.

Inputs (``--data``): ``random`` synthetic Llama-shaped adapters (n x rank r on all seven linear
modules of every layer; flat-ish spectra, so fast svd mostly falls back), ``shared`` the same
shapes but every adapter = a per-module common rank-r component + noise (what related task
adapters look like: a clear spectral gap at k = r, where fast svd's subspace iteration
converges and passes its checks), or ``zoo``: the first n real rank-r adapters of
``--zoo`` (SmolLM2-135M q/v LoRAs read with ``storage.peft_format.read_peft_dir``).
For svd (re-rank to r), cat, lego (k = r) and ties it prints loradex time, peak memory and the
relative error vs an fp64 reference (the same method run in float64 by loradex -- for svd that
is Householder QR + core SVD, an independent algorithm from the fp32 Gram path -- measured in
factor space with Gram identities: no dense d_out x d_in matrix anywhere), next to PEFT with the
matching combination_type timed on ``--peft-layers`` layers and scaled linearly to all layers.
Note the machine load (printed) next to CPU figures: wall times scale with it. The CPU-time
columns (``time.process_time``, all threads) are much less sensitive to other processes on a
shared box; their ratio is the load-robust comparison (on an idle box wall ~ CPU / threads).

    .venv/bin/python benchmarks/merge_speed.py --shape reduced            # CI box, ~minutes
    .venv/bin/python benchmarks/merge_speed.py --shape 7b --methods svd,svd_fast --skip-peft
    .venv/bin/python benchmarks/merge_speed.py --shape 7b --data shared --methods svd,svd_fast \
        --skip-peft
    .venv/bin/python benchmarks/merge_speed.py --data zoo --methods svd,svd_fast,cat
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from hub.core.lora import BaseModelRef, LoraAdapter, LoraModule
from merging import merge
from merging.engine import resolve_device
from merging.lowrank import frob_inner
from merging.memory import PeakMemory
from merging.resident import StagedAdapters, merge_staged, stage
from merging.synthetic import llama_shapes, module_name, random_adapter

SHAPES = {"reduced": (1024, 2752, 4), "7b": (4096, 11008, 32)}
# loradex method name, params, PEFT combination_type and kwargs (None: PEFT has no equivalent)
METHODS = {
    "svd": ("svd", lambda r: {"rank": r}, "svd", lambda r: {"svd_rank": r}),
    "svd_fast": ("svd", lambda r: {"rank": r, "algorithm": "fast"}, None, None),
    "cat": ("cat", lambda r: {}, "cat", lambda r: {}),
    "lego": ("lego", lambda r: {"rank": r}, None, None),
    "lego_rank1": (
        "lego",
        lambda r: {"rank": r, "centroid": "rank1", "kernel": "product"},
        None,
        None,
    ),
    "ties": ("ties", lambda r: {"density": 0.5}, "ties", lambda r: {"density": 0.5}),
}


def rel_err(ref: LoraAdapter, names: list[str], factors: dict[str, tuple]) -> float:
    """Global ||dW - dW_ref||_F / ||dW_ref||_F over ``names``; factors: name -> (B, A) scaled."""
    num = den = 0.0
    for name in names:
        m = ref.modules[name]
        Br, Ar = (torch.from_numpy(np.asarray(x))[None] for x in (m.B * m.scaling, m.A))
        B, A = (torch.as_tensor(np.asarray(x))[None] for x in factors[name])
        rr, xx, rx = (
            float(frob_inner(*p)) for p in ((Br, Ar, Br, Ar), (B, A, B, A), (Br, Ar, B, A))
        )
        num += max(rr + xx - 2 * rx, 0.0)
        den += rr
    return (num / den) ** 0.5


def run_loradex(
    ads: list[LoraAdapter], method: str, params: dict, device: str, staged: StagedAdapters
) -> dict:
    w = [1.0 / len(ads)] * len(ads)
    merge(ads[:2], w[:2], method, params, device=device)  # warm-up (kernels, allocator)
    cpu0 = time.process_time()
    res = merge(ads, w, method, params, device=device)
    cpu = time.process_time() - cpu0
    ref = merge(ads, w, method, params, device="cpu", dtype=torch.float64)
    names = list(res.adapter.modules)
    err = rel_err(ref.adapter, names, {n: (m.B, m.A) for n, m in res.adapter})
    merge_staged(staged, w, method, params)  # warm-up
    resident = merge_staged(staged, w, method, params)
    res_err = rel_err(ref.adapter, names, {n: (m.B, m.A) for n, m in resident.to_adapter()})
    return {
        "resident": resident.report["seconds"],
        "resident_err": res_err,
        "seconds": res.report["seconds"],
        "cpu": cpu,
        "peak": res.report["peak_memory_bytes"],
        "err": err,
        "ref": ref.adapter,
        "fallbacks": res.report["fast_path_fallbacks"],
    }


def peft_model(ads: list[LoraAdapter], rank: int, device):  # noqa: ANN001, ANN201
    """A bare module tree with the adapters' module names and shapes (uninitialised base
    weights: PEFT never reads them), one PEFT adapter ``a{i}`` per input."""
    import peft

    root = torch.nn.Module()
    for name, mod in ads[0]:
        parent = root
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        lin = torch.nn.Linear(mod.in_features, mod.out_features, bias=False, device="meta")
        parent.add_module(leaf, lin.to_empty(device=device))
    alpha = next(iter(ads[0].modules.values())).alpha
    leaves = sorted({n.rsplit(".", 1)[-1] for n in ads[0].modules})
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=leaves)
    model = peft.get_peft_model(root, cfg, adapter_name="a0")
    for i in range(1, len(ads)):
        model.add_adapter(f"a{i}", cfg)
    with torch.no_grad():
        for key, mod in model.named_modules():
            name = key.removeprefix("base_model.model.")
            if hasattr(mod, "lora_A") and name in ads[0].modules:
                for i, ad in enumerate(ads):
                    mod.lora_A[f"a{i}"].weight.copy_(torch.tensor(ad.modules[name].A))
                    mod.lora_B[f"a{i}"].weight.copy_(torch.tensor(ad.modules[name].B))
    return model


def shared_adapters(
    shapes: dict[str, tuple[int, int]], layers: int, n: int, rank: int, noise: float, seed: int = 0
) -> list[LoraAdapter]:
    """n adapters whose delta per module = common rank-r part (decaying strengths) + noise:
    ``B_i = U diag(s) + noise G_i``, ``A_i = V^T + noise H_i`` with U, V shared by all."""
    rng = np.random.default_rng(seed)
    strengths = np.exp(-0.1 * np.arange(rank)).astype(np.float32)
    mods: list[dict[str, LoraModule]] = [{} for _ in range(n)]
    for layer in range(layers):
        for leaf, (d_out, d_in) in shapes.items():
            U = rng.standard_normal((d_out, rank), dtype=np.float32) * strengths / np.sqrt(rank)
            V = rng.standard_normal((rank, d_in), dtype=np.float32) / np.sqrt(d_in)
            for i in range(n):
                gb = rng.standard_normal((d_out, rank), dtype=np.float32) / np.sqrt(rank)
                ga = rng.standard_normal((rank, d_in), dtype=np.float32) / np.sqrt(d_in)
                mods[i][module_name(layer, leaf)] = LoraModule(
                    A=V + noise * ga, B=U + noise * gb, alpha=float(2 * rank)
                )
    base = BaseModelRef(model_id="synthetic-llama")
    return [LoraAdapter(base=base, modules=m) for m in mods]


def zoo_adapters(zoo: Path, n: int, rank: int) -> list[LoraAdapter]:
    """The first n adapters of rank ``rank`` in the zoo (sorted by task name), read and
    validated like uploads."""
    from storage.peft_format import read_peft_dir

    ads = []
    for d in sorted(p for p in (zoo / "adapters").iterdir() if p.is_dir()):
        ad = read_peft_dir(d).adapter
        if {m.rank for m in ad.modules.values()} == {rank}:
            ads.append(ad)
        if len(ads) == n:
            return ads
    raise SystemExit(f"zoo {zoo} has only {len(ads)} adapters of rank {rank}")


def run_peft(model, n: int, ctype: str, kw: dict, ref: LoraAdapter, scale: float, dev) -> dict:  # noqa: ANN001
    name = f"m_{ctype}"
    with PeakMemory(dev) as mem:
        t0, cpu0 = time.perf_counter(), time.process_time()
        model.add_weighted_adapter(
            [f"a{i}" for i in range(n)], [1.0 / n] * n, name, combination_type=ctype, **kw
        )
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    factors = {}
    for key, mod in model.named_modules():
        if hasattr(mod, "lora_A") and name in mod.lora_A:
            s = mod.scaling[name]
            factors[key.removeprefix("base_model.model.")] = (
                mod.lora_B[name].weight.detach().cpu().numpy() * s,
                mod.lora_A[name].weight.detach().cpu().numpy(),
            )
    return {
        "seconds": seconds * scale,
        "cpu": cpu * scale,
        "peak": mem.peak_bytes,
        "err": rel_err(ref, list(factors), factors),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="reduced")
    ap.add_argument("--layers", type=int, default=None, help="default: 4 reduced, 32 for 7b")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--decay", type=float, default=0.1, help="per-unit magnitude decay")
    ap.add_argument("--methods", default="svd,svd_fast,cat,lego,ties")
    ap.add_argument("--peft-layers", type=int, default=2)
    ap.add_argument("--skip-peft", action="store_true")
    ap.add_argument("--data", choices=("random", "shared", "zoo"), default="random")
    ap.add_argument("--noise", type=float, default=0.3, help="--data shared: noise level")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--zoo", type=Path, default=Path(__file__).parents[1] / "../shared/zoo")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hidden, inter, default_layers = SHAPES[args.shape]
    layers = args.layers or default_layers
    dev = resolve_device(args.device)
    shapes = llama_shapes(hidden, inter)
    t0 = time.perf_counter()
    if args.data == "zoo":
        ads = zoo_adapters(args.zoo.resolve(), args.n, args.rank)
        layers = len({n.split(".layers.")[1].split(".")[0] for n in ads[0].modules})
        desc = f"data=zoo ({args.zoo.resolve()}) layers={layers}"
    elif args.data == "shared":
        ads = shared_adapters(shapes, layers, args.n, args.rank, args.noise)
        desc = f"data=shared noise={args.noise} shape={args.shape} hidden={hidden} inter={inter}"
    else:
        ads = [
            random_adapter(shapes, layers=layers, rank=args.rank, seed=i, decay=args.decay)
            for i in range(args.n)
        ]
        desc = f"data=random shape={args.shape} hidden={hidden} inter={inter}"
    print(
        f"# {desc} layers={layers} n={args.n} r={args.rank} modules={len(ads[0].modules)} "
        f"device={dev} threads={torch.get_num_threads()} "
        f"load={' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"(inputs built in {time.perf_counter() - t0:.1f}s)"
    )
    staged = stage(ads, device=dev)
    print(
        f"# resident: inputs staged on {dev} once in {staged.staging_seconds:.2f} s "
        f"({staged.nbytes / 2**20:.0f} MB); the resident column merges them with no host "
        "stacking and no host<->device copy (merging.resident), as PEFT's factors sit in its model"
    )
    pl = min(args.peft_layers, layers)
    model = (
        None if args.skip_peft else peft_model([_first_layers(a, pl) for a in ads], args.rank, dev)
    )
    print(
        "| method | loradex s | resident s | loradex CPU s | peak MB | rel err vs fp64 "
        "| PEFT s (scaled) "
        "| PEFT CPU s | PEFT peak MB | PEFT rel err | speed-up | CPU-time ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in args.methods.split(","):
        method, params, ctype, pkw = METHODS[key]
        ours = run_loradex(ads, method, params(args.rank), str(dev), staged)
        row = (
            f"| {key} | {ours['seconds']:.3f} | {ours['resident']:.4f} | {ours['cpu']:.3f} "
            f"| {ours['peak'] / 2**20:.0f} | {ours['err']:.1e} |"
        )
        if model is not None and ctype is not None:
            theirs = run_peft(model, args.n, ctype, pkw(args.rank), ours["ref"], layers / pl, dev)
            row += (
                f" {theirs['seconds']:.2f} | {theirs['cpu']:.2f} | {theirs['peak'] / 2**20:.0f} | "
                f"{theirs['err']:.1e} | {theirs['seconds'] / ours['seconds']:.0f}x | "
                f"{theirs['cpu'] / max(ours['cpu'], 1e-9):.0f}x |"
            )
        else:
            row += " - | - | - | - | - | - |"
        if abs(ours["resident_err"] - ours["err"]) > 1e-3 * max(ours["err"], 1e-6):
            row += f" (resident rel err {ours['resident_err']:.1e})"
        if ours["fallbacks"]:
            row += f" ({ours['fallbacks']} fast-path fallbacks)"
        print(row, flush=True)


def _first_layers(ad: LoraAdapter, layers: int) -> LoraAdapter:
    keep = {f".layers.{i}." for i in range(layers)}
    mods = {n: m for n, m in ad if any(k in n for k in keep)}
    return LoraAdapter(base=ad.base, modules=mods)


if __name__ == "__main__":
    main()
