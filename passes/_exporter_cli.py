"""Command-line options every training-aware exporter shares (model shape overrides, dense output, output)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

FILE = click.Path(dir_okay=False, path_type=Path)

_SHARED_TAIL = (
    click.option("--batch-size", type=int, default=64, show_default=True),
    click.option("--train-limit", type=click.IntRange(min=1), default=None,
                 help="Train on the first N training images only (smoke runs)."),
    click.option("--in-channels", type=int, default=None, help="Override the model's input channels."),
    click.option("--input-size", type=int, default=None, help="Override the input height/width (e.g. 16)."),
    click.option("--dense-output", type=FILE, default=None, help="Also export the dense pre-trained model."),
    click.option("--dense-checkpoint", type=FILE, default=None,
                 help="torch state_dict of the dense model: loaded if it exists, else written after pre-training."),
    click.option("--no-progress", is_flag=True, help="Hide the progress bars."),
    click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
)


def shared_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Apply the shared exporter options (in the order they show in ``--help``)."""
    for option in reversed(_SHARED_TAIL):
        command = option(command)
    return command


def emit(summary: dict, as_json: bool, render: Callable[[dict], None]) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        render(summary)
