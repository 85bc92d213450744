"""The rules of an adapter's card (description, tags, license): its limits, how an edit is
cleaned, and which fields a card from elsewhere (an ``add`` of weights already here, a Hub card)
would change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.core.errors import BadInputError
from hub.core.models import (
    MAX_CARD_DESCRIPTION,
    MAX_LICENSE,
    MAX_TAGS,
    AdapterItem,
    AdapterMeta,
    check_card_text,
    clean_tags,
)

__all__ = [  # the limits live with AdapterMeta (hub.core); here for the REST schemas
    "MAX_CARD_DESCRIPTION",
    "MAX_LICENSE",
    "MAX_TAGS",
    "card_changes",
    "card_fields",
    "card_not_applied",
]


def card_fields(
    description: str | None = None,
    tags: Sequence[str] | None = None,
    license: str | None = None,
) -> dict[str, Any]:
    """The card fields ``RegistryService.edit_card`` would write, cleaned; a value over its
    limits (or no value at all) is refused with the same codes."""
    fields: dict[str, Any] = {}
    if description is not None:
        fields["description"] = _card_text("description", description, MAX_CARD_DESCRIPTION)
    if tags is not None:
        if len(tags) > MAX_TAGS:
            raise BadInputError(f"at most {MAX_TAGS} tags, got {len(tags)}", code="invalid_tags")
        try:
            fields["tags"] = clean_tags(list(tags))
        except ValueError as exc:
            raise BadInputError(str(exc), code="invalid_tags") from None
    if license is not None:
        fields["license"] = _card_text("license", license, MAX_LICENSE) or None
    if not fields:
        raise BadInputError(
            "nothing to edit: give a description, tags or a license", code="edit_nothing"
        )
    return fields


def _card_text(field: str, value: str, limit: int) -> str:
    return check_card_text(field, value, limit).strip()


def card_changes(
    item: AdapterItem, description: str | None, tags: Sequence[str], license: str | None
) -> dict[str, Any]:
    """The fields of ``item``'s card that a card saying this would change, by the rule a new
    version's card follows when it is registered: only non-empty values count."""
    given = {"description": description, "tags": list(tags), "license": license}
    return {f: v for f, v in given.items() if v and v != getattr(item, f)}


def card_not_applied(meta: AdapterMeta, item: AdapterItem) -> list[str]:
    """Adding weights already registered writes nothing, the card included: say so when the
    request carried a card that differs, instead of dropping it without a word."""
    differ = list(card_changes(item, meta.description, meta.tags, meta.license))
    if not differ:
        return []
    return [
        f"{item.name}@{item.version} already holds these weights, so nothing was written and "
        f"its {' and '.join(differ)} did not change; to change them: loradex edit {item.name}"
    ]
