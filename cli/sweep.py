"""``pimc sweep``: run a sweep SPEC on Ray, or a built-in study (``--study layerwise|break-even``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from ..compiler.errors import PimcError


@click.command("sweep")
@click.argument("spec", type=click.Path())
@click.option("--output", "-o", "out", type=click.Path(file_okay=False), required=True,
              help="Results folder (results.csv/.parquet, pareto.csv/.png, journal.jsonl).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Trials in flight at once (local Ray: its CPUs; default all).")
@click.option("--address", default=None, help="Existing Ray cluster: 'auto' or ray://HOST:PORT.")
@click.option("--resume", is_flag=True, help="Continue the sweep journalled in DIR, skipping finished trials.")
@click.option("--seed", default=0, show_default=True, help="Seed of the compiles and of random / optuna search.")
@click.option("--exact", is_flag=True, help="Compile every hardware point (no cost-only fast path).")
@click.option("--study", type=click.Choice(["layerwise", "break-even"]), default=None,
              help="Built-in study: SPEC is then the MODEL (layerwise needs --target and --data, break-even --target).")
@click.option("--target", "-t", default=None, help="Target of a --study.")
@click.option("--data", default=None, help="Data of a --study (labelled, e.g. digits).")
@click.option("--values", default=None, help="--study layerwise: comma-separated ranks (default 1..9).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def sweep_command(spec, out, workers, address, resume, seed, exact, study, target, data, values, no_progress):
    """Sweep compile options and hardware parameters of SPEC.toml on Ray Tune."""
    from ..sweep.runner import SweepOptions, run_sweep
    from ..sweep.spec import load_spec

    opts = SweepOptions(Path(out), workers, address, resume, seed, exact, not no_progress)
    if study is not None:
        from ..sweep.studies import run_study

        result = run_study(study, spec, target, data, values, opts)
    else:
        if target or data or values:
            raise PimcError("--target / --data / --values belong to --study; a SPEC file names its own")
        result = run_sweep(load_spec(spec), opts)
    counts = Counter(str(r.get("status")) for r in result.rows)
    ok, over = counts.pop("ok", 0), counts.pop("over_budget", 0)
    click.echo(f"{len(result.rows)} trials ({ok} ok, " + (f"{over} over the accuracy budget, " if over else "")
               + f"{sum(counts.values())} failed): {result.computed} run, "
               f"{result.skipped} already in the journal, {result.seconds:.1f} s"
               + (" (cost-only fast path)" if result.fast_path else ""))
    for name, path in result.files.items():
        click.echo(f"  {name}: {path}")
