"""The compile driver: load → passes → write → lower → cost → report. Used by the CLI and by tests.

With ``--data`` the data is split once (``runtime.datasets.data_splits``): calibration samples feed the
passes, labelled validation samples drive the accuracy budget (``compiler.budget``), and the held-out test
samples, which neither calibrated nor chose anything, measure the input and the output model on
onnxruntime. A drop beyond ``--max-accuracy-drop`` is an error and no output is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..compiler.baselines import cost_baselines, merge_baselines, parse_baseline_models
from ..compiler.budget import DEFAULT_CONFIDENCE, AccuracyBudget, z_for
from ..compiler.errors import PimcError
from ..compiler.input_shapes import fix_input_shapes, static_shape_assumptions
from ..compiler.loader import infer_shapes, load_model
from ..compiler.modelio import copy_model, write_model, write_text_atomic
from ..compiler.passbase import PassContext
from ..compiler.pipeline import PassManager, build_pipeline
from ..compiler.stats import model_stats
from ..compiler.target import Target, get_target
from ..compiler.verify import compare_outputs, run_model
from .progress import Progress, Timings
from .report import build_report, report_json
from .report_warnings import compile_warnings


@dataclass
class CompileOptions:
    input: str
    target: str
    output: str | None = None
    report: str | None = None
    verify: bool = False
    data: str | None = None
    passes: str | None = None
    pipeline_file: str | None = None
    sets: tuple[str, ...] = ()
    hw: str | None = None
    seed: int = 0
    calibration_samples: int = 256
    write_output: bool = True
    eval_data: str | None = None
    max_accuracy_drop: float | None = None  # in the metric's unit; None: the metric's default budget
    confidence: float = DEFAULT_CONFIDENCE  # that the test-split drop stays within the budget (compiler.budget)
    baseline_models: tuple[str, ...] = ()
    input_shapes: tuple[str, ...] = ()
    measure_latency: bool | None = None  # onnxruntime target: None times the models only when a pass
    # changed more than the exact normalisations (see :func:`latency_wanted`)
    val_data: str | None = None  # labelled images that steer the budget (default: part of the held-out set)
    progress: bool = False  # show the pass / layer / evaluations on stderr while compiling (a terminal)
    enforce_budget: bool = True  # False (sweeps): a drop over the budget is recorded, not an error


def default_output_path(input_path: str, target: str) -> str:
    return f"{Path(input_path).stem}.{target}.onnx"


@dataclass
class CompileData:
    """What ``--data`` / ``--eval-data`` give one compile."""

    calibration: list[dict[str, np.ndarray]] | None = None
    budget: AccuracyBudget | None = None
    test: Any = None  # runtime.datasets.Dataset with labels, or None
    description: str | None = None


def prepare_data(model: onnx.ModelProto, opts: CompileOptions) -> CompileData:
    if not opts.data:
        if opts.eval_data or opts.val_data:
            raise PimcError("--eval-data and --val-data need --data for calibration")
        return CompileData()
    from ..compiler.sessions import real_inputs
    from ..runtime.datasets import data_splits
    from ..runtime.session import feeds, model_input

    if len(real_inputs(model)) > 1:
        raise PimcError("--data needs a model with a single image input")
    _, shape, _ = model_input(model)
    splits = data_splits(opts.data, shape, seed=opts.seed, eval_spec=opts.eval_data,
                         calibration_samples=opts.calibration_samples, val_spec=opts.val_data)
    budget = None
    test = splits.test if splits.test is not None and splits.test.y is not None else None
    steering = splits.steering
    if steering is not None and steering.y is not None and len(steering):
        max_drop = steering.metric.default_budget if opts.max_accuracy_drop is None else opts.max_accuracy_drop
        budget = AccuracyBudget(steering.x, steering.y, max_drop, z=z_for(opts.confidence),
                                test_samples=len(test) if test is not None else 0,
                                integer_kernels=_runs_on_onnxruntime(opts), source=splits.steering_source,
                                metric=steering.metric)
    return CompileData(feeds(model, splits.calibration), budget, test, splits.description)


def measure_accuracy(input_model: onnx.ModelProto, output_model: onnx.ModelProto, data: CompileData,
                     max_drop: float | None, integer_kernels: bool = True) -> dict[str, Any]:
    """The metric of the input and the output model on the same held-out samples (top-1 as fractions, drop in
    points; PSNR in dB, drop in dB); ``integer_kernels=False`` (simulator targets) measures the exact
    quantized arithmetic."""
    if data.test is None:
        return {"measured": False, "note": "accuracy not measured: no labelled evaluation data "
                                           "(give --data digits|mnist|cifar10:DIR|npz:PATH with labels)"}
    from ..runtime.session import model_quality

    batched = data.budget is not None and data.budget.batched
    first = model_quality(input_model, data.test, integer_kernels=integer_kernels, batched=batched)
    second = model_quality(output_model, data.test, integer_kernels=integer_kernels, batched=batched)
    before, after = first.pop("value"), second.pop("value")
    beside = {f"{k}_input": v for k, v in first.items()} | {f"{k}_output": v for k, v in second.items()}
    metric = data.test.metric
    budget = metric.default_budget if max_drop is None else max_drop
    return {"measured": True, "metric": metric.name, "unit": metric.unit, "input": before, "output": after, **beside,
            "drop_points": round(metric.scale * (before - after), 4),
            "samples": len(data.test), "data": data.description, "max_drop_points": budget,
            "arithmetic": "onnxruntime's own kernels" if integer_kernels
            else "exact quantized arithmetic (no onnxruntime int8 kernels)",
            "calibration_samples": len(data.calibration or []),
            **({"steering": data.budget.summary(), "search": data.budget.log} if data.budget else {})}


LATENCY_BATCHES = (1, 64)
LATENCY_TIME_BUDGET_S = 2.0  # timing both models at every batch, like timeit's auto-range
LATENCY_MAX_INPUT_BYTES = 256 << 20  # larger inputs are not timed (the model is still written)
NORMALISING_PASSES = frozenset({"fold-constants", "eliminate-identity", "fold-batchnorm", "cleanup", "fuse-relu"})


def latency_wanted(opts: CompileOptions, records) -> tuple[bool, str]:
    """Whether the onnxruntime target times the models, and why not. By default only when a pass other than
    the exact normalisations (which onnxruntime's own graph optimizer also does) changed the model."""
    if opts.measure_latency is not None:
        return opts.measure_latency, "latency not measured (--no-latency); `pimc bench` measures it"
    changed = [r.name for r in records if r.changed and r.name not in NORMALISING_PASSES]
    if changed:
        return True, ""
    return False, ("latency not measured: only exact normalisations changed the graph, which onnxruntime "
                   "does itself (give --latency to time it, or `pimc bench` for a thorough measurement)")


def measure_latency(input_model: onnx.ModelProto, output_model: onnx.ModelProto,
                    feeds: list[dict[str, np.ndarray]] | None, seed: int) -> dict[str, Any]:
    """The onnxruntime target's cost: input and output model timed interleaved on this machine
    (:func:`pimc.runtime.bench.compare_latency`) within :data:`LATENCY_TIME_BUDGET_S`, so a slower output is
    reported, not hidden."""
    from ..compiler.sessions import random_feeds, real_inputs
    from ..runtime.bench import compare_latency

    if len(real_inputs(input_model)) != 1 or len(real_inputs(output_model)) != 1:
        return {"measured": False, "note": "latency not measured: the model has more than one input"}
    value = real_inputs(input_model)[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    row_bytes = int(np.prod([d or 1 for d in dims[1:]])) * 4
    batches = [b for b in LATENCY_BATCHES if (dims[0] if dims and dims[0] else b) * row_bytes <= LATENCY_MAX_INPUT_BYTES]
    if not batches:
        return {"measured": False, "note": f"latency not measured: one input batch exceeds "
                                           f"{LATENCY_MAX_INPUT_BYTES >> 20} MiB"}
    x = next(iter((feeds or random_feeds(input_model, 1, seed))[0].values()))
    try:
        return compare_latency(input_model, output_model, x, batches, time_budget_s=LATENCY_TIME_BUDGET_S)
    except PimcError as exc:  # e.g. a custom-domain op onnxruntime has no kernel for
        return {"measured": False, "note": f"latency not measured: {exc}"}


def target_cost_fn(target, hw) -> Callable[[onnx.ModelProto], tuple[float, float]] | None:
    """The target's (latency_s, energy_j) of a whole model, for passes that compare candidates."""
    if hw is None:
        return None

    def cost(model: onnx.ModelProto) -> tuple[float, float]:
        report = target.cost(target.lower(infer_shapes(model, "candidate model"), hw), hw)
        return report.latency_s, report.energy_j

    return cost


def compile_model(opts: CompileOptions) -> tuple[onnx.ModelProto, dict[str, Any]]:
    clock = Timings()
    target = get_target(opts.target)
    hw = target.config(opts.hw)
    output = opts.output or (default_output_path(opts.input, opts.target) if opts.write_output else None)
    _check_output_path(output, opts.input)
    if opts.report:
        _check_output_path(opts.report, opts.input, output)
    passes = build_pipeline(target.default_pipeline(), opts.passes, opts.pipeline_file, list(opts.sets))
    overrides = parse_baseline_models(opts.baseline_models, target)
    with clock("load"):
        model = fix_input_shapes(load_model(opts.input), opts.input_shapes)
        assumptions = static_shape_assumptions(model) if _simulates(target) else []
        # the model as brought, for accuracy and latency (passes may change ``model`` in place)
        input_model = copy_model(model) if opts.data or _runs_on_onnxruntime(opts) else model
        before = model_stats(model)
    progress = Progress(opts.progress)
    with clock("data"):
        data = prepare_data(model, opts)
        if data.budget is not None:
            progress.evaluations = lambda: data.budget.evaluations
            progress("measuring the input model on the steering images")
            data.budget.set_reference(input_model)
    feeds = data.calibration
    with clock("baselines"):
        baselines = cost_baselines(target, model, hw, overrides, opts.seed, feeds)  # before any pass touches it
    ctx = PassContext(target=opts.target, calibration=feeds, seed=opts.seed, data_spec=opts.data, hw=hw,
                      budget=data.budget, cost_fn=target_cost_fn(target, hw), progress=progress)
    verify_feeds = _verify_feeds(model, feeds, opts.seed) if opts.verify else None
    original_outputs = run_model(model, verify_feeds) if verify_feeds else None
    manager = PassManager(passes, ctx, verify=opts.verify, verify_feeds=verify_feeds)
    try:
        with clock("passes"):
            model = manager.run(model, before)
    finally:
        progress.close()  # an error line must not land on the progress line
    with clock("accuracy"):
        accuracy = measure_accuracy(input_model, model, data, opts.max_accuracy_drop, _runs_on_onnxruntime(opts))
    fallback = None
    if opts.enforce_budget and _over_budget(accuracy) and _searched_default(opts):
        with clock("search_fallback"):
            fallback = {"searched_drop_points": accuracy["drop_points"], "searched_output": accuracy["output"]}
            exact = build_pipeline(target.default_pipeline(), None, None, [])
            idle = "left out: the searched model missed the budget on the held-out test samples"
            manager = PassManager(exact, replace(ctx, budget=None, idle_note=idle), verify=opts.verify,
                                  verify_feeds=verify_feeds)
            model = manager.run(copy_model(input_model), before)
            accuracy = {**measure_accuracy(input_model, model, data, opts.max_accuracy_drop,
                                           _runs_on_onnxruntime(opts)), "search_fallback": fallback}
    verify = None
    if original_outputs is not None:
        comparison = compare_outputs(original_outputs, run_model(model, verify_feeds))
        if comparison.failure():
            raise PimcError(f"--verify: the compiled model is wrong: {comparison.failure()}")
        verify = comparison.to_dict()
    if opts.enforce_budget:
        _check_budget(accuracy)
    elif accuracy.get("measured"):
        accuracy["within_budget"] = accuracy["drop_points"] <= accuracy["max_drop_points"] + 1e-9
    after = manager.final_stats or model_stats(model)
    with clock("lower_cost"):
        cost = merge_baselines(target.cost(target.lower(model, hw), hw), baselines, before.macs)
    if output:
        with clock("write"):
            write_model(model, output, manager.output_bytes(model))
    report = build_report(
        opts.input, output, opts.target, manager.records, before, after, verify,
        cost.to_dict() if cost is not None else None, hw.to_dict() if hw is not None else None,
    )
    report["accuracy"] = accuracy
    if _runs_on_onnxruntime(opts):
        wanted, note = latency_wanted(opts, manager.records)
        with clock("latency"):
            report["latency"] = measure_latency(input_model, model, feeds, opts.seed) if wanted else {
                "measured": False, "note": note}
    report["warnings"] += compile_warnings(report)
    if fallback is not None:
        report["warnings"].append(
            f"the searched model lost {fallback['searched_drop_points']:.2f} points on the held-out test samples, "
            f"over the budget of {accuracy['max_drop_points']:g} that the steering samples had met: the model "
            "written is the default pipeline's with nothing chosen by the budget search")
    if assumptions:
        report["assumptions"] = assumptions
    report["timings"] = clock.summary(manager.records, data.budget)
    if opts.report:
        write_text_atomic(report_json(report), opts.report)
    return model, report


def _runs_on_onnxruntime(opts: CompileOptions) -> bool:
    """The output is deployed on onnxruntime (its int8 kernels count); simulator targets compute exactly."""
    return opts.target == "onnxruntime"


def _over_budget(accuracy: dict[str, Any]) -> bool:
    return bool(accuracy.get("measured")) and accuracy["drop_points"] > accuracy["max_drop_points"] + 1e-9


def _searched_default(opts: CompileOptions) -> bool:
    """The target's default pipeline with nothing forced: every lossy choice was the budget search's, so a
    held-out miss is answered by the exact pipeline rather than by a refusal."""
    return not (opts.passes or opts.pipeline_file or opts.sets)


def _check_budget(accuracy: dict[str, Any]) -> None:
    if _over_budget(accuracy):
        psnr = accuracy.get("metric") == "psnr"
        before, after = ((f"{accuracy['input']:.2f} dB", f"{accuracy['output']:.2f} dB") if psnr else
                         (f"{100 * accuracy['input']:.2f} %", f"{100 * accuracy['output']:.2f} %"))
        raise PimcError(
            f"accuracy budget exceeded: {accuracy['drop_points']:.2f} {accuracy.get('unit', 'points')} lost "
            f"({before} -> {after} on {accuracy['samples']} held-out samples) > --max-accuracy-drop "
            f"{accuracy['max_drop_points']:g}; no output written"
        )


def _simulates(target: Target) -> bool:
    """Targets with a cost model need static shapes; onnxruntime runs any shape."""
    return type(target).lower is not Target.lower


def _verify_feeds(model: onnx.ModelProto, feeds, seed: int) -> list[dict[str, np.ndarray]]:
    if feeds:
        return feeds[:4]
    from ..compiler.sessions import random_feeds

    return random_feeds(model, 2, seed)


def _check_output_path(path: str | None, input_path: str, model_output: str | None = None) -> None:
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise PimcError(f"{p}: output path is a directory")
    if p.exists() and not p.is_file():
        raise PimcError(f"{p}: output path exists and is not a regular file")
    if model_output is not None and p.resolve() == Path(model_output).resolve():
        raise PimcError(f"{p}: the report and the output model would be the same file")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise PimcError(f"{p}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PimcError(f"{p}: output folder {folder} is not writable")
    if p.exists() and Path(input_path).exists() and p.resolve() == Path(input_path).resolve():
        raise PimcError(f"{p}: refusing to overwrite the input model")
