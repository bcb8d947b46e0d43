"""Reference pages generated from the code, so that they cannot drift from it:

* one page per target, from the declarations ``pimc targets`` prints (summary, default pipeline, baselines,
  hardware fields with unit, default and source) and the target module's docstring (the cost equations);
* the passes, from their declared options (``pimc passes``);
* the command line, from the click commands (every option with its help and default);
* one page per algorithm: its graph passes (module docstrings, options) and its exporter (module docstring,
  the options of ``pimc export <method>``);
* the Python API: ``pimc.compress`` and every method's options (the config fields, with type, default and
  help), and ``compile_model`` with its ``CompileOptions``.

``pimc targets --markdown DOCS`` writes them all: ``DOCS/targets/*.md``, ``DOCS/reference/passes.md``,
``DOCS/reference/cli.md``, ``DOCS/reference/api.md`` and ``DOCS/algorithms/*.md``."""

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


def passes_page() -> str:
    """Every pass with its summary, exactness and options."""
    from ..compiler.passbase import all_passes

    lines = ["# Passes", "", "Every graph pass, as `pimc passes` lists it. Set an option with "
             "`--set PASS.OPTION=VALUE`; run a pipeline of your own with `--passes a,b,c`.", ""]
    for name, cls in all_passes().items():
        lines += [f"## `{name}`", "", cls.summary + ("" if not cls.exact else " Exact: `--verify` checks it."), ""]
        if cls.options:
            lines += ["| option | type | default | what it does |", "|---|---|---|---|"]
            lines += [f"| `{o.name}` | {o.type.__name__} | `{o.default!r}` | {_cell(o.help)}"
                      + (f" (one of {', '.join(map(str, o.choices))})" if o.choices else "") + " |" for o in cls.options]
            lines.append("")
    return "\n".join(lines)


def cli_page(cli) -> str:
    """Every command and option of the ``cli`` group, from the click declarations."""
    import click

    lines = ["# Command line", "", "Every `pimc` command with its options, as `pimc COMMAND --help` prints them.",
             "`python -m pimc` is the same command line.", ""]

    def visit(command: click.Command, path: str, ctx: click.Context) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                if sub is not None:
                    visit(sub, f"{path} {name}", click.Context(sub, parent=ctx, info_name=name))
            return
        lines.extend([f"## `{path}`", "", _cell(inspect.cleandoc(command.help or "")), ""])
        rows = [_option_row(p) for p in command.params if isinstance(p, click.Option) and not p.hidden]
        arguments = [p.human_readable_name for p in command.params if isinstance(p, click.Argument)]
        if arguments:
            lines.extend([f"Arguments: {', '.join(f'`{a}`' for a in arguments)}.", ""])
        if rows:
            lines.extend(["| option | default | what it does |", "|---|---|---|", *rows, ""])

    visit(cli, "pimc", click.Context(cli, info_name="pimc"))
    return "\n".join(lines)


def _option_row(option) -> str:
    names = ", ".join(f"`{o}`" for o in [*option.opts, *option.secondary_opts])
    value = option.default
    shown = isinstance(value, (int, float, str, tuple, list)) and not (option.is_flag and value is False)
    default = f"`{value}`" if shown and value not in ("", (), []) else ""
    return f"| {names} | {default} | {_cell(option.help or '')} |"


#: method → (title, its graph passes, the module of its exporter)
ALGORITHMS = {
    "decompose": ("Kernel decomposition (PENNI / ESCALATE)", ("decompose", "shrink", "recompose"),
                  "pimc.passes.decompose.exporter"),
    "pattern": ("Pattern pruning (PatDNN / ClickTrain)", ("pattern-prune",), "pimc.passes.pattern.admm"),
    "prune": ("ADMM-NN pruning and quantization", ("prune",), "pimc.passes.prune.exporter"),
    "quantize": ("Quantization and bit maps (DYNASTY)", ("quantize", "bitmap"), "pimc.passes.quantize.qat"),
    "comparator": ("Comparator convolutions (LBCNN / CMPNET)", ("comparator-conv",), "pimc.passes.comparator.exporter"),
    "feature-reg": ("Feature Regularization", ("activation-sparsity",), "pimc.passes.feature_reg.exporter"),
    "channel-prune": ("Channel pruning", ("channel-prune",), "pimc.passes.channel.exporter"),
    "admp": ("ADMP: channel pruning for an unlabelled target domain", (), "pimc.passes.channel.admp"),
}


def algorithm_page(method: str, cli) -> str:
    """The graph passes and the exporter (a command of ``cli export``) of one algorithm, from their
    docstrings and declared options."""
    import click

    from ..compiler.passbase import declared_passes, get_pass

    title, passes, exporter = ALGORITHMS[method]
    lines = [f"# {title}", "", "Sources: [docs/sources.md](../sources.md).", "", "## Graph passes (post-training)", ""]
    for name in passes:
        cls = get_pass(name)
        lines += [f"### `{name}`", "", cls.summary + ".", "", "Options: [passes reference](../reference/passes.md).", "",
                  "```text", inspect.getdoc(importlib.import_module(declared_passes()[name])) or "", "```", ""]
    export = cli.commands["export"]
    command = export.get_command(click.Context(export, info_name="export"), method)
    lines += [f"## Exporter: `pimc export {method}` (training-aware)", "", _cell(inspect.cleandoc(command.help or "")),
              "", "| option | default | what it does |", "|---|---|---|"]
    lines += [_option_row(p) for p in command.params if isinstance(p, click.Option) and not p.hidden]
    lines += ["", "```text", inspect.getdoc(importlib.import_module(exporter)) or "", "```", ""]
    return "\n".join(lines)


def api_page() -> str:
    """``pimc.compress`` with the options of every method, and ``compile_model`` with ``CompileOptions``."""
    import dataclasses
    import typing

    from ..app import compile as compile_module
    from ..app.compress import METHODS, compress
    from ..compiler.method import get_method
    from ..compiler.settings import SHARED

    lines = ["# Python API", "", "Generated from the code's docstrings and declarations (`pimc targets --markdown docs`).",
             "", "## `pimc.compress`", "", "```text", f"pimc.compress{inspect.signature(compress, eval_str=True)}", "```", "",
             inspect.getdoc(importlib.import_module("pimc.app.compress")) or "", ""]
    for name in METHODS:
        method = get_method(name)
        lines += [f"### `method=\"{name}\"`", "", "| option | type | default | what it does |", "|---|---|---|---|"]
        for config in method.configs:
            hints = typing.get_type_hints(config)
            lines += [f"| `{f.name}` | `{_type_name(hints[f.name])}` | `{f.default!r}` | "
                      f"{_cell(f.metadata.get('help', ''))} |" for f in dataclasses.fields(config) if f.name not in SHARED]
        lines += ["| `seed`, `progress` | `int`, `bool` | `0`, `True` | the random seed; progress bars |", ""]
    options = compile_module.CompileOptions
    hints = typing.get_type_hints(options)
    lines += ["## `pimc.app.compile.compile_model`", "", "```text",
              "compile_model(opts: CompileOptions) -> tuple[onnx.ModelProto, dict]", "```", "",
              "What `pimc compile` runs: returns the compiled model and the report (the dict written by `--report`, "
              "[fields](../guide/report.md)). `CompileOptions` holds the command's options:", "",
              "| field | type | default |", "|---|---|---|"]
    lines += [f"| `{f.name}` | `{_type_name(hints[f.name])}` | "
              f"{'required' if f.default is dataclasses.MISSING else f'`{f.default!r}`'} |"
              for f in dataclasses.fields(options)]
    return "\n".join(lines)


def _type_name(hint: Any) -> str:
    return _cell(hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", ""))


def write_reference(docs: str | Path, cli) -> list[Path]:
    """Every generated page under ``docs`` (``cli``: the ``pimc`` click group); returns the paths written."""
    root = Path(docs)
    pages = {root / "targets" / f"{name}.md": target_page(name, info) for name, info in target_info().items()}
    pages[root / "reference" / "passes.md"] = passes_page()
    pages[root / "reference" / "cli.md"] = cli_page(cli)
    pages[root / "reference" / "api.md"] = api_page()
    pages.update({root / "algorithms" / f"{method}.md": algorithm_page(method, cli) for method in ALGORITHMS})
    for path, text in pages.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + ("" if text.endswith("\n") else "\n"))
    return list(pages)
