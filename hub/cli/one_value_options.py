"""Refuse a single-valued option given twice on one command line.

click keeps the last value of a repeated option, so ``loradex search q --tag letters --tag words``
would filter by ``words`` alone and ``loradex merge a b --name x --name y`` would register ``y``:
a slip in a script silently changes what is done. Options declared as lists (``--param``,
``mix --task``) take many values and are left alone; so are eager ones (``--help``) and plain
flags (``--json --json`` asks for the same thing twice). A flag with a negative form
(``--x/--no-x``) given twice is refused: ``--x ... --no-x`` is a contradiction, not a request.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption


def repeated_option(order: list[Any]) -> TyperOption | None:
    """The first single-valued option that occurs twice in click's parse order (each occurrence
    of an option is one entry there), or None."""
    seen: set[str | None] = set()
    for param in order:
        if not isinstance(param, TyperOption) or param.multiple or param.count or param.is_eager:
            continue
        if param.is_flag and not param.secondary_opts:
            continue
        if param.name in seen:
            return param
        seen.add(param.name)
    return None


class _OneValuePerOption:
    def make_parser(self, ctx: Any) -> Any:
        parser = super().make_parser(ctx)  # type: ignore[misc]
        parse = parser.parse_args

        def parse_once(args: list[str]) -> Any:
            opts, rest, order = parse(args)
            param = repeated_option(order)
            if param is not None:
                spelled = "/".join(param.opts + param.secondary_opts)
                raise typer.BadParameter(
                    "is given twice; give it once",
                    ctx=ctx,
                    param=param,
                    param_hint=f"'{spelled}'",
                )
            return opts, rest, order

        parser.parse_args = parse_once
        return parser


class OneValueCommand(_OneValuePerOption, TyperCommand):
    pass


class OneValueGroup(_OneValuePerOption, TyperGroup):
    pass


class LoradexTyper(typer.Typer):
    """A Typer app whose commands and group options refuse repeated single-valued options."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=OneValueGroup, **kwargs)

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or OneValueCommand, **kwargs)
