"""Base models, training and evaluation as use cases over the catalog.

Base models are loaded once per process and cached converted in ``<home>/models``. Every job that
runs an adapter on a base model refuses a mismatch first: the adapter's recorded base model must
be the one loaded, its weight fingerprint (when recorded) must equal the GGUF's, and every module
name and shape must exist in the loaded model (``generation.apply`` names the first misfit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.core.architectures import DECODER_LAYER_MODULES, target_problem
from hub.core.errors import BadInputError, IncompatibleBaseModelError
from hub.core.models import AdapterItem, AdapterMeta, EvaluationRecord
from hub.core.names import AdapterRef, validate_name
from hub.core.seeds import check_seed
from hub.services.registry import AddResult, RegistryService, as_published


@dataclass
class EvalOutcome:
    adapter: str
    task: str
    accuracy: float
    n: int
    seconds: float
    outputs: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter,
            "task": self.task,
            "accuracy": self.accuracy,
            "n": self.n,
            "seconds": self.seconds,
            "outputs": self.outputs,
        }


class ModelService:
    def __init__(self, registry: RegistryService, cache_dir: Path, zoo_dir: Path | None) -> None:
        self.registry = registry
        self.cache_dir = Path(cache_dir)
        self.zoo_dir = zoo_dir
        self._loaded: dict[tuple[str, str], Any] = {}

    # -- base models ----------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        from generation.base_models import BASE_MODELS

        return [
            {
                "name": s.name,
                "hf_id": s.hf_id,
                "architecture": s.architecture,
                "summary": s.summary,
                "prepared": (self.cache_dir / s.name).is_dir(),
            }
            for s in BASE_MODELS.values()
        ]

    def prepare(self, name: str) -> dict[str, Any]:
        """Convert the GGUF once and register the base model (shapes + fingerprint)."""
        from generation.base_models import prepare

        info = prepare(name, self.cache_dir)
        loaded = self.load(name)
        self._register_base(loaded)
        return {
            "name": info.name,
            "fingerprint": info.fingerprint,
            "cache_path": str(info.cache_path),
            "parameters": info.parameters,
            "seconds": info.seconds,
            "converted": info.converted,
        }

    def load(self, name: str, device: str = "auto") -> Any:
        from generation.base_models import load_base_model

        key = (name, device)
        if key not in self._loaded:
            self._loaded[key] = load_base_model(name, self.cache_dir, device)
        return self._loaded[key]

    def _register_base(self, loaded: Any) -> None:
        if self.registry.catalog.get_base_model(loaded.spec.hf_id) is None:
            self.registry.register_base_model(
                loaded.spec.hf_id, loaded.config, fingerprint=loaded.fingerprint
            )

    def model_for(self, item: AdapterItem) -> str:
        """The registered base-model name whose hf id is the adapter's base model."""
        from generation.base_models import BASE_MODELS

        for spec in BASE_MODELS.values():
            if item.base_model in (spec.hf_id, spec.name):
                return spec.name
        known = ", ".join(f"{s.name} ({s.hf_id})" for s in BASE_MODELS.values())
        raise IncompatibleBaseModelError(
            f"{item.name}@{item.version} is for base model {item.base_model!r}, which loradex "
            f"cannot load; loadable base models: {known}",
            code="base_model_not_registered",
        )

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(
        self,
        ref: AdapterRef,
        task_ref: str,
        *,
        limit: int | None = None,
        device: str = "auto",
        batch_size: int = 32,
        record: bool = True,
    ) -> EvalOutcome:
        from generation.evaluator import evaluate
        from generation.tasks import load_task

        task = load_task(task_ref, self.zoo_dir)
        detail = self.registry.show(ref)
        loaded = self.load(self.model_for(detail), device)
        self._check_fingerprint(detail, loaded.fingerprint)
        adapter = self._runnable(detail, loaded)
        result = evaluate(loaded, adapter, task, limit=limit, batch_size=batch_size)
        if record:
            self.registry.catalog.add_evaluation(
                self.registry.catalog.version_id(detail.name, detail.version),
                EvaluationRecord(
                    task=task.name,
                    accuracy=result.accuracy,
                    n=result.n,
                    details={
                        "source": "loradex eval",
                        "base_model": loaded.name,
                        "device": str(loaded.device),
                        "seconds": round(result.seconds, 3),
                    },
                ),
            )
        return EvalOutcome(
            f"{detail.name}@{detail.version}",
            task.name,
            result.accuracy,
            result.n,
            result.seconds,
            result.outputs,
        )

    def _runnable(self, detail: AdapterItem, loaded: Any) -> Any:
        """What the evaluator applies: the LoRA, or a mixture's runtime (experts + gate)."""
        if detail.source == "mixture":
            from hub.services.mixture import MixtureService

            return MixtureService(self.registry, self).runtime(detail, loaded)
        return self.registry.load(AdapterRef(detail.name, detail.version)).adapter

    @staticmethod
    def _check_fingerprint(item: AdapterItem, fingerprint: str) -> None:
        recorded = item.base_model_fingerprint
        if recorded and recorded != fingerprint:
            raise IncompatibleBaseModelError(
                f"{item.name}@{item.version} was made for base weights {recorded[:12]}…, "
                f"but the loaded base model's fingerprint is {fingerprint[:12]}…",
                code="fingerprint_mismatch",
            )

    # -- training -------------------------------------------------------------------------------
    def train(
        self,
        *,
        base: str,
        task_ref: str,
        rank: int,
        name: str | None = None,
        targets: tuple[str, ...] = ("q_proj", "v_proj"),
        steps: int = 200,
        lr: float = 1e-3,
        batch: int = 32,
        warmup: int = 20,
        seed: int = 0,
        device: str = "auto",
        progress: Callable[[int, int, float], None] | None = None,
    ) -> AddResult:
        from generation.tasks import load_task
        from generation.trainer import train_lora

        check_train_args(self.registry, base, rank=rank, targets=targets, lr=lr, seed=seed)
        if name is not None:
            validate_name(name)  # an empty or bad --name fails now, not after training
        task = load_task(task_ref, self.zoo_dir)
        meta = AdapterMeta(  # the card's limits are checked before any model loads
            name=name if name is not None else f"{task.name}.r{rank}",
            description=task.descriptions[0],
            tags=[task.family, "trained"],
        )
        loaded = self.load(base, device)
        self._register_base(loaded)
        result = train_lora(
            loaded,
            task,
            rank=rank,
            targets=targets,
            steps=steps,
            lr=lr,
            batch=batch,
            warmup=min(warmup, steps),
            seed=seed,
            device=device,
            progress=progress,
        )
        config = dict(result.peft_config)
        config["base_model_name_or_path"] = loaded.spec.hf_id
        parsed = as_published(result.adapter, config)
        recipe = {
            **result.recipe,
            "task": task.name,
            "final_loss": result.final_loss,
            "seconds": result.seconds,
        }
        return self.registry.add_parsed(
            parsed,
            meta,
            source="trained",
            recipe=recipe,
            metadata={"task": task.name, "family": task.family},
        )


MAX_TRAIN_RANK = 1024


def _module_names(registry: RegistryService, base: str) -> list[str]:
    """Full module names of ``base`` without loading it: its registered shapes, else the shapes
    its architecture family has (every supported base is a decoder-only transformer)."""
    from generation.base_models import get_base_model

    spec = get_base_model(base)
    info = registry.catalog.get_base_model(spec.hf_id)
    if info is not None and info.module_shapes:
        return list(info.module_shapes)
    return [f"model.layers.0.{m}" for m in DECODER_LAYER_MODULES]


def check_train_args(
    registry: RegistryService,
    base: str,
    *,
    rank: int,
    targets: Sequence[str],
    lr: float,
    seed: int,
) -> None:
    """Refuse bad training arguments before any model loads; messages name the valid range."""
    if not 1 <= rank <= MAX_TRAIN_RANK:
        raise BadInputError(
            f"rank must be 1..{MAX_TRAIN_RANK}, got {rank}", code="rank_out_of_range"
        )
    check_seed(seed)  # one range for every interface: the recipe replays anywhere
    if not math.isfinite(lr) or lr <= 0:
        what = "not a finite number" if not math.isfinite(lr) else "not > 0"
        raise BadInputError(f"lr must be a finite number > 0, got {lr} ({what})", code="bad_lr")
    problem = target_problem(targets, _module_names(registry, base))
    if problem:
        raise BadInputError(problem, code="bad_targets")


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise BadInputError(f"--limit must be >= 1, got {limit}")
