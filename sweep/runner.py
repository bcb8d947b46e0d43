"""The sweep driver: plan the trials, run them on Ray (Tune trials, or Ray tasks on the cost-only fast
path), journal every finished row, and write the results.

Ray: without ``address`` a local Ray starts with ``workers`` CPUs (default: all); ``address="auto"`` or
``"ray://HOST:PORT"`` joins an existing cluster, where ``workers`` bounds the trials in flight. No dashboard,
no usage statistics. On a cluster the driver ships each model's bytes to the workers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..compiler.errors import PimcError
from .journal import Journal
from .spec import SweepSpec, direction, grid_points
from .trial import STATUS_CRASHED, STATUS_OK, STATUS_OVER_BUDGET, base_row, file_digest, run_trial, trial_key

PENALTY = 1e30  # objective value Optuna sees for a failed trial (dominated by every real point)
CHUNK_POINTS = 10_000  # hardware points per Ray task on the cost-only fast path, at most


@dataclass
class SweepOptions:
    out: Path
    workers: int | None = None
    address: str | None = None
    resume: bool = False
    seed: int = 0
    exact: bool = False  # never take the cost-only fast path
    progress: bool = True
    max_failures: int = 1  # Tune retries of a trial whose worker died


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]
    computed: int
    skipped: int
    seconds: float
    files: dict[str, str] = field(default_factory=dict)
    fast_path: bool = False


def settings_of(spec: SweepSpec, seed: int) -> dict[str, Any]:
    return {"data": spec.data, "eval_data": spec.eval_data, "max_drop": spec.max_accuracy_drop, "seed": seed,
            "input_shapes": tuple(spec.input_shapes), "passes": spec.passes}


def with_settings(compile_point: Callable[..., Any], point: dict[str, Any], settings: dict[str, Any], model: Any) -> Any:
    """``run_trial`` or ``compile_group`` of ``point`` with the sweep's settings (``settings_of``) and ``model``
    (the model's bytes or path)."""
    return compile_point(point, settings["data"], settings["eval_data"], settings["max_drop"], settings["seed"],
                         model, settings["input_shapes"], settings["passes"])


def key_extra(spec: SweepSpec, seed: int) -> str:
    return json.dumps(settings_of(spec, seed), sort_keys=True)


def plan_points(spec: SweepSpec, seed: int, digests: dict[str, str]) -> list[dict[str, Any]]:
    """Grid: every point. Random: ``trials`` points of the grid without replacement, seeded."""
    points = grid_points(spec)
    if spec.search == "random" and spec.trials < len(points):
        order = np.random.default_rng(seed).permutation(len(points))[: spec.trials]
        points = [points[i] for i in order]
    extra = key_extra(spec, seed)
    for i, p in enumerate(points):
        p["index"] = i
        p["key"] = trial_key(digests[p["model"]], p["target"], p["axes"], extra)
    return points


def run_sweep(spec: SweepSpec, opts: SweepOptions) -> SweepResult:
    from .results import write_results

    start = time.perf_counter()
    opts.out.mkdir(parents=True, exist_ok=True)
    journal = Journal(opts.out, opts.resume)
    digests = {m: file_digest(m) for m in spec.models}
    fast = spec.cost_only and bool(spec.axes) and not opts.exact and spec.search != "optuna"
    try:
        if spec.search == "optuna":
            computed, skipped = _with_ray(opts, spec.trials > len(journal.rows),
                                          lambda: _run_optuna(spec, opts, journal, digests), (0, len(journal.rows)))
        else:
            points = plan_points(spec, opts.seed, digests)
            done = journal.done
            todo = [p for p in points if p["key"] not in done]
            skipped = len(points) - len(todo)
            runner = _run_fast if fast else _run_tune
            computed = _with_ray(opts, bool(todo), lambda: runner(todo, spec, opts, journal), 0)
    finally:
        journal.close()
    rows = ordered_rows(journal, spec, opts.seed, digests, None if spec.search == "optuna" else points)
    files = write_results(rows, spec, opts.out)
    return SweepResult(rows, computed, skipped, time.perf_counter() - start, files, fast)


def ordered_rows(journal: Journal, spec: SweepSpec, seed: int, digests: dict[str, str],
                 points: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The journal's rows of this spec, in trial order (grid / random: of ``points``, planned when not given)
    or finishing order (optuna)."""
    if spec.search == "optuna":
        return sorted(journal.rows.values(), key=lambda r: r.get("trial") or 0)
    rows = []
    for p in points if points is not None else plan_points(spec, seed, digests):
        row = journal.rows.get(p["key"])
        if row is not None:
            rows.append({**row, "trial": p["index"]})
    return rows


# ---------------------------------------------------------------------------------------------------
# Ray


def _with_ray(opts: SweepOptions, needed: bool, work, nothing: Any) -> Any:
    """``work()`` on Ray (started or joined for it, shut down after), or ``nothing`` when there is no work."""
    if not needed:
        return nothing
    started = start_ray(opts.address, opts.workers)
    try:
        return work()
    finally:
        if started:
            import ray

            ray.shutdown()


def start_ray(address: str | None, workers: int | None) -> bool:
    """Start (or join) Ray unless it is already initialised; True when this call initialised it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # relative data paths (npz:PATH) stay valid
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PimcError(f"cannot start or reach Ray ({address or 'local'}): {str(exc).splitlines()[0]}") from None
    return True


def _model_bytes(spec: SweepSpec, opts: SweepOptions) -> dict[str, bytes] | None:
    """On a cluster, workers may not see the driver's files: ship the models' bytes."""
    if not opts.address:
        return None
    return {m: Path(m).read_bytes() for m in spec.models}


def _progress(total: int, opts: SweepOptions, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="trial", disable=not opts.progress, dynamic_ncols=True)


def _tune_trial(config: dict[str, Any], points: list[dict[str, Any]], settings: dict[str, Any],
                models: dict[str, bytes] | None, objectives: list[str]) -> dict[str, Any]:
    point = points[config["index"]]
    row = with_settings(run_trial, point, settings, (models or {}).get(point["model"]))
    return {"row": json.dumps(row, default=str), **objective_values(row, objectives)}


def objective_values(row: dict[str, Any], objectives: list[str]) -> dict[str, float]:
    """The row's objective values for Tune / Optuna; a failed row gets the ``PENALTY``. An ``over_budget`` row
    gives its real values when accuracy is an objective (its low accuracy is what the search should see),
    otherwise the penalty (its cost alone would lead the search where the budget forbids)."""
    usable = row.get("status") == STATUS_OK or (
        row.get("status") == STATUS_OVER_BUDGET and any(o in ("accuracy", "drop_points") for o in objectives))
    out = {}
    for name in objectives:
        value = row.get(name)
        bad = not usable or value is None or not math.isfinite(float(value))
        penalty = -PENALTY if direction(name) == "max" else PENALTY
        out[safe(name)] = penalty if bad else float(value)
    return out


def safe(name: str) -> str:
    return "obj_" + name.replace(".", "_")


def _tune_callback(journal: Journal, bar, crashed_row):
    from ray import tune

    class JournalCallback(tune.Callback):
        """Runs in the driver: journals each finished trial and moves the progress bar."""

        def __getstate__(self):  # Tune saves its callbacks with the experiment state: keep the live objects out
            return {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "row" in result:
                row = json.loads(result["row"])
                if row.get("trial") is None:
                    row["trial"] = len(journal.rows)
                journal.append(row)
                bar.update(1)

        def on_trial_error(self, iteration, trials, trial, **info):
            journal.append(crashed_row(trial.config, str(trial.error_file or "worker died")))
            bar.update(1)

    return JournalCallback()


def _run_tune(todo: list[dict[str, Any]], spec: SweepSpec, opts: SweepOptions, journal: Journal) -> int:
    from ray import tune

    def crashed(config, error):
        return {**base_row(todo[config["index"]]), "status": STATUS_CRASHED, "error": f"trial crashed: {error}"}

    trainable = tune.with_parameters(_tune_trial, points=todo, settings=settings_of(spec, opts.seed),
                                     models=_model_bytes(spec, opts), objectives=spec.objectives)
    with _progress(len(todo), opts, "sweep") as bar:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"index": tune.grid_search(list(range(len(todo))))},
            tune_config=tune.TuneConfig(max_concurrent_trials=opts.workers, reuse_actors=True),
            run_config=_run_config(opts, [_tune_callback(journal, bar, crashed)]),
        )
        tuner.fit()
    return len(todo)


def _run_config(opts: SweepOptions, callbacks: list) -> Any:
    from ray import tune

    return tune.RunConfig(
        name="tune", storage_path=str((opts.out / ".tune").resolve()), verbose=0, callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=opts.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
    )


# ---------------------------------------------------------------------------------------------------
# optuna


def _optuna_trial(config: dict[str, Any], spec_axes: dict[str, list[tuple[str, str]]], digests: dict[str, str],
                  settings: dict[str, Any], extra: str, models: dict[str, bytes] | None,
                  objectives: list[str], done: dict[str, dict[str, Any]]) -> dict[str, Any]:
    point = optuna_point(config, spec_axes, digests, extra)
    row = done.get(point["key"])
    if row is None:
        row = with_settings(run_trial, point, settings, (models or {}).get(point["model"]))
    return {"row": json.dumps({**row, "trial": None}, default=str), **objective_values(row, objectives)}


def optuna_point(config: dict[str, Any], spec_axes: dict[str, list[tuple[str, str]]], digests: dict[str, str],
                 extra: str) -> dict[str, Any]:
    model, target = config["model"], config["target"]
    axes = {name: config[key] for name, key in spec_axes[target]}
    return {"model": model, "target": target, "axes": axes, "index": None,
            "key": trial_key(digests[model], target, axes, extra)}


def _run_optuna(spec: SweepSpec, opts: SweepOptions, journal: Journal, digests: dict[str, str]) -> tuple[int, int]:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    keys = {a.name: f"axis{i}" for i, a in enumerate(spec.axes)}
    spec_axes = {t: [(a.name, keys[a.name]) for a in spec.axes_for(t)] for t in spec.targets}
    space: dict[str, Any] = {"model": tune.choice(spec.models), "target": tune.choice(spec.targets)}
    space.update({keys[a.name]: tune.choice(list(a.values)) for a in spec.axes})
    previous = [r for r in journal.rows.values()]
    remaining = spec.trials - len(previous)
    if remaining <= 0:
        return 0, len(previous)
    metrics = [safe(o) for o in spec.objectives]
    modes = [direction(o) for o in spec.objectives]
    searcher = OptunaSearch(
        metric=metrics if len(metrics) > 1 else metrics[0], mode=modes if len(modes) > 1 else modes[0],
        seed=opts.seed, **_warm_start(previous, spec, keys))
    extra = key_extra(spec, opts.seed)
    trainable = tune.with_parameters(
        _optuna_trial, spec_axes=spec_axes, digests=digests, settings=settings_of(spec, opts.seed), extra=extra,
        models=_model_bytes(spec, opts), objectives=spec.objectives, done=dict(journal.rows))

    def crashed(config, error):
        return {**base_row(optuna_point(config, spec_axes, digests, extra)), "status": STATUS_CRASHED,
                "error": f"trial crashed: {error}", "trial": len(journal.rows)}

    with _progress(remaining, opts, "optuna") as bar:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining,
                                        max_concurrent_trials=opts.workers, reuse_actors=True),
            run_config=_run_config(opts, [_tune_callback(journal, bar, crashed)]),
        )
        tuner.fit()
    return remaining, len(previous)


def _warm_start(previous: list[dict[str, Any]], spec: SweepSpec, keys: dict[str, str]) -> dict[str, Any]:
    """Finished trials of an interrupted optuna sweep, told to the sampler instead of run again."""
    if not previous:
        return {}
    points, rewards = [], []
    for row in previous:
        config = {"model": row["model"], "target": row["target"]}
        for a in spec.axes:  # axes of another target: any value (the trial ignores them)
            value = row.get(a.name)
            config[keys[a.name]] = value if a.applies_to(row["target"]) and value is not None else a.values[0]
        values = list(objective_values(row, spec.objectives).values())
        points.append(config)
        rewards.append(values if len(values) > 1 else values[0])
    return {"points_to_evaluate": points, "evaluated_rewards": rewards}


# ---------------------------------------------------------------------------------------------------
# cost-only fast path


def _run_fast(todo: list[dict[str, Any]], spec: SweepSpec, opts: SweepOptions, journal: Journal) -> int:
    """Ray tasks: one compile per (model, target), then chunks of hardware points (up to ``CHUNK_POINTS``) per
    task; one task more than the workers is queued, so a worker starts the next chunk while the driver
    journals the last one."""
    import ray

    from .fastpath import compile_group, cost_points, to_rows

    models = _model_bytes(spec, opts)
    settings = settings_of(spec, opts.seed)
    compile_task = ray.remote(num_cpus=1, max_retries=2)(_compile_task)
    cost_task = ray.remote(num_cpus=1, max_retries=2)(cost_points)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in todo:
        groups.setdefault((p["model"], p["target"]), []).append(p)
    workers = opts.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    compiled = {g: compile_task.remote(pts[0], settings, (models or {}).get(g[0]), compile_group)
                for g, pts in groups.items()}
    chunks = []
    for g, pts in groups.items():
        size = max(1, min(CHUNK_POINTS, math.ceil(len(pts) / (4 * workers))))
        chunks += [(compiled[g], pts[i:i + size]) for i in range(0, len(pts), size)]
    with _progress(len(todo), opts, "sweep (cost only)") as bar:
        pending: dict[Any, list[dict[str, Any]]] = {}
        queue = list(reversed(chunks))
        while queue or pending:
            while queue and len(pending) <= workers:
                group_ref, pts = queue.pop()
                pending[cost_task.remote(group_ref, pts)] = pts
            ready, _ = ray.wait(list(pending), num_returns=1)
            pts = pending.pop(ready[0])
            try:
                rows = to_rows(ray.get(ready[0]))
            except Exception as exc:  # the task and its retries died
                rows = [{**base_row(p), "status": STATUS_CRASHED, "error": f"task crashed: {exc}".splitlines()[0]}
                        for p in pts]
            journal.extend(rows)
            bar.update(len(rows))
    return len(todo)


def _compile_task(point, settings, model_bytes, compile_group):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pimc-sweep-") as tmp:
        path = point["model"]
        if model_bytes is not None:
            path = str(Path(tmp) / Path(point["model"]).name)
            Path(path).write_bytes(model_bytes)
        return with_settings(compile_group, point, settings, path)
