"""The ``pimc`` command line. Every user error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import importlib
import json
import sys

import click

from ..compiler.errors import PimcError
from ..compiler.tables import Table, console

_PLUGINS = {
    "run": ("pimc.cli.run", "run_command"),
    "bench": ("pimc.cli.run", "bench_command"),
    "models": ("pimc.cli.models", "models_group"),
    "demo": ("pimc.app.demo", "demo_command"),
    "diff": ("pimc.app.diff", "diff_command"),
    "sweep": ("pimc.cli.sweep", "sweep_command"),
}


def _plugin(module: str, attr: str) -> click.Command | None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    return getattr(mod, attr, None)


def _export_commands() -> dict[str, click.Command]:
    """``pimc export <method>``: for every method in ``pimc.passes.METHODS``, the ``command`` of
    ``pimc.cli.export.<method>``."""
    from ..passes import METHODS

    commands = {}
    for name in METHODS:
        command = _plugin(f"pimc.cli.export.{name.replace('-', '_')}", "command")
        if command is not None:
            commands[name] = command
    return commands


class _LazyGroup(click.Group):
    """Imports plugin modules (torch, runtime) only when their command runs or help lists them, so
    ``pimc compile`` does not pay for importing torch."""

    def __init__(self, *args, plugins=None, loader=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._plugins = plugins or {}
        self._loader = loader
        self._loaded: dict[str, click.Command] | None = None

    def _lazy(self) -> dict[str, click.Command]:
        if self._loaded is None:
            if self._loader is not None:
                self._loaded = self._loader()
            else:
                found = {name: _plugin(*spec) for name, spec in self._plugins.items()}
                self._loaded = {name: cmd for name, cmd in found.items() if cmd is not None}
        return self._loaded

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        if self._loader is None and name in self._plugins:
            return _plugin(*self._plugins[name])
        return self._lazy().get(name)


@click.group(cls=_LazyGroup, plugins=_PLUGINS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="pimc")
def cli(debug: bool) -> None:
    """pimc: compress and rewrite CNNs in ONNX, then cost them on CiM / sparse accelerators or run them."""


@cli.command("compile")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--target", "-t", required=True, help="Target name (see `pimc targets`).")
@click.option("--output", "-o", type=click.Path(), help="Output ONNX path (default: <stem>.<target>.onnx).")
@click.option("--report", "-r", "report_path", type=click.Path(), help="Write the JSON report here.")
@click.option("--verify", is_flag=True, help="Run before/after every pass on onnxruntime and record errors.")
@click.option("--data", help="Calibration/verification data: digits, mnist, npz:PATH, cifar10:DIR or random.")
@click.option("--passes", help="Comma-separated pass list replacing the target's default pipeline.")
@click.option("--pipeline", "pipeline_file", type=click.Path(), help="TOML pipeline file.")
@click.option("--set", "sets", multiple=True, help="PASS.OPTION=VALUE (repeatable).")
@click.option("--hw", type=click.Path(), help="Hardware config file (TOML or YAML) for the target.")
@click.option("--seed", default=0, show_default=True, help="Seed for random inputs and pass choices.")
@click.option("--eval-data", help="Labelled held-out data (default: the held-out test part of --data); a seeded "
              "half steers the accuracy budget unless --val-data is given, the rest is the test set.")
@click.option("--val-data", help="Labelled images the model was not trained on that steer the accuracy budget "
              "(then the whole held-out set tests).")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=None,
              help="Accuracy budget on the held-out samples, in the metric's unit: top-1 points (default 1.0), "
                   "or dB of PSNR for image-to-image data (default 0.1).")
@click.option("--confidence", type=click.FloatRange(0.5, 1.0, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Wanted chance that the test-split drop stays within the budget; higher "
              "holds back more of the budget for the noise of the steering and test images.")
@click.option("--latency/--no-latency", "latency", default=None,
              help="onnxruntime target: time the input and output model (default: only when a pass changed "
                   "more than the exact normalisations).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3xHxW",
              help="Fix the symbolic dims of input NAME (repeatable); simulator targets need static shapes.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of tables.")
@click.option("--baseline-model", "baseline_models", multiple=True, metavar="NAME=FILE",
              help="Cost baseline NAME on FILE instead of the input model (repeatable; e.g. dense=DENSE.onnx).")
def compile_cmd(model, target, output, report_path, verify, data, passes, pipeline_file, sets, hw, seed,
                eval_data, val_data, max_accuracy_drop, confidence, latency, input_shapes, as_json, baseline_models):
    """Compile MODEL for a target: passes, verification, accuracy, cost report."""
    from ..app.compile import CompileOptions, compile_model
    from ..app.report import render_report, report_json

    opts = CompileOptions(
        input=model, target=target, output=output, report=report_path, verify=verify, data=data,
        passes=passes, pipeline_file=pipeline_file, sets=tuple(sets), hw=hw, seed=seed,
        eval_data=eval_data, max_accuracy_drop=max_accuracy_drop, baseline_models=tuple(baseline_models),
        input_shapes=tuple(input_shapes), val_data=val_data, measure_latency=latency, progress=not as_json,
        confidence=confidence,
    )
    _, report = compile_model(opts)
    if as_json:
        click.echo(report_json(report), nl=False)
    else:
        render_report(report)


@cli.command("inspect")
@click.argument("model", type=click.Path())
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3xHxW",
              help="Fix the symbolic dims of input NAME (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--break-even", "break_even", is_flag=True,
              help="Per layer, the lowest pruning ratio at which the target's sparse path is no slower than dense.")
@click.option("--target", "-t", default=None, help="Target of --break-even (see `pimc targets`).")
@click.option("--hw", type=click.Path(), help="Hardware config file of --break-even's target.")
def inspect_cmd(model, input_shapes, as_json, break_even, target, hw):
    """Print a model summary, its weight storage and every pimc annotation."""
    from ..app.inspect_model import break_even_info, inspect_model, render_inspection
    from ..compiler.input_shapes import fix_input_shapes
    from ..compiler.loader import load_model

    loaded = fix_input_shapes(load_model(model), input_shapes)
    info = inspect_model(loaded)
    if break_even:
        info["break_even"] = break_even_info(loaded, target, hw)
    elif target or hw:
        raise PimcError("--target and --hw are used with --break-even")
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        render_inspection(info)


@cli.command("passes")
@click.option("--json", "as_json", is_flag=True)
def passes_cmd(as_json):
    """List the registered passes and their options."""
    from ..compiler.passbase import all_passes

    passes = all_passes()
    if as_json:
        data = {
            name: {"summary": cls.summary, "exact": cls.exact,
                   "options": [{"name": o.name, "type": o.type.__name__, "default": o.default, "help": o.help}
                               for o in cls.options]}
            for name, cls in passes.items()
        }
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title="passes")
    table.add_column("pass")
    table.add_column("summary")
    table.add_column("options")
    for name, cls in passes.items():
        opts = "\n".join(f"{o.name}: {o.type.__name__} = {o.default!r} — {o.help}" for o in cls.options)
        table.add_row(name, cls.summary, opts or "-")
    console().print(table)


@cli.command("targets")
@click.option("--json", "as_json", is_flag=True)
@click.option("--markdown", "markdown_dir", type=click.Path(file_okay=False),
              help="Write the generated reference pages (targets, passes, command line) under this docs folder.")
def targets_cmd(as_json, markdown_dir):
    """List the targets, their default pipelines and hardware parameters."""
    from .reference_pages import target_info, write_reference

    data = target_info()
    if markdown_dir:
        for path in write_reference(markdown_dir, cli):
            click.echo(str(path))
        return
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    out = console()
    for name, info in data.items():
        out.print(f"[bold]{name}[/]: {info['summary']}")
        out.print(f"  pipeline: {' → '.join(info['pipeline'])}")
        for base, what in info["baselines"].items():
            out.print(f"  baseline {base}: {what} (--baseline-model {base}=FILE)", markup=False)
        for f in info["hardware"]:
            out.print(f"  {f['name']} = {f['default']} {f['unit']}  [dim]({f['source']})[/]")


@cli.group("export", cls=_LazyGroup, loader=_export_commands)
def export_group():
    """Training-aware exporters: train under an algorithm's constraint and export ONNX."""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        status = cli.main(args=args, prog_name="pimc", standalone_mode=False)
    except PimcError as exc:
        if debug:
            raise
        click.echo(f"pimc: error: {exc}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("pimc: aborted", err=True)
        return 130
    except click.ClickException as exc:
        if debug:
            raise
        click.echo(f"pimc: error: {exc.format_message()}", err=True)
        return exc.exit_code if exc.exit_code else 2
    except KeyboardInterrupt:
        click.echo("pimc: interrupted", err=True)
        return 130
    except Exception as exc:
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"pimc: internal error: {type(exc).__name__}: {first} (rerun with --debug)", err=True)
        return 1
    return status if isinstance(status, int) and not isinstance(status, bool) else 0  # ctx.exit(code)


if __name__ == "__main__":
    sys.exit(main())


def console_main() -> None:
    sys.exit(main())
