"""Transfer an adapter to another base model with Trans-LoRA, as a use case over the catalog.

``plan`` does every check a user can fail without loading a model (the adapter, its base model,
the target, the task, the seeds), so a job is refused at submit time. ``transfer`` loads the
models, runs ``generation.translora`` and publishes the student like every derived adapter:
serialized and re-read through the upload validator, then one catalog transaction with a
``transferred`` lineage edge to the source version and the full recipe. Nothing is written
before the pipeline has finished, so a failure or a cancel registers nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from generation.translora.params import TransferParams
from hub.core.errors import BadInputError, NotMergeableError
from hub.core.models import AdapterDetail, AdapterMeta
from hub.core.names import AdapterRef, validate_name
from hub.services.models import ModelService
from hub.services.provenance import software_versions
from hub.services.registry import AddResult, RegistryService, as_published

if TYPE_CHECKING:
    from generation.tasks import Example, Task
    from generation.translora.pipeline import TransferModels, TransferResult

DEFAULT_GENERATOR = "smollm2-135m-instruct"
REFERENCE = "Trans-LoRA, Wang et al., NeurIPS 2024, arXiv:2405.17258"
Progress = Callable[[float, str], None]
# Jobs share the process's loaded base models, and the teacher and the discriminator hook LoRA
# factors into them: one transfer at a time per process.
_RUN_LOCK = threading.Lock()


@dataclass(frozen=True)
class TransferPlan:
    source: AdapterDetail
    source_model: str  # base-model registry names
    target_model: str
    generator: str
    task_ref: str
    task: Task
    seeds: list[Example]

    @property
    def source_label(self) -> str:
        return f"{self.source.name}@{self.source.version}"


class TransferService:
    def __init__(self, registry: RegistryService, models: ModelService) -> None:
        self.registry, self.models = registry, models

    def plan(
        self,
        ref: AdapterRef,
        *,
        to: str,
        task_ref: str | None = None,
        generator: str = DEFAULT_GENERATOR,
        params: TransferParams | None = None,
    ) -> TransferPlan:
        """Validate a transfer without loading any model."""
        from generation.base_models import get_base_model
        from generation.tasks import load_task
        from generation.translora.seeds import select_seeds

        params = params or TransferParams()
        detail = self.registry.show(ref)
        if not detail.mergeable:
            raise NotMergeableError(
                f"{detail.name}@{detail.version} cannot be transferred: "
                f"{detail.not_mergeable_reason} (the teacher applies plain LoRA factors)",
                code="not_transferable",
            )
        source_model = self.models.model_for(detail)
        target_model = get_base_model(to).name  # unknown: lists the known base models
        get_base_model(generator)
        if target_model == source_model:
            raise BadInputError(
                f"{detail.name}@{detail.version} is already on {source_model}; choose another "
                "target base model",
                code="same_base_model",
            )
        task_ref = task_ref or detail.metadata.get("task_ref") or detail.metadata.get("task")
        if not task_ref:
            raise BadInputError(
                f"{detail.name}@{detail.version} has no task file: its metadata names no task "
                "(zoo and trained adapters record one); give the task (task; CLI --task "
                "NAME_OR_PATH)",
                code="no_task",
            )
        task = load_task(str(task_ref), self.models.zoo_dir)
        seeds = select_seeds(task, params.seeds, params.seed)
        return TransferPlan(
            detail, source_model, target_model, generator, str(task_ref), task, seeds
        )

    def transfer(
        self,
        ref: AdapterRef,
        *,
        to: str,
        name: str,
        task_ref: str | None = None,
        generator: str = DEFAULT_GENERATOR,
        params: TransferParams | None = None,
        description: str | None = None,
        tags: Sequence[str] = (),
        device: str = "auto",
        progress: Progress | None = None,
    ) -> AddResult:
        validate_name(name)
        params = params or TransferParams()
        plan = self.plan(ref, to=to, task_ref=task_ref, generator=generator, params=params)
        _meta(plan, name, description, tags)  # refuse bad tags/description before minutes of work
        from generation.device import resolve_device

        resolve_device(device)  # an unknown device or a missing CUDA, before any model loads
        report = progress or (lambda _fraction, _message: None)
        report(0.0, "loading models")
        with _RUN_LOCK:
            result, loaded = self._run(plan, params, device, report)
        return self._publish(plan, params, result, loaded, name, description, tags)

    def _run(
        self, plan: TransferPlan, params: TransferParams, device: str, report: Progress
    ) -> tuple[TransferResult, TransferModels]:
        from generation.translora.pipeline import TransferModels, run_transfer

        source = self.models.load(plan.source_model, device)
        self.models._check_fingerprint(plan.source, source.fingerprint)
        target = self.models.load(plan.target_model, device)
        generator = self.models.load(plan.generator, device)
        adapter = self.registry.load(AdapterRef(plan.source.name, plan.source.version)).adapter
        models = TransferModels(source, adapter, target, generator, disc_base=source)
        return run_transfer(models, plan.task, params, device=device, progress=report), models

    def _publish(
        self,
        plan: TransferPlan,
        params: TransferParams,
        result: TransferResult,
        models: TransferModels,
        name: str,
        description: str | None,
        tags: Sequence[str],
    ) -> AddResult:
        target, src = models.target, plan.source
        if self.registry.catalog.get_base_model(target.spec.hf_id) is None:
            self.registry.register_base_model(
                target.spec.hf_id, target.config, fingerprint=target.fingerprint
            )
        config = {**result.peft_config, "base_model_name_or_path": target.spec.hf_id}
        meta = _meta(plan, name, description, tags)
        metadata = {
            "task": plan.task.name,
            "task_ref": plan.task_ref,
            "family": plan.task.family,
            "transferred_from": plan.source_label,
            "source_base_model": src.base_model,
            "synthetic_kept": len(result.kept),
        }
        parents = [(self.registry.catalog.version_id(src.name, src.version), "transferred", None)]
        return self.registry.add_parsed(
            as_published(result.adapter, config),
            meta,
            source="transferred",
            base_model=target.spec.hf_id,
            parents=parents,
            recipe=recipe(plan, params, result, models),
            metadata=metadata,
        )


def _meta(
    plan: TransferPlan, name: str, description: str | None, tags: Sequence[str]
) -> AdapterMeta:
    """The published adapter's metadata; built (and so validated) before the pipeline runs."""
    return AdapterMeta(
        name=name,
        description=plan.source.description if description is None else description,
        tags=[*tags, plan.task.family, "transferred"],
    )


def recipe(
    plan: TransferPlan, params: TransferParams, result: TransferResult, models: TransferModels
) -> dict[str, Any]:
    """Everything needed to reproduce the transfer (and judge it): the recipe, both base models
    with fingerprints, the task, the seeds, and the pipeline's own report."""
    src, target = plan.source, models.target
    return {
        "method": "trans-lora",
        "reference": REFERENCE,
        "params": params.model_dump(mode="json"),
        "source": {
            "name": src.name, "version": src.version, "digest": src.digest,
            "base_model": src.base_model, "base_model_name": plan.source_model,
            "base_model_fingerprint": models.source.fingerprint,
        },
        "target": {
            "base_model": target.spec.hf_id, "base_model_name": target.name,
            "base_model_fingerprint": target.fingerprint,
        },
        "task": {"name": plan.task.name, "ref": plan.task_ref, "family": plan.task.family},
        **result.report,
        "software": software_versions(),
    }  # fmt: skip
