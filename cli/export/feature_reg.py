"""``pimc export feature-reg``: train a model, fine-tune it with threshold gates and the channel-L1 penalty on
every conv input after the first, and export one ONNX file serving several sparsity levels."""

from __future__ import annotations

import time

import click
import numpy as np

from ...compiler.errors import PimcError
from ...compiler.tables import Table, console
from ...passes.feature_reg.config import LEVEL_INPUT, FeatureRegConfig
from .common import FILE, emit, model_options, pretraining_options, shared_options
from .options import build, config_options


@click.command("feature-reg")
@model_options()
@click.option("-o", "--output", type=FILE, required=True, help="Gated .onnx file (all levels).")
@config_options(FeatureRegConfig)
@pretraining_options(epochs=15)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch intra-op threads.")
@shared_options
def command(**kw) -> None:
    """Feature Regularization: input-dependent channel sparsity of conv inputs, several levels in one model."""
    emit(run_export(**kw), kw["as_json"], _print_summary)


def run_export(**kw) -> dict:
    import torch

    from ...models.train import export_onnx, make_loader, training_data
    from ...models.zoo import build_model, get_spec, model_input_shape
    from ...passes.feature_reg.exporter import export_feature_reg_onnx, feature_regularize, split_validation
    from ...passes.feature_reg.measure import image_convs
    from ...runtime.session import evaluate
    from .common import pretrain, user_model

    config = build(FeatureRegConfig, kw)
    torch.set_num_threads(kw["threads"])
    seed, progress = kw["seed"], not kw["no_progress"]
    model, shape, source = user_model(kw, build_model, get_spec, model_input_shape)
    sets = training_data(kw["data"], shape, kw["batch_size"], seed, limit=kw["train_limit"])
    if len(sets.train.x) < 2:
        raise PimcError("feature-reg needs at least 2 training images (one is held out for validation)")
    fit, held = split_validation(len(sets.train.x), config.val_fraction, seed)
    x, y = sets.train.x, sets.train.y
    loader = make_loader(x[fit], y[fit], kw["batch_size"], True, seed)
    if model is None:
        torch.manual_seed(seed)
        if sets.image_targets:
            model = build_model(kw["model_name"], in_channels=kw["in_channels"], scale=sets.scale)
        else:
            model = build_model(kw["model_name"], max(10, sets.num_classes), kw["in_channels"])
    started = time.perf_counter()
    if source is None:
        pretrain(model, loader, kw, kw["epochs"], kw["lr"], f"train {kw['model_name']}")
    pretrain_s = time.perf_counter() - started
    if kw["dense_output"]:
        export_onnx(model, kw["dense_output"], shape)
    started = time.perf_counter()
    calib = x[fit][: config.calibration]
    if sets.image_targets:  # thresholds at the tile size the model is measured at, not the training patches'
        from ...runtime.datasets import load_dataset

        calib = load_dataset(kw["data"], (shape[0], None, None), "train").x[: config.calibration]
    result = feature_regularize(model, loader, calib, (x[held], y[held]), shape, config, seed, progress)
    finetune_s = time.perf_counter() - started
    export_feature_reg_onnx(result, kw["output"], shape)
    if source is not None:
        from ...models.from_onnx import rename_io

        for path in (kw["output"], kw["dense_output"]):
            if path:
                rename_io(path, source)
    summary = {
        "model": kw["model_name"], "input_shape": list(shape), "output": str(kw["output"]),
        "metric": sets.test.metric.name,
        "config": {**config.__dict__, "levels": list(config.levels)},
        "train_samples": int(len(fit)), "pretrain_seconds": round(pretrain_s, 1),
        "finetune_seconds": round(finetune_s, 1), **result.summary(),
    }
    summary["ungated_convs_onnx"] = image_convs(kw["output"])
    summary["test"] = measure_levels(kw["output"], sets.test, len(config.levels), evaluate)
    default = summary["test"][result.default_level]
    summary["accuracy_gated"] = default["accuracy"]
    summary["zero_fraction_default"] = default["zero_fraction"]
    if kw["dense_output"]:
        summary["dense_output"] = str(kw["dense_output"])
        summary["accuracy_dense"] = evaluate(kw["dense_output"], sets.test, repeats=1)["accuracy"]
        summary["zero_fraction_dense"] = _zero_fractions(kw["dense_output"], sets.test.x, None)
    return summary


def measure_levels(path, test, count: int, evaluate) -> list[dict]:
    """Per level, on onnxruntime and the test split: the metric (top-1, or PSNR in dB for image targets) and
    the zero fraction of every Conv input."""
    return [{"level": level, "accuracy": test.metric.value(_predict(path, test.x, level), test.y),
             "zero_fraction": _zero_fractions(path, test.x, level)} for level in range(count)]


def _predict(path, x: np.ndarray, level: int) -> np.ndarray:
    from ...compiler.modelio import read_model
    from ...compiler.sessions import open_session, session_options

    options = session_options()
    options.intra_op_num_threads = 1
    session = open_session(read_model(path), options)
    data = session.get_inputs()[0].name
    out = [session.run(None, {data: x[i:i + 128].astype(np.float32), LEVEL_INPUT: np.array(level, np.int64)})[0]
           for i in range(0, len(x), 128)]
    return np.concatenate(out)


def _zero_fractions(path, x: np.ndarray, level: int | None) -> dict[str, float]:
    from ...passes.feature_reg.measure import conv_input_zero_fractions

    return {k: round(v, 4) for k, v in conv_input_zero_fractions(path, x, level).items()}


def _print_summary(s: dict) -> None:
    table = Table(title=f"feature-regularized {s['model']} → {s['output']} (default level {s['default_level']})")
    psnr = s.get("metric") == "psnr"
    show = (lambda v: f"{v:.2f} dB") if psnr else (lambda v: f"{v:.2%}")
    what = "PSNR" if psnr else "acc"
    table.add_column("level")
    table.add_column("target", justify="right")
    table.add_column(f"val {what}", justify="right")
    table.add_column(f"test {what} (onnxruntime)", justify="right")
    table.add_column("conv-input zeros mean / min (after the first)", justify="right")
    skip = set(s["ungated_convs_onnx"]) if "ungated_convs_onnx" in s else set()
    if "accuracy_dense" in s:
        mean, low = _mean_min(s["zero_fraction_dense"], skip)
        table.add_row("dense", "–", show(s["val_accuracy_dense"]), show(s["accuracy_dense"]),
                      f"{mean:.1%} / {low:.1%}")
    for row in s["test"]:
        k = row["level"]
        mean, low = _mean_min(row["zero_fraction"], skip)
        mark = " (default)" if k == s["default_level"] else ""
        table.add_row(f"{k}{mark}", f"{s['levels'][k]:.0%}", show(s["val_accuracy"][k]),
                      show(row["accuracy"]), f"{mean:.1%} / {low:.1%}")
    console().print(table)
    if s.get("gate_placement") == "stream":
        console().print(f"gates: {s['stream_gates']} stream (on the map's producer), {s['fallback_gates']} "
                        "conv-input fallbacks (the map has no producing module)")
    layers = Table(title="zero fraction of each Conv input, default level, test split")
    layers.add_column("conv")
    layers.add_column("zeros", justify="right")
    for name, frac in s["zero_fraction_default"].items():
        layers.add_row(name, f"{frac:.1%}")
    console().print(layers)


def _mean_min(fractions: dict[str, float], skip: set[str]) -> tuple[float, float]:
    values = [v for k, v in fractions.items() if k not in skip] or [0.0]
    return float(np.mean(values)), float(np.min(values))
