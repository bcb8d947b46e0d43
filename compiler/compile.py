"""The compile driver: load → passes → write → lower → cost → report. Used by the CLI and by tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import PimcError
from .input_shapes import fix_input_shapes, static_shape_assumptions
from .loader import load_model
from .modelio import write_model, write_text_atomic
from .passbase import PassContext
from .pipeline import PassManager, build_pipeline
from .report import build_report, report_json
from .stats import model_stats
from .target import Target, get_target
from .verify import compare_outputs, run_model


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
    input_shapes: tuple[str, ...] = ()


def default_output_path(input_path: str, target: str) -> str:
    return f"{Path(input_path).stem}.{target}.onnx"


def calibration_feeds(model: onnx.ModelProto, spec: str | None, samples: int, seed: int):
    if not spec:
        return None
    from ..runtime.session import dataset_feeds

    return dataset_feeds(model, spec, samples, seed)


def compile_model(opts: CompileOptions) -> tuple[onnx.ModelProto, dict[str, Any]]:
    target = get_target(opts.target)
    hw = target.config(opts.hw)
    output = opts.output or (default_output_path(opts.input, opts.target) if opts.write_output else None)
    _check_output_path(output, opts.input)
    if opts.report:
        _check_output_path(opts.report, opts.input)
    passes = build_pipeline(target.default_pipeline(), opts.passes, opts.pipeline_file, list(opts.sets))
    model = fix_input_shapes(load_model(opts.input), opts.input_shapes)
    assumptions = static_shape_assumptions(model) if _simulates(target) else []
    before = model_stats(model)
    feeds = calibration_feeds(model, opts.data, opts.calibration_samples, opts.seed)
    ctx = PassContext(target=opts.target, calibration=feeds, seed=opts.seed, data_spec=opts.data)
    verify_feeds = _verify_feeds(model, feeds, opts.seed) if opts.verify else None
    original_outputs = run_model(model, verify_feeds) if verify_feeds else None
    manager = PassManager(passes, ctx, verify=opts.verify, verify_feeds=verify_feeds)
    model = manager.run(model, before)
    verify = None
    if original_outputs is not None:
        verify = compare_outputs(original_outputs, run_model(model, verify_feeds)).to_dict()
    after = manager.final_stats or model_stats(model)
    cost = target.cost(target.lower(model, hw), hw)
    if output:
        write_model(model, output, manager.output_bytes(model))
    report = build_report(
        opts.input, output, opts.target, manager.records, before, after, verify,
        cost.to_dict() if cost is not None else None, hw.to_dict() if hw is not None else None,
    )
    if assumptions:
        report["assumptions"] = assumptions
    if opts.report:
        write_text_atomic(report_json(report), opts.report)
    return model, report


def _simulates(target: Target) -> bool:
    """Targets with a cost model need static shapes; onnxruntime runs any shape."""
    return type(target).lower is not Target.lower


def _verify_feeds(model: onnx.ModelProto, feeds, seed: int) -> list[dict[str, np.ndarray]]:
    if feeds:
        return feeds[:4]
    from ..runtime.session import random_feeds

    return random_feeds(model, 2, seed)


def _check_output_path(path: str | None, input_path: str) -> None:
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise PimcError(f"{p}: output path is a directory")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise PimcError(f"{p}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PimcError(f"{p}: output folder {folder} is not writable")
    if p.exists() and Path(input_path).exists() and p.resolve() == Path(input_path).resolve():
        raise PimcError(f"{p}: refusing to overwrite the input model")
