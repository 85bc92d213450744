"""The mixture service on a tiny base model: publishing with lineage, learned routing, frozen
experts, refusals that register nothing, and every LoRA-only path facing a mixture."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hub.core.errors import BadInputError, ConflictError, HubError
from hub.core.models import AdapterMeta
from hub.core.names import AdapterRef
from hub.services.mixture import GateOptions
from hub.services.registry import as_published
from tests.mixture_helpers import TASKS, base, expert, register_experts, use_tiny_base, write_task

FAST = GateOptions(steps=80, examples=8, lr=5e-2)


@pytest.fixture
def tiny(monkeypatch, container, tmp_path):
    use_tiny_base(monkeypatch)
    labels = register_experts(container, ("first", "last"))
    tasks = [str(write_task(tmp_path, "first")), str(write_task(tmp_path, "last"))]
    return container, labels, tasks


def refs(labels):
    return [AdapterRef.parse(label) for label in labels]


def stored(container):
    items, _ = container.registry.ls(all_versions=True, limit=1000)
    return sorted((i.name, i.version) for i in items), sorted(container.blobs.iter_digests())


def mean_scalings(container, mixture: str, task: str) -> torch.Tensor:
    from generation.prompting import encode_prompt

    runtime = container.mixtures.runtime(container.registry.show(AdapterRef(mixture)), base())
    prompts = [
        encode_prompt(base().tokenizer, TASKS[task].render(e.input)) for e in TASKS[task].eval
    ]
    width = max(map(len, prompts))
    ids = torch.tensor([[2] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    with torch.no_grad(), runtime.attach(base().model):
        base().model(input_ids=ids, attention_mask=mask)
    return runtime.latest_scalings.mean(dim=(1, 2))  # (prompts, experts)


def test_mix_publishes_a_mixture_with_lineage_and_frozen_experts(tiny):
    c, labels, tasks = tiny
    expert_blobs = [c.registry.blobs.get(c.registry.show(r).digest) for r in refs(labels)]
    out = c.mixtures.mix(refs(labels), name="mx", tasks=tasks, options=FAST, tags=["demo"])
    item = out.added.item
    assert (item.name, item.version, item.source, item.mergeable) == ("mx", 1, "mixture", False)
    assert "gate over frozen experts" in item.not_mergeable_reason
    detail = c.registry.show(AdapterRef("mx"))
    parents = [(p.name, p.version, p.relation) for p in detail.lineage.parents]
    assert parents == [("first-expert", 1, "mixture"), ("last-expert", 1, "mixture")]
    summary = detail.metadata["mixture"]
    assert summary["experts"] == labels and summary["tasks"] == ["first", "last"]
    assert summary["gate_parameters"] == 32 * 2 + 2 and summary["modules"] == 4
    assert {(m.name.split(".", 2)[-1], m.rank) for m in detail.modules} >= {
        ("0.self_attn.q_proj", 8)
    }  # stacked ranks: 4 + 4
    recipe = detail.lineage.recipe
    assert [i["digest"] for i in recipe["inputs"]] == [
        c.registry.show(r).digest for r in refs(labels)
    ]
    assert recipe["training"]["objective"] == "route" and recipe["seed"] == 0
    assert detail.config["peft_type"] == "XLORA" and detail.config["adapters"] == {
        "0": labels[0],
        "1": labels[1],
    }
    # the experts are exactly what they were (bytes), and still plain, loadable LoRAs
    assert [c.registry.blobs.get(c.registry.show(r).digest) for r in refs(labels)] == expert_blobs
    assert c.registry.load(refs(labels)[0]).adapter.ranks


def test_the_gate_learns_to_route_each_task_to_its_expert(tiny):
    c, labels, tasks = tiny
    c.mixtures.mix(refs(labels), name="mx", tasks=tasks, options=FAST)
    for j, task in enumerate(("first", "last")):
        lam = mean_scalings(c, "mx", task)
        assert (lam.argmax(-1) == j).all(), (task, lam)
        assert lam[:, j].mean() > 0.8


def test_lm_objective_lowers_the_loss_and_trains_only_the_gate(tiny):
    c, labels, tasks = tiny
    shared = {k: v.clone() for k, v in base().model.state_dict().items()}
    grads = [p.requires_grad for p in base().model.parameters()]
    opts = GateOptions(objective="lm", routing="token", steps=6, batch=4, lr=5e-2, warmup=0)
    out = c.mixtures.mix(refs(labels), name="mx-lm", tasks=tasks, options=opts)
    losses = c.registry.show(AdapterRef("mx-lm")).lineage.recipe
    assert losses["training"]["objective"] == "lm" and out.report["examples"] == 24
    assert np.isfinite(out.report["final_loss"])
    # training ran on a copy: the shared base model keeps its weights, flags and (no) hooks
    assert all(torch.equal(v, base().model.state_dict()[k]) for k, v in shared.items())
    assert grads == [p.requires_grad for p in base().model.parameters()]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in base().model.modules())


def test_evaluating_a_mixture_records_it(tiny):
    c, labels, tasks = tiny
    c.mixtures.mix(refs(labels), name="mx", tasks=tasks, options=FAST)
    result = c.models.evaluate(AdapterRef("mx"), tasks[0], limit=3, batch_size=2)
    assert (result.adapter, result.task, result.n) == ("mx@1", "first", 3)
    evals = c.registry.show(AdapterRef("mx")).evaluations
    assert [(e.task, e.n, e.details["source"]) for e in evals] == [("first", 3, "loradex eval")]


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("one", "mixture_too_few_experts"),
        ("twice", "mixture_duplicate_expert"),
        ("no_task", "mixture_task_missing"),
        ("extra_task", "mixture_task_unassigned"),
        ("task_twice", "mixture_task_twice"),
        ("missing_file", "bad_input"),
        ("other_base", "mixture_base_mismatch"),
        ("of_mixture", "mixture_of_mixtures"),
        ("unknown", "not_found"),
    ],
)
def test_bad_input_is_refused_and_registers_nothing(tiny, tmp_path, case, code):
    c, labels, tasks = tiny
    if case == "of_mixture":
        c.mixtures.mix(refs(labels), name="mx", tasks=tasks, options=GateOptions(steps=1))
    if case == "other_base":
        adapter, config = expert("third")
        config = {**config, "base_model_name_or_path": "someone/else"}
        c.registry.add_parsed(as_published(adapter, config), AdapterMeta(name="alien"))
    before = stored(c)
    experts, given = {
        "one": ([labels[0]], tasks[:1]),
        "twice": ([labels[0], labels[0]], tasks),
        "no_task": (labels, tasks[:1]),
        "extra_task": (labels, [*tasks, tasks[0]]),
        "task_twice": (labels, [f"{labels[0]}={tasks[0]}", f"{labels[0]}={tasks[1]}"]),
        "missing_file": (labels, [tasks[0], str(tmp_path / "nope.json")]),
        "other_base": ([labels[0], "alien"], tasks),
        "of_mixture": (["mx", labels[0]], tasks),
        "unknown": ([labels[0], "ghost"], tasks),
    }[case]
    with pytest.raises(HubError) as info:
        c.mixtures.mix(refs(experts), name="bad", tasks=given, options=GateOptions(steps=1))
    assert info.value.code == code, info.value.message
    assert stored(c) == before


def test_known_tasks_and_expert_task_overrides(tiny, tmp_path):
    c, _, tasks = tiny
    zoo = tmp_path / "zoo"
    (zoo / "tasks").mkdir(parents=True)
    for name in ("first", "last", "third"):
        write_task(zoo / "tasks", name)
    c.models.zoo_dir = zoo
    third = register_experts(c, ("third",), with_task=True)[0]
    plan = c.mixtures.plan(refs([third, "last-expert"]), [tasks[1]])  # bare: to the taskless one
    assert plan.tasks == ["third", tasks[1]]  # its recorded zoo task, the bare one for the other
    plan = c.mixtures.plan(refs([third, "last-expert"]), [tasks[1], f"third-expert={tasks[0]}"])
    assert plan.tasks == [tasks[0], tasks[1]]


def test_lora_only_paths_refuse_or_handle_a_mixture(tiny, tmp_path):
    from hub.services.merge_jobs import validate_merge

    c, labels, tasks = tiny
    c.mixtures.mix(refs(labels), name="mx", tasks=tasks, options=FAST)
    with pytest.raises(BadInputError) as info:
        c.registry.load(AdapterRef("mx"))
    assert info.value.code == "mixture_not_lora" and "first-expert@1" in info.value.message
    for attempt in (  # a merge, a merge job and a dry run give the same reason
        lambda: c.merges.merge(refs(["mx", labels[0]]), method="cat", name="nope"),
        lambda: c.merges.plan(refs(["mx", labels[0]]), method="cat", name="nope"),
        lambda: validate_merge(c, {"adapters": ["mx", labels[0]], "method": "cat", "name": "nope"}),
    ):
        with pytest.raises(BadInputError) as refused:
            attempt()
        assert refused.value.code == "mixture_not_lora" and "use its experts" in str(refused.value)
    with pytest.raises(ConflictError) as busy:
        c.registry.rm(AdapterRef("first-expert"))
    assert busy.value.code == "expert_in_use" and "mx@1" in busy.value.message
    gate = c.registry.file_bytes(AdapterRef("mx"), "adapter_model.safetensors")
    assert gate == c.registry.blobs.get(c.registry.show(AdapterRef("mx")).digest)
    c.registry.rm(AdapterRef("mx"))
    c.registry.rm(AdapterRef("first-expert"))  # free once no mixture uses it


def test_weight_search_embeds_a_mixture_as_its_experts(tiny, tmp_path):
    from hub.services.search import SearchService

    c, labels, tasks = tiny
    c.mixtures.mix(refs(labels), name="mx", tasks=tasks, options=FAST)

    class Encoder:  # one basis vector per distinct adapter, in order of first sight
        embedder_id, feature_id, feature_dim = "fake", "fake-features", 4
        config = SimpleNamespace(out_dim=4)
        seen: dict[bytes, int] = {}

        def embed_many(self, adapters):
            keys = [next(iter(a.modules.values())).A.tobytes() for a in adapters]
            return np.eye(4, dtype=np.float32)[
                [self.seen.setdefault(k, len(self.seen)) for k in keys]
            ]

        feature_vectors = embed_many  # `similar` reads the features side

    search = SearchService(c.registry, tmp_path / "index", "hash")
    search._encoder = Encoder()
    names = ("first-expert", "last-expert", "mx")
    versions = [SimpleNamespace(id=c.catalog.version_id(n, 1)) for n in names]
    vectors, _ = search._weight_embedder("weights")(versions)
    np.testing.assert_allclose(vectors[2], np.array([1, 1, 0, 0]) / np.sqrt(2), atol=1e-6)
    assert search.sync()["weights_count"] == 3
    hits = search.similar(AdapterRef("mx"), k=2)
    assert {h.item.name for h in hits} == {"first-expert", "last-expert"}
