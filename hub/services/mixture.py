"""Mix catalog adapters: an X-LoRA gate trained over frozen experts, published with lineage.

``plan`` validates everything a user can get wrong without loading a model (it is what the job
kind runs at submit time): at least two distinct experts, none of them a mixture, all plain LoRA
(DoRA, bias or ``modules_to_save`` experts are refused with their reason) on one base model with
one weight fingerprint, and a training task for every expert — its own task (zoo and trained
adapters record one) or one given with ``--task``. ``mix`` then loads the base model and the
experts, trains the gate (``generation.mixture_trainer``) and publishes: gate blob, then one
catalog transaction (``mixture_store`` describes the layout). Cancelling (a progress report
raises) or any failure before that transaction registers nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.core.errors import (
    BadInputError,
    IncompatibleBaseModelError,
    NotMergeableError,
    UnknownNameError,
)
from hub.core.models import AdapterDetail, AdapterItem, AdapterMeta
from hub.core.names import AdapterRef
from hub.services.mixture_store import (
    FORMAT,
    MIXTURE_RELATION,
    MIXTURE_SOURCE,
    NOT_MERGEABLE,
    gate_blob,
    is_mixture,
    load_experts,
    peft_config,
    read_mixture,
)
from hub.services.models import ModelService
from hub.services.registry import AddResult, RegistryService
from storage.catalog import NewVersion

# progress(fraction 0..1, message); raising from it (a cancelled job) stops the mix.
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class GateOptions:
    """The gate and its training (CLI flags, REST fields): see ``merging.mixture_gate``."""

    routing: str = "prompt"
    depth: int = 1
    size: int = 256
    layerwise: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    dropout: float = 0.0
    objective: str = "route"
    steps: int = 200
    batch: int = 8
    lr: float = 2e-3
    warmup: int = 10
    examples: int = 32
    seed: int = 0


@dataclass
class MixturePlan:
    experts: list[AdapterDetail]
    tasks: list[str]  # one task reference (zoo name or file) per expert
    base_model: str | None
    modules: dict[str, tuple[int, int]] = field(default_factory=dict)  # union: (d_in, d_out)
    ranks: dict[str, int] = field(default_factory=dict)  # stacked rank per module

    @property
    def labels(self) -> list[str]:
        return [f"{d.name}@{d.version}" for d in self.experts]


@dataclass
class MixOutcome:
    added: AddResult
    report: dict[str, Any]


class MixtureService:
    def __init__(self, registry: RegistryService, models: ModelService) -> None:
        self.registry = registry
        self.models = models

    # -- validation ------------------------------------------------------------------------------
    def plan(self, refs: Sequence[AdapterRef], tasks: Sequence[str] = ()) -> MixturePlan:
        experts = [self.registry.show(ref) for ref in refs]
        labels = [f"{d.name}@{d.version}" for d in experts]
        if len(experts) < 2:
            raise BadInputError(
                f"a mixture needs at least two experts, got {len(experts)}",
                code="mixture_too_few_experts",
            )
        if len(set(labels)) != len(labels):
            raise BadInputError(
                f"an expert is listed twice: {', '.join(labels)}", code="mixture_duplicate_expert"
            )
        for d in experts:
            _check_expert(d)
        base = _common_base(experts)
        self.models.model_for(experts[0])  # a base model loradex can load, or fail now
        plan = MixturePlan(experts, self._tasks(experts, tasks), base)
        for d in experts:
            for m in d.modules:
                plan.modules[m.name] = (m.in_features, m.out_features)
                plan.ranks[m.name] = plan.ranks.get(m.name, 0) + m.rank
        return plan

    def _tasks(self, experts: list[AdapterDetail], given: Sequence[str]) -> list[str]:
        """One task per expert: ``--task EXPERT=TASK`` sets it, a plain ``--task TASK`` goes
        to the next expert without a known one, else the expert's own recorded task."""
        from generation.tasks import load_task

        chosen: list[str | None] = [None] * len(experts)
        plain = []
        for text in given:
            key, sep, value = text.partition("=")
            hits = [i for i, d in enumerate(experts) if key in (d.name, f"{d.name}@{d.version}")]
            if sep and hits:
                if chosen[hits[0]] is not None:  # the last silently winning would hide a slip
                    raise BadInputError(
                        f"expert {key}'s task is given twice ({chosen[hits[0]]!r} and "
                        f"{value!r}); give it once",
                        code="mixture_task_twice",
                    )
                chosen[hits[0]] = value
            else:
                plain.append(text)
        for i, d in enumerate(experts):
            own = d.metadata.get("task")
            if chosen[i] is None and own and self._known(own):
                chosen[i] = str(own)
        for i in range(len(experts)):
            if chosen[i] is None and plain:
                chosen[i] = plain.pop(0)
        if plain:
            raise BadInputError(
                f"task {plain[0]!r} is not needed: every expert already has a task; use "
                "EXPERT=TASK to replace an expert's task",
                code="mixture_task_unassigned",
            )
        missing = [f"{d.name}@{d.version}" for d, t in zip(experts, chosen, strict=True) if not t]
        if missing:
            raise BadInputError(
                f"expert {missing[0]} has no known task to train the gate on; give "
                f"{missing[0].split('@')[0]}=TASK (tasks; CLI --task; a zoo task name, or with "
                "the CLI a .json or .jsonl file)",
                code="mixture_task_missing",
                experts=missing,
            )
        picked = [str(t) for t in chosen]
        resolved = [str(Path(t).resolve()) if Path(t).is_file() else t for t in picked]
        for ref in resolved:
            load_task(ref, self.models.zoo_dir).split("train")  # fail now, not in the job
        return resolved

    def zoo_tasks_only(self, tasks: Sequence[str]) -> list[str]:
        """``tasks`` with every reference pinned to its zoo file; anything that is not a zoo task
        name is refused (REST: a client must not make the server read paths of its choosing)."""
        pinned = []
        for text in tasks:
            key, sep, ref = text.rpartition("=")
            if not self._known(ref):
                raise UnknownNameError(
                    f"{ref[:80]!r} is not a zoo task; over REST, tasks are zoo task names (train "
                    "on task files with the CLI: loradex mix --task FILE)",
                    code="unknown_task",
                )
            path = str(Path(self.models.zoo_dir or ".") / "tasks" / f"{ref}.json")
            pinned.append(f"{key}{sep}{path}")
        return pinned

    def _known(self, task: str) -> bool:
        zoo = self.models.zoo_dir
        safe = bool(task) and all(ch.isalnum() or ch in "_-" for ch in task)
        return safe and zoo is not None and (Path(zoo) / "tasks" / f"{task}.json").is_file()

    # -- building --------------------------------------------------------------------------------
    def mix(
        self,
        refs: Sequence[AdapterRef],
        *,
        name: str,
        options: GateOptions = GateOptions(),
        tasks: Sequence[str] = (),
        description: str = "",
        tags: Sequence[str] = (),
        device: str = "auto",
        progress: Progress | None = None,
    ) -> MixOutcome:
        from generation.mixture_trainer import GateTraining, train_gate
        from generation.tasks import load_task
        from merging.mixture_gate import routing_loss

        report = progress or (lambda _f, _m: None)
        meta = AdapterMeta(name=name, description=description, tags=list(tags))
        plan = self.plan(refs, tasks)
        report(0.0, "loading the base model and the experts")
        loaded = self._base(plan, device)
        adapters = [self.registry.load(AdapterRef(d.name, d.version)).adapter for d in plan.experts]
        task_objs = [load_task(t, self.models.zoo_dir) for t in plan.tasks]
        gate, runtime = _assemble(plan, options, loaded, adapters)
        training = GateTraining(
            objective=options.objective,
            steps=options.steps,
            batch=options.batch,
            lr=options.lr,
            warmup=options.warmup,
            examples=options.examples,
            seed=options.seed,
        )
        result = train_gate(
            loaded,
            runtime,
            gate,
            task_objs,
            training,
            route_loss=routing_loss,
            temperature=gate.config.temperature,
            progress=lambda f, _loss, msg: report(0.05 + 0.85 * f, msg),
        )
        report(0.95, "publishing")  # the last point where a cancel stops everything
        doc = _document(plan, gate, result, task_objs, loaded)
        return self._publish(plan, meta, doc, gate, result)

    def _base(self, plan: MixturePlan, device: str) -> Any:
        first = plan.experts[0]
        loaded = self.models.load(self.models.model_for(first), device)
        for d in plan.experts:
            self.models._check_fingerprint(d, loaded.fingerprint)
        return loaded

    def _publish(
        self, plan: MixturePlan, meta: AdapterMeta, doc: dict[str, Any], gate: Any, result: Any
    ) -> MixOutcome:
        blob = gate_blob(doc, gate.tensors())
        recipe = _recipe(doc, gate, result)
        digest = self.registry.blobs.put_bytes(blob)
        new = NewVersion(
            digest=digest,
            size_bytes=len(blob),
            config={**peft_config(doc, plan.labels, plan.base_model), "loradex_mixture": doc},
            base_model_id=plan.base_model,
            base_model_revision=plan.experts[0].base_model_revision,
            base_model_fingerprint=doc["base_model_fingerprint"],
            architecture=doc["architecture"],
            target_modules=sorted({n.rsplit(".", 1)[-1] for n in plan.modules}),
            module_ranks=dict(plan.ranks),
            module_shapes=dict(plan.modules),
            dtype="F32",
            source=MIXTURE_SOURCE,
            mergeable=False,
            not_mergeable_reason=NOT_MERGEABLE,
            metadata={"mixture": _summary(plan, doc, gate), "members": plan.labels},
            recipe=recipe,
        )
        parents = [
            (self.registry.catalog.version_id(d.name, d.version), MIXTURE_RELATION, None)
            for d in plan.experts
        ]
        item, created = self.registry.catalog.register_version(meta, new, parents=parents)
        return MixOutcome(AddResult(item, created), recipe["report"])

    # -- running ---------------------------------------------------------------------------------
    def runtime(self, detail: AdapterItem, loaded: Any) -> Any:
        """A ``MixtureRuntime`` for a stored mixture on the loaded base model (eval)."""
        from generation.mixing import MixtureRuntime
        from merging.mixture_gate import XLoraGate, effective, parse_gate_config

        mixture = read_mixture(self.registry, detail)
        config = parse_gate_config(mixture.doc["gate"])
        hidden = loaded.config.get("hidden_size")
        if hidden != config.hidden_size:
            raise IncompatibleBaseModelError(
                f"{detail.name}@{detail.version} has a gate for hidden size {config.hidden_size}, "
                f"the base model's is {hidden}",
                code="mixture_hidden_size",
            )
        gate = XLoraGate.from_tensors(config, mixture.gate).to(loaded.device)
        experts = load_experts(self.registry, mixture)
        return MixtureRuntime(
            [e.modules for e in experts],
            config.modules,
            gate,
            routing=config.routing,
            post=lambda s: effective(s, config),
        )


def _check_expert(d: AdapterDetail) -> None:
    label = f"{d.name}@{d.version}"
    if is_mixture(d):
        raise BadInputError(
            f"{label} is itself a mixture; mixtures of mixtures are not supported (mix its "
            "experts instead)",
            code="mixture_of_mixtures",
        )
    if not d.mergeable:
        raise NotMergeableError(
            f"{label} cannot be a mixture expert: {d.not_mergeable_reason}",
            code="mixture_expert_unsupported",
        )


def _common_base(experts: list[AdapterDetail]) -> str | None:
    bases = {(d.base_model, d.base_model_fingerprint) for d in experts}
    if len({b for b, _ in bases}) > 1 or len({f for _, f in bases if f}) > 1:
        shown = ", ".join(
            f"{d.name}@{d.version} -> {d.base_model} ({(d.base_model_fingerprint or '?')[:12]})"
            for d in experts
        )
        raise IncompatibleBaseModelError(
            f"mixture experts must share one base model: {shown}", code="mixture_base_mismatch"
        )
    return experts[0].base_model


def _assemble(
    plan: MixturePlan, options: GateOptions, loaded: Any, adapters: list[Any]
) -> tuple[Any, Any]:
    """The gate (seeded; last layer zero: training starts from the uniform mixture) and the
    runtime that applies it, with the modules in the model's order (PEFT numbers them so)."""
    import torch

    from generation.mixing import MixtureRuntime, module_order
    from merging.mixture_gate import XLoraGate, effective, parse_gate_config

    config = parse_gate_config(
        {
            "experts": len(plan.experts),
            "modules": module_order(loaded.model, list(plan.modules)),
            "hidden_size": int(loaded.config["hidden_size"]),
            "routing": options.routing,
            "depth": options.depth,
            "size": options.size,
            "dropout": options.dropout,
            "layerwise": options.layerwise,
            "temperature": options.temperature,
            "top_k": options.top_k,
        }
    )
    torch.manual_seed(options.seed)
    gate = XLoraGate(config)
    runtime = MixtureRuntime(
        [a.modules for a in adapters],
        config.modules,
        gate,
        routing=config.routing,
        post=lambda s: effective(s, config),
    )
    return gate, runtime


def _document(
    plan: MixturePlan, gate: Any, result: Any, tasks: list[Any], loaded: Any
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "method": "xlora",
        "base_model": plan.base_model,
        "base_model_fingerprint": loaded.fingerprint,
        "architecture": loaded.spec.architecture,
        "experts": [
            {"name": d.name, "version": d.version, "digest": d.digest, "task": t.name}
            for d, t in zip(plan.experts, tasks, strict=True)
        ],
        "gate": gate.config.model_dump(mode="json"),
        "training": result.recipe,
    }


def _recipe(doc: dict[str, Any], gate: Any, result: Any) -> dict[str, Any]:
    from hub.services.provenance import software_versions

    report = {
        "gate_parameters": gate.num_parameters,
        "final_loss": result.losses[-1] if result.losses else None,
        "seconds": round(result.seconds, 3),
        "examples": result.examples,
        "device": result.recipe["device"],
    }
    return {
        "method": "xlora",
        "params": doc["gate"],
        "training": result.recipe,
        "seed": result.recipe["seed"],
        "inputs": doc["experts"],
        "report": report,
        "software": software_versions(),
    }


def _summary(plan: MixturePlan, doc: dict[str, Any], gate: Any) -> dict[str, Any]:
    config = doc["gate"]
    return {
        "experts": plan.labels,
        "tasks": [e["task"] for e in doc["experts"]],
        "routing": config["routing"],
        "objective": doc["training"]["objective"],
        "depth": config["depth"],
        "layerwise": config["layerwise"],
        "modules": len(config["modules"]),
        "gate_parameters": gate.num_parameters,
    }
