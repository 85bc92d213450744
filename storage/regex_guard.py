"""Refuse user regexes (PEFT ``target_modules``, ``rank_pattern``/``alpha_pattern`` keys) that
could backtrack for a long time.

Uploaded configs and tensor names are both attacker-controlled, so a pattern like ``(a+)+b``
matched against a long module name is a denial of service. Python's ``re`` has no timeout; we
bound the work instead: short patterns, short names, no repeat or alternation nested inside a
repeat, and at most two unbounded repeats (PEFT adds one more), so the worst case is a cubic
scan of a name of at most 256 characters. Real PEFT patterns (``q_proj``, ``.*\\.(q_proj|v_proj)``,
``layers\\.\\d+\\.self_attn\\.q_proj``) pass easily.
"""

from __future__ import annotations

import re
from typing import Any

try:  # the parser is private; without it we fall back to the length/count limits only
    import re._parser as _sre  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python < 3.11
    _sre = None

MAX_PATTERN_CHARS = 256
MAX_NAME_CHARS = 256
MAX_UNBOUNDED_REPEATS = 2


class UnsafeRegex(ValueError):
    pass


def _walk(items: Any, inside_repeat: bool, counter: list[int]) -> None:
    for op, arg in items:
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            low, high, body = arg
            if inside_repeat and high != low:
                raise UnsafeRegex("a variable repeat nested inside another repeat")
            if high == _sre.MAXREPEAT:
                counter[0] += 1
            _walk(body, inside_repeat or high > 1, counter)
        elif op == _sre.SUBPATTERN:
            _walk(arg[-1], inside_repeat, counter)
        elif op == _sre.BRANCH:
            if inside_repeat:  # (a|aa)* backtracks exponentially
                raise UnsafeRegex("an alternation inside a repeat")
            for branch in arg[1]:
                _walk(branch, inside_repeat, counter)
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            _walk(arg[1], inside_repeat, counter)
        elif op == _sre.GROUPREF_EXISTS:
            for branch in arg[1:]:
                if branch is not None:
                    _walk(branch, inside_repeat, counter)


def check_regex(pattern: str) -> None:
    """Raise ``UnsafeRegex`` (a ValueError) for an invalid, long or backtracking-prone regex."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UnsafeRegex(f"longer than {MAX_PATTERN_CHARS} characters")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise UnsafeRegex(f"not a valid regex ({exc})") from exc
    if _sre is None:
        return
    counter = [0]
    _walk(_sre.parse(pattern), False, counter)
    if counter[0] > MAX_UNBOUNDED_REPEATS:
        raise UnsafeRegex(f"more than {MAX_UNBOUNDED_REPEATS} unbounded repeats")
