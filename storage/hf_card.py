"""Model cards (README.md with YAML front matter) for adapters pushed to and pulled from the Hub.

Writing follows the Hub's conventions so the Hub's model tree and filters understand the repo:
``base_model``, ``library_name: peft``, ``base_model_relation`` (``merge`` for merged adapters,
``adapter`` otherwise), ``tags`` and ``license``; provenance that the Hub has no field for (the
loradex name, version, weights digest, lineage and recipe) goes in a ``loradex`` block and the
card body. Reading takes description, tags, license and base model from any card, including
PEFT's generated template (its placeholder text is skipped).

Cards are untrusted text: parsed with ``yaml.safe_load`` (through huggingface_hub's ``ModelCard``)
after a size cap, and a card that does not parse is ignored rather than failing the pull.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from hub.core.models import MAX_TAG, MAX_TAGS, AdapterDetail

MAX_CARD_BYTES = 1 << 20
MAX_DESCRIPTION = 2000
# Tags loradex adds to every card it pushes; dropped again on pull (they say nothing there).
PUSH_TAGS = ("loradex", "lora")
# Sources whose adapters are merges in the Hub's sense (base_model_relation: merge).
MERGE_SOURCES = frozenset({"merge", "mixture"})
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_SKIP_PREFIXES = ("#", ">", "|", "```", "-", "*", "<", "![", "[")


@dataclass(frozen=True)
class CardFacts:
    """What a pulled adapter takes from its repo's card."""

    description: str = ""
    tags: list[str] = field(default_factory=list)
    license: str | None = None
    base_model: str | None = None
    problem: str | None = None  # why the card was ignored, if it was


def parse_card(text: str | None) -> CardFacts:
    if not text:
        return CardFacts()
    if len(text.encode()) > MAX_CARD_BYTES:
        return CardFacts(problem=f"README.md is over {MAX_CARD_BYTES} bytes; card ignored")
    text = text.replace("\x00", "")  # no catalog (PostgreSQL text) can hold NUL
    try:
        card = ModelCard(text, ignore_metadata_errors=True)
    except Exception as exc:  # noqa: BLE001 - malformed YAML etc.: the weights still count
        return CardFacts(problem=f"README.md front matter does not parse ({exc}); card ignored")
    data = card.data
    return CardFacts(
        description=_first_paragraph(card.text),
        tags=_tags(data.get("tags")),
        license=_license(data.get("license"), data.get("license_name")),
        base_model=_first_str(data.get("base_model")),
    )


def _first_paragraph(body: str) -> str:
    for block in re.split(r"\n\s*\n", _COMMENT.sub("", body)):
        text = block.strip()
        if not text or text.startswith(_SKIP_PREFIXES) or "More Information Needed" in text:
            continue
        return " ".join(text.split())[:MAX_DESCRIPTION]
    return ""


def _tags(value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    keep = []
    for tag in values:
        if not isinstance(tag, str | int | float) or isinstance(tag, bool):
            continue
        text = str(tag).strip()
        # "base_model:adapter:x" and friends are the Hub's derived tags, not the author's.
        if text and len(text) <= MAX_TAG and ":" not in text and text not in PUSH_TAGS:
            keep.append(text)
    # a card is best effort, like its description and license: its first MAX_TAGS distinct
    # tags are kept rather than the whole pull refused
    return sorted(list(dict.fromkeys(keep))[:MAX_TAGS])


def _license(value: Any, name: Any) -> str | None:
    if value == "other" and isinstance(name, str) and name.strip():
        return name.strip()[:128]
    return str(value).strip()[:128] if isinstance(value, str) and value.strip() else None


def _first_str(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value.strip() if isinstance(value, str) and value.strip() else None


# -- writing ------------------------------------------------------------------------------------
def relation_for(source: str) -> str:
    return "merge" if source in MERGE_SOURCES else "adapter"


def render_card(detail: AdapterDetail, repo_id: str, parent_sources: dict[str, str]) -> str:
    """README.md for ``detail`` pushed to ``repo_id``. ``parent_sources`` maps "name@version"
    of each lineage parent to its source (``hf://repo@sha`` when it came from the Hub)."""
    data = ModelCardData(
        base_model=detail.base_model,
        library_name="peft",
        license=detail.license,
        tags=[*PUSH_TAGS, *detail.tags],
        pipeline_tag="text-generation" if _causal(detail) else None,
        base_model_relation=relation_for(detail.source),
        loradex={
            "name": detail.name,
            "version": detail.version,
            "source": detail.source,
            "digest": detail.digest,
            "rank": detail.rank,
            "target_modules": detail.target_modules,
            "parents": [f"{p.name}@{p.version}" for p in detail.lineage.parents],
        },
    )
    body = "\n\n".join(
        part
        for part in (
            f"# {detail.name}",
            detail.description.strip(),
            f"> Published by loradex from `{detail.name}@{detail.version}` "
            f"(source `{detail.source}`).",
            _facts_table(detail),
            _lineage_section(detail, parent_sources),
            _recipe_section(detail),
            _usage_section(detail, repo_id),
        )
        if part
    )
    return f"---\n{data.to_yaml()}\n---\n\n{body}\n"


def _causal(detail: AdapterDetail) -> bool:
    return str(detail.config.get("task_type") or "").upper() == "CAUSAL_LM"


def _facts_table(detail: AdapterDetail) -> str:
    base = f"`{detail.base_model}`" if detail.base_model else "unknown"
    if detail.base_model_revision:
        base += f" (revision `{detail.base_model_revision}`)"
    rows = [
        ("base model", base),
        ("base weights fingerprint", f"`{detail.base_model_fingerprint or 'unknown'}`"),
        ("PEFT type", f"LoRA, largest rank {detail.rank}, {len(detail.modules)} modules"),
        ("target modules", ", ".join(f"`{m}`" for m in detail.target_modules) or "-"),
        ("adapter_model.safetensors sha256", f"`{detail.digest}`"),
        ("mergeable", "yes" if detail.mergeable else f"no: {detail.not_mergeable_reason}"),
    ]
    return "\n".join(["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)])


def _lineage_section(detail: AdapterDetail, parent_sources: dict[str, str]) -> str:
    parents = detail.lineage.parents
    if not parents:
        return ""
    rows = ["| parent | relation | weight | source |", "| --- | --- | --- | --- |"]
    for p in parents:
        label = f"{p.name}@{p.version}"
        weight = "" if p.weight is None else f"{p.weight:g}"
        rows.append(f"| `{label}` | {p.relation} | {weight} | `{parent_sources.get(label, '?')}` |")
    return "## Lineage\n\n" + "\n".join(rows)


def _recipe_section(detail: AdapterDetail) -> str:
    recipe = detail.lineage.recipe
    if not recipe:
        return ""
    doc = json.dumps(recipe, indent=2, sort_keys=True, default=str)
    return "## Recipe\n\nHow loradex built this adapter (reproducible from it):\n\n" + (
        f"```json\n{doc}\n```"
    )


def _usage_section(detail: AdapterDetail, repo_id: str) -> str:
    base = detail.base_model or "BASE_MODEL_ID"
    return (
        "## Usage\n\n```python\nfrom peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM\n\n"
        f'base = AutoModelForCausalLM.from_pretrained("{base}")\n'
        f'model = PeftModel.from_pretrained(base, "{repo_id}")\n```'
    )
