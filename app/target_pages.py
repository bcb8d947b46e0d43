"""Documentation pages of the targets, generated from the same declarations ``pimc targets`` prints (the
target's summary, default pipeline, baselines and hardware fields) and its module docstring (the cost
equations and sources), so that a page cannot drift from the code."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from ..compiler.target import all_targets, declared_targets


def target_info() -> dict[str, dict[str, Any]]:
    """What ``pimc targets --json`` prints."""
    data = {}
    for name, cls in all_targets().items():
        t = cls()
        data[name] = {
            "summary": t.summary,
            "pipeline": [n for n, _ in t.default_pipeline()],
            "baselines": {plan.name: plan.what for plan in t.baseline_plans()},
            "hardware": cls.config_cls.describe() if cls.config_cls else [],
        }
    return data


def target_page(name: str, info: dict[str, Any]) -> str:
    """The Markdown page of one target."""
    doc = inspect.getdoc(importlib.import_module(declared_targets()[name])) or ""
    lines = [f"# `{name}`", "", info["summary"], "", "Default pipeline: " +
             " → ".join(f"`{p}`" for p in info["pipeline"]) + ".", "", "## Baselines", "",
             "| baseline | what it is |", "|---|---|"]
    lines += [f"| `{base}` | {_cell(what)} |" for base, what in info["baselines"].items()] or ["| - | - |"]
    lines += ["", "## Hardware parameters", ""]
    if info["hardware"]:
        lines += ["Override any of them with `--hw FILE.toml`.", "", "| parameter | default | unit | source |",
                  "|---|---|---|---|"]
        lines += [f"| `{f['name']}` | `{f['default']}` | {_cell(f['unit'])} | {_cell(f['source'])} |"
                  for f in info["hardware"]]
    else:
        lines += ["None: this target runs the model on onnxruntime."]
    lines += ["", "## The model", "", "```text", doc, "```", ""]
    return "\n".join(lines)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_target_pages(folder: str | Path) -> list[Path]:
    """One page per target into ``folder``; returns the paths written."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, info in target_info().items():
        path = out / f"{name}.md"
        path.write_text(target_page(name, info))
        written.append(path)
    return written
