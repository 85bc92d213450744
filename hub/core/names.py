"""Adapter names and ``NAME@VERSION`` references (CLI.md: 1-128 of letters, digits, . _ -)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.core.errors import InvalidNameError

_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a legal adapter name, else raise InvalidNameError saying why."""
    if not isinstance(name, str) or not name:
        raise InvalidNameError("adapter name is empty")
    if "\x00" in name:
        raise InvalidNameError("adapter name contains a NUL byte")
    if len(name) > 128:
        raise InvalidNameError(f"adapter name is {len(name)} characters long; the limit is 128")
    if "/" in name or "\\" in name:
        raise InvalidNameError(f"adapter name {name!r} contains a path separator")
    if set(name) == {"."}:
        raise InvalidNameError(f"adapter name {name!r} is only dots (a path's . or ..)")
    if ".." in name:
        raise InvalidNameError(f"adapter name {name!r} contains '..'")
    if not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"adapter name {name!r} has characters outside letters, digits, '.', '_', '-'"
        )
    return name


# versions are catalog integers (and REST's path pattern allows up to 9 digits); a larger one
# is bad input, not a database overflow
MAX_VERSION = 2**31 - 1


@dataclass(frozen=True)
class AdapterRef:
    """A parsed ``NAME[@VERSION]``; ``version`` None means the latest."""

    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> AdapterRef:
        name, sep, ver = text.partition("@")
        validate_name(name)
        if not sep:
            return cls(name)
        if not ver.isdigit() or not 1 <= int(ver) <= MAX_VERSION:
            raise InvalidNameError(
                f"version in {text[:200]!r} must be an integer from 1 to {MAX_VERSION}"
            )
        return cls(name, int(ver))

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"
