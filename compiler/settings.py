"""Settings declared once: a method's hyper-parameters are dataclass fields made with ``setting``, which carry
their help text, choices and CLI name; ``pimc export <method>`` generates its options from them
(``cli/export/options.py``) and ``pimc.compress`` takes the same names as keyword arguments.

The CLI name of a field is its name with dashes, unless the field names another (``lr`` of an ADMM schedule
is ``--prune-lr``, beside the pre-training ``--lr``). Torch-free."""

from __future__ import annotations

from dataclasses import Field, field, fields
from typing import Any

SHARED = ("seed", "progress")  # every exporter's own options (--seed, --no-progress), not generated per config


def setting(default: Any, help: str, *, cli: str | None = None, choices: tuple[str, ...] | None = None,
            minimum: int | float | None = None) -> Any:
    """A dataclass field with its help text, its choices, its smallest value and its CLI name."""
    return field(default=default, metadata={"help": help, "cli": cli, "choices": choices, "minimum": minimum})


def cli_name(f: Field) -> str:
    """The option's name without the leading dashes."""
    return f.metadata.get("cli") or f.name.replace("_", "-")


def cli_dest(f: Field) -> str:
    """The keyword the option arrives under in a click command."""
    if f.name == "progress":
        return "no_progress"
    return cli_name(f).replace("-", "_")


def make(config: type, values: dict[str, Any]) -> Any:
    """An instance of ``config`` from the ``values`` named like its fields (others ignored; lists become
    tuples), checked when it has a ``check``: how the library and the CLI both build a method's configs."""
    names = {f.name for f in fields(config)}
    built = config(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})
    if hasattr(built, "check"):
        built.check()
    return built
