"""Click options generated from a method's config dataclasses (``compiler/settings.py``), and the configs
built back from what click parsed: a field is declared once, with its default, help and choices, and the
CLI, ``pimc.compress`` and the library all read it there.

A field's type gives the option's shape: ``bool`` a ``--x/--no-x`` switch, ``tuple[str, ...]`` a repeatable
option, ``tuple[float, ...]`` a comma-separated list, ``T | None`` an optional value."""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import Field, fields
from typing import Any

import click

from ...compiler.settings import SHARED, cli_dest, cli_name, make
from .common import stacked


def config_options(*configs: type,
                   defaults: dict[str, Any] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options of every field of ``configs`` (``--seed`` / ``--no-progress`` come from the command);
    ``defaults`` replaces a field's default on this command only (None: decided by the command)."""
    return stacked(*[_option(f, hint, (defaults or {}).get(f.name, f.default))
                     for config in configs for f, hint in _fields(config) if f.name not in SHARED])


def build(config: type, kw: dict[str, Any], **given: Any) -> Any:
    """An instance of ``config`` from the parsed options (``given`` wins), checked when it has a ``check``."""
    values = {f.name: kw[cli_dest(f)] for f in fields(config) if cli_dest(f) in kw}
    if "progress" in values:
        values["progress"] = not values["progress"]  # parsed as --no-progress
    return make(config, {**values, **given})


def _fields(config: type) -> list[tuple[Field, Any]]:
    hints = typing.get_type_hints(config)
    return [(f, hints[f.name]) for f in fields(config)]


def _option(f: Field, hint: Any, default: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    name, dest, meta = cli_name(f), cli_dest(f), f.metadata
    help_text = meta.get("help")
    base = _base_type(hint)
    if base is bool:
        return click.option(f"--{name}/--no-{name}", dest, default=default, show_default=True, help=help_text)
    if typing.get_origin(base) is tuple:
        (item, _) = typing.get_args(base)
        if item is str:
            return click.option(f"--{name}", dest, multiple=True, default=default, help=help_text)
        return click.option(f"--{name}", dest, default=",".join(str(v) for v in default), show_default=True,
                            callback=_number_list(item), help=help_text)
    kind: Any = base
    if meta.get("choices"):
        kind = click.Choice(meta["choices"])
    elif meta.get("minimum") is not None:
        kind = (click.IntRange if base is int else click.FloatRange)(min=meta["minimum"])
    show = default not in (None, "")
    return click.option(f"--{name}", dest, type=kind, default=default, show_default=show, help=help_text)


def _base_type(hint: Any) -> Any:
    """The type without ``None``."""
    args = typing.get_args(hint)
    if type(None) in args:
        (base,) = [a for a in args if a is not type(None)]
        return base
    return hint


def _number_list(item: type) -> Callable[[Any, Any, str], tuple]:
    def parse(_ctx: Any, _param: Any, text: str) -> tuple:
        try:
            return tuple(item(v) for v in str(text).split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers, got '{text}'") from None
    return parse
