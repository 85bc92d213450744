"""SG-LoRA as use cases: train the generator on the catalog's experts, generate an adapter.

``train``: the experts are the latest version of every adapter for the base model that has a
description, is a plain LoRA and was not itself generated. Descriptions are embedded with the
search service's text embedder (the subsystem never imports retrieval: vectors are passed in);
each expert's key is its catalog description, its training queries are every paraphrase it
carries (zoo adapters bring three in ``metadata.descriptions``). The artifact is versioned by its
sha256 in ``<home>/generators`` (``storage.generator_store``).

``generate``: embed the description, let the generator produce per-module weights over its
experts, realize them as a rank-``rank`` LoRA with the merging engine's exact re-rank of the
stacked factors (no d_out x d_in matrix), and publish it like any derived adapter: validated as
PEFT files, one catalog transaction, lineage edges (relation ``generated``) to the top-k experts
it drew on with their similarity weights, and the full recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hub.core.errors import BadInputError, ConflictError, HubError, NotFoundError, StorageError
from hub.core.lora import LoraAdapter
from hub.core.models import AdapterItem, AdapterMeta
from hub.core.names import AdapterRef
from hub.core.seeds import check_seed
from hub.services.generation_lowrank import realize
from hub.services.provenance import software_versions
from hub.services.registry import AddResult, RegistryService, published_on
from storage.generator_store import GeneratorStore, corrupted_pointer

MAX_DESCRIPTION = 2000  # characters, like search queries: MiniLM reads 256 tokens anyway
MAX_RANK = 256
MAX_SAMPLES = 256
GENERATED_SOURCE = "generated"
NOT_EXPERT_SOURCES = frozenset({GENERATED_SOURCE})

Progress = Callable[[float, str], None]


@dataclass
class DrawnExpert:
    name: str
    version: int
    similarity: float
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "similarity": self.similarity,
            "weight": self.weight,
        }


@dataclass
class GenerateOutcome:
    added: AddResult
    drew_on: list[DrawnExpert]
    generator_version: str


def check_description(description: str) -> str:
    text = description.strip()
    if not text:
        raise BadInputError("the task description is empty", code="description_empty")
    if len(description) > MAX_DESCRIPTION:
        raise BadInputError(
            f"the task description has {len(description)} characters; at most "
            f"{MAX_DESCRIPTION} are accepted (describe the task in a few sentences)",
            code="description_too_long",
        )
    if "\x00" in description:
        raise BadInputError("the task description contains a NUL character", code="bad_input")
    return text


def resolve_base(base: str) -> str:
    """A loadable base model's short name (``smollm2-135m-instruct``) -> its hf id."""
    from generation.base_models import BASE_MODELS

    spec = BASE_MODELS.get(base)
    return spec.hf_id if spec is not None else base


class GeneratorService:
    def __init__(self, registry: RegistryService, embedder: Callable[[], Any], root: Path) -> None:
        self.registry = registry
        self._embedder = embedder  # lazy: MiniLM loads only when a command needs it
        self.store = GeneratorStore(root)

    # -- experts --------------------------------------------------------------------------------
    def experts(
        self, base: str | None, exclude: Sequence[str] = ()
    ) -> tuple[str, list[AdapterItem]]:
        """(base model id, its experts sorted by name). ``base=None`` works when the catalog's
        described adapters are all for one base model."""
        items, _ = self.registry.ls(limit=10**9)
        unknown = sorted(set(exclude) - {i.name for i in items})
        if unknown:
            raise NotFoundError(
                f"cannot exclude {', '.join(unknown)}: no such adapter", names=unknown
            )
        usable = [
            i
            for i in items
            if i.description.strip()
            and i.mergeable
            and i.source not in NOT_EXPERT_SOURCES
            and i.name not in set(exclude)
            and i.base_model
        ]
        if base is None:
            bases = sorted({i.base_model for i in usable if i.base_model})
            if len(bases) > 1:
                raise BadInputError(
                    f"described adapters exist for {len(bases)} base models "
                    f"({', '.join(bases)}); pick one with base (CLI --base)",
                    code="base_ambiguous",
                )
            if not bases:
                raise BadInputError(
                    "the catalog has no described LoRA adapters to learn from "
                    "(add some with a description, or `loradex import-zoo`)",
                    code="no_experts",
                )
            base = bases[0]
        base_id = resolve_base(base)
        chosen = sorted((i for i in usable if i.base_model == base_id), key=lambda i: i.name)
        if not chosen:
            raise BadInputError(
                f"base model {base_id!r} has no described LoRA adapters in the catalog to learn "
                "from (add some with a description, or `loradex import-zoo`)",
                code="no_experts",
            )
        return base_id, chosen

    def _embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._embedder().embed(texts), np.float64)

    # -- training -------------------------------------------------------------------------------
    def train(
        self,
        base: str | None = None,
        *,
        exclude: Sequence[str] = (),
        settings: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        from generation.sglora import ExpertInfo, GeneratorSettings, train_generator

        start = time.perf_counter()
        base_id, items = self.experts(base, exclude)
        options = GeneratorSettings(**(settings or {}))
        if progress:
            progress(0.0, f"loading {len(items)} experts")
        adapters = [self.registry.load(AdapterRef(i.name, i.version)).adapter for i in items]
        embedder = self._embedder()
        keys = self._embed([i.description for i in items])
        paraphrases = [_paraphrases(i) for i in items]
        flat = self._embed([text for group in paraphrases for text in group])  # one batch
        bounds = np.cumsum([0] + [len(g) for g in paraphrases])
        queries = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        infos = [ExpertInfo(i.name, i.version, i.digest, i.description) for i in items]

        def on_step(step: int, steps: int, loss: float) -> None:
            if progress and (step == steps or step % 25 == 0):
                progress(0.1 + 0.85 * step / steps, f"step {step}/{steps} loss {loss:.4f}")

        generator = train_generator(
            adapters,
            infos,
            keys,
            queries,
            base_model=base_id,
            text_embedder_id=embedder.embedder_id,
            settings=options,
            progress=on_step,
        )
        data = generator.to_bytes()
        summary = {
            "base_model": base_id,
            "experts": [f"{e.name}@{e.version}" for e in infos],
            "excluded": sorted(set(exclude)),
            "text_embedder_id": embedder.embedder_id,
            "settings": options.to_dict(),
            "report": generator.report,
            "size_bytes": len(data),
            "seconds": round(time.perf_counter() - start, 3),
        }
        version = self.store.put(base_id, data, summary)
        return {"version": version, **summary}

    def status(self, base: str | None = None) -> dict[str, Any]:
        base_id = self._base_for_status(base)
        pointer = self._pointer(base_id)
        if pointer is None:
            raise _untrained(base_id)
        return pointer

    def _pointer(self, base_id: str) -> dict[str, Any] | None:
        """The current pointer, checked for the fields `generator show` and loading read; a
        corrupt one is a storage error naming the file and the repair (retraining rewrites it)."""
        repair = (
            f"; run `loradex generator train --base {base_id}` to retrain the generator "
            "and rewrite it"
        )
        try:
            pointer = self.store.current(base_id)
            problem = None if pointer is None else _pointer_problem(pointer)
            if problem:
                raise corrupted_pointer(self.store.pointer_path(base_id), problem)
        except StorageError as exc:
            raise StorageError(exc.message + repair, code="generator_corrupted") from None
        return pointer

    def _base_for_status(self, base: str | None) -> str:
        if base is not None:
            return resolve_base(base)
        return self.experts(None)[0]

    def load(self, base_id: str) -> tuple[str, Any]:
        from generation.sglora import SgLoraGenerator

        pointer = self._pointer(base_id)
        if pointer is None:
            raise _untrained(base_id)
        version = pointer["version"]
        return version, SgLoraGenerator.from_bytes(self.store.get(base_id, version))

    # -- generation -----------------------------------------------------------------------------
    def generate(
        self,
        description: str,
        *,
        name: str,
        base: str | None = None,
        k: int | None = None,
        tau: float | None = None,
        samples: int = 8,
        seed: int = 0,
        rank: int = 16,
        tags: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> GenerateOutcome:
        text = check_description(description)
        check_generation_params(rank=rank, samples=samples, seed=seed)
        meta = AdapterMeta(name=name, description=text, tags=[*tags, GENERATED_SOURCE])
        base_id, _ = self.experts(base)
        version, generator = self.load(base_id)
        k = min(generator.settings.k, generator.size) if k is None else k
        tau = generator.settings.tau if tau is None else tau
        embedder = self._embedder()
        if embedder.embedder_id != generator.text_embedder_id:
            raise ConflictError(
                f"the generator for {base_id!r} was trained with text embedder "
                f"{generator.text_embedder_id!r}, not {embedder.embedder_id!r}: run "
                "`loradex generator train` again",
                code="generator_stale",
            )
        if progress:
            progress(0.1, "sampling the generator")
        out = generator.generate(self._embed([text])[0], k=k, tau=tau, samples=samples, seed=seed)
        if progress:
            progress(0.4, f"realizing a rank-{rank} LoRA")
        experts = self._expert_adapters(generator, base_id)
        adapter = realize(out.weights, experts, rank)
        parsed = published_on(adapter, base_id, self.registry.catalog.get_base_model(base_id))
        drew = [
            DrawnExpert(
                generator.experts[i].name,
                generator.experts[i].version,
                float(s),
                float(w),
            )
            for i, s, w in zip(
                out.aggregate.indices,
                out.aggregate.similarities,
                out.aggregate.weights,
                strict=True,
            )
        ]
        recipe = {
            "method": "sg-lora",
            "description": text,
            "generator": {"version": version, "base_model": base_id, "experts": generator.size},
            "params": {"k": k, "tau": tau, "samples": samples, "seed": seed, "rank": rank},
            "settings": generator.settings.to_dict(),
            "text_embedder_id": generator.text_embedder_id,
            "inputs": [
                {**d.to_dict(), "digest": generator.experts[int(i)].digest}
                for d, i in zip(drew, out.aggregate.indices, strict=True)
            ],
            "software": software_versions(),
        }
        catalog = self.registry.catalog
        parents = [
            (catalog.version_id(d.name, d.version), GENERATED_SOURCE, d.weight) for d in drew
        ]
        if progress:
            progress(0.8, "publishing")
        added = self.registry.add_parsed(
            parsed,
            meta,
            source=GENERATED_SOURCE,
            base_model=base_id,
            parents=parents,
            recipe=recipe,
            metadata={
                "generator_version": version,
                "drew_on": [d.to_dict() for d in drew],
            },
        )
        return GenerateOutcome(added, drew, version)

    def _expert_adapters(self, generator: Any, base_id: str) -> list[LoraAdapter]:
        """The generator's experts, exactly the versions (and bytes) it was trained on."""
        out = []
        for info in generator.experts:
            try:
                detail = self.registry.show(AdapterRef(info.name, info.version))
            except HubError:
                detail = None
            if detail is None or detail.digest != info.digest:
                raise ConflictError(
                    f"expert {info.name}@{info.version}, which the generator for {base_id!r} "
                    "was trained on, is no longer in the catalog: run `loradex generator train`",
                    code="generator_stale",
                )
            out.append(self.registry.load(AdapterRef(info.name, info.version)).adapter)
        return out


def _paraphrases(item: AdapterItem) -> list[str]:
    """Training queries of an expert: the paraphrases it carries (zoo adapters have three in
    ``metadata.descriptions``), else its description."""
    extra = item.metadata.get("descriptions")
    texts = (
        [d for d in extra if isinstance(d, str) and d.strip()] if isinstance(extra, list) else []
    )
    return texts or [item.description]


def check_generation_params(*, rank: int, samples: int, seed: int) -> None:
    if not 1 <= rank <= MAX_RANK:
        raise BadInputError(f"rank must be 1..{MAX_RANK}, got {rank}", code="rank_out_of_range")
    if not 0 <= samples <= MAX_SAMPLES:
        raise BadInputError(
            f"samples must be 0..{MAX_SAMPLES}, got {samples}", code="samples_out_of_range"
        )
    check_seed(seed)


def _pointer_problem(pointer: dict[str, Any]) -> str | None:
    """The first field of a generator pointer with the wrong shape (None when it is usable)."""
    experts, settings = pointer.get("experts"), pointer.get("settings")
    if not isinstance(pointer.get("base_model"), str):
        return "'base_model' is not a string"
    if not isinstance(experts, list) or not all(isinstance(e, str) for e in experts):
        return "'experts' is not a list of strings"
    if not isinstance(settings, dict) or not {"k", "tau"} <= settings.keys():
        return "'settings' is not an object with 'k' and 'tau'"
    return None


def _untrained(base_id: str) -> BadInputError:
    return BadInputError(
        f"no SG-LoRA generator is trained for base model {base_id!r}: run "
        f"`loradex generator train --base {base_id}` first",
        code="generator_missing",
    )
