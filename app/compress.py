"""``pimc.compress``: one library call per training-aware method, on a model the user has already trained.

``compress(model, train_loader, method=..., output="x.onnx", input_shape=(C, H, W), **options)`` runs the
method's training-aware compression on ``model`` (a torch module, changed in place, or an ONNX file,
converted by ``models/from_onnx.py``), writes the annotated ONNX atomically (an ONNX input keeps its input
and output names) and returns the compressed torch module. Options are the fields of the method's
dataclasses, whose defaults are the ``pimc export METHOD`` defaults:

* ``decompose`` — ``PenniConfig``;
* ``pattern`` — ``PatternConfig`` + ``AdmmSchedule`` + ``mode`` (admm | oneshot), ``seed``, ``progress``;
* ``prune`` — ``PruneConfig`` + ``PruneSchedule`` + ``seed``, ``progress``;
* ``quantize`` — ``QatConfig``;
* ``comparator`` — ``LBCConfig`` + ``LBCTraining``;
* ``feature-reg`` — ``FeatureRegConfig`` + ``seed``, ``progress`` (``val_fraction`` of the loader's images is
  held out to choose the default sparsity level; the returned module is the gated model).

Nothing here pre-trains: the model is taken as trained (the CLI pre-trains zoo and factory models).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..compiler.errors import PimcError
from ..passes import METHODS as DECLARED_METHODS

METHODS = tuple(DECLARED_METHODS)  # the one registry (``pimc.passes.METHODS``), shared with ``pimc export``
_COMMON = ("seed", "progress")


def _configs(method: str) -> tuple[type, ...]:
    """The dataclasses whose fields are ``method``'s options."""
    if method == "decompose":
        from ..passes.decompose.config import PenniConfig

        return (PenniConfig,)
    if method == "pattern":
        from ..passes.pattern.config import AdmmSchedule, PatternConfig

        return (PatternConfig, AdmmSchedule)
    if method == "prune":
        from ..passes.prune.config import PruneConfig, PruneSchedule

        return (PruneConfig, PruneSchedule)
    if method == "quantize":
        from ..passes.quantize.config import QatConfig

        return (QatConfig,)
    if method == "feature-reg":
        from ..passes.feature_reg.config import FeatureRegConfig

        return (FeatureRegConfig,)
    from ..passes.comparator.config import LBCConfig, LBCTraining

    return (LBCConfig, LBCTraining)


def option_names(method: str) -> list[str]:
    """Every option ``compress(method=...)`` accepts."""
    names = [f.name for config in _configs(method) for f in fields(config)]
    extra = ["mode", *_COMMON] if method == "pattern" else list(_COMMON) if method in ("prune", "feature-reg") else []
    return sorted(set(names) | set(extra))


def _split(configs: tuple[type, ...], options: dict[str, Any]) -> list[Any]:
    """One instance per dataclass, each taking the options named like its fields (tuples for lists)."""
    built = []
    for config in configs:
        names = {f.name for f in fields(config)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k in names}
        built.append(config(**values))
    return built


def compress(model: Any, train_loader: Any, method: str, output: str | os.PathLike,
             input_shape: tuple[int, int, int] | None = None, **options: Any) -> Any:
    """Compress a trained ``model`` with ``method`` on ``train_loader`` (yields (images, labels)), write
    ``output`` (ONNX) and return the compressed torch module. See the module docstring for the options."""
    if method not in METHODS:
        raise PimcError(f"unknown method {method!r} (use {', '.join(METHODS)})")
    unknown = sorted(set(options) - set(option_names(method)))
    if unknown:
        raise PimcError(f"compress(method={method!r}): unknown option {', '.join(unknown)} "
                        f"(valid: {', '.join(option_names(method))})")
    from ..models.from_onnx import finish_output
    from ..models.train import dense_reference

    module, shape, source = _load(model, input_shape)
    reference = dense_reference(module, shape, source)  # the storage ratio stays against the model given here
    out = Path(output)
    compressed = _RUNNERS[method](module, train_loader, shape, out, options)
    finish_output(out, source, reference)
    return compressed


def _load(model: Any, input_shape: tuple[int, int, int] | None) -> tuple[Any, tuple[int, int, int], Any]:
    """(torch module, (C, H, W), source ONNX or None)."""
    if isinstance(model, (str, os.PathLike)):
        from ..models.from_onnx import load_onnx_module

        if not Path(model).is_file():
            raise PimcError(f"compress: no such ONNX file {model}")
        return load_onnx_module(model)
    from torch import nn

    if not isinstance(model, nn.Module):
        raise PimcError(f"compress: model must be a torch.nn.Module or an ONNX path, got {type(model).__name__}")
    shape = tuple(input_shape or getattr(model, "input_shape", ()))
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise PimcError(f"compress: give input_shape=(C, H, W) for a torch module (got {shape or None})")
    return model, shape, None  # type: ignore[return-value]


def calibration_inputs(loader: Any, count: int) -> list[dict[str, Any]]:
    """The first ``count`` images of ``loader``, one feed each (activation-range calibration)."""
    feeds: list[dict[str, Any]] = []
    for batch in loader:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        for i in range(len(images)):
            if len(feeds) == count:
                return feeds
            feeds.append({"input": images[i : i + 1].detach().cpu().numpy()})
    return feeds


def _decompose(model, loader, shape, out: Path, options: dict) -> Any:
    from ..passes.decompose.exporter import export_penni, penni_compress

    (config,) = _split(_configs("decompose"), options)
    penni_compress(model, loader, config)
    export_penni(model, out, shape)
    return model


def _pattern(model, loader, shape, out: Path, options: dict) -> Any:
    from ..passes.pattern.admm import admm_prune, export_pattern_onnx, oneshot_prune
    from ..passes.pattern.config import MODES

    config, schedule = _split(_configs("pattern"), options)
    mode, seed, progress = options.get("mode", MODES[0]), options.get("seed", 0), options.get("progress", True)
    if mode not in MODES:
        raise PimcError(f"compress(method='pattern'): mode must be one of {', '.join(MODES)}, got {mode!r}")
    config.check()
    schedule.check()
    if mode == "admm":
        result = admm_prune(model, loader, config, schedule, seed=seed, progress=progress)
    else:
        result = oneshot_prune(model, loader, config, schedule.retrain_epochs, schedule.lr, seed=seed, progress=progress)
    export_pattern_onnx(model, result, out, shape)
    return model


def _prune(model, loader, shape, out: Path, options: dict) -> Any:
    from ..passes.prune.exporter import admm_prune, export_pruned_onnx
    from ..passes.quantize.qat import fold_batchnorm

    config, schedule = _split(_configs("prune"), options)
    if schedule.quantize_bits:
        model = fold_batchnorm(model)
    result = admm_prune(model, loader, config, schedule, seed=options.get("seed", 0),
                        progress=options.get("progress", True))
    calibration = calibration_inputs(loader, 256) if schedule.quantize_bits else None
    export_pruned_onnx(model, result, out, shape, calibration, schedule.act_bits, schedule.quantize_bits)
    return model


def _quantize(model, loader, shape, out: Path, options: dict) -> Any:
    from ..passes.quantize.qat import quantize_trained, write_quantized_onnx

    (config,) = _split(_configs("quantize"), options)
    config.check()
    net, state, _ = quantize_trained(model, loader, config)
    write_quantized_onnx(net, state, out, shape, calibration_inputs(loader, config.calibration_samples))
    return net


def _comparator(model, loader, shape, out: Path, options: dict) -> Any:
    from ..models.train import train_classifier
    from ..passes.comparator.exporter import export_lbc_onnx, freeze_all_but_pointwise, replace_convs

    substitution, training = _split(_configs("comparator"), options)
    training.check()
    replaced = replace_convs(model, substitution.anchors, substitution.density, substitution.variant == "separable",
                             substitution.comparator, training.seed, substitution.min_kernel,
                             max_anchors=substitution.max_anchors)
    if not replaced:
        raise PimcError("compress(method='comparator'): the model has no ungrouped square k×k conv to replace")
    if training.train == "pointwise":
        freeze_all_but_pointwise(model)
    train_classifier(model, loader, training.epochs, lr=training.lr, seed=training.seed, progress=training.progress,
                     desc="train lbc")
    export_lbc_onnx(model, out, shape)
    return model


def _loader_arrays(loader: Any) -> tuple[Any, Any]:
    """Every (image, label) of ``loader`` as two numpy arrays."""
    import numpy as np

    xs, ys = [], []
    for images, labels in loader:
        xs.append(images.detach().cpu().numpy())
        ys.append(labels.detach().cpu().numpy())
    if not xs:
        raise PimcError("compress(method='feature-reg'): the train loader yields no batches")
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def _feature_reg(model, loader, shape, out: Path, options: dict) -> Any:
    from ..models.train import make_loader
    from ..passes.feature_reg.exporter import export_feature_reg_onnx, feature_regularize, split_validation

    (config,) = _split(_configs("feature-reg"), options)
    config.check()
    seed, progress = options.get("seed", 0), options.get("progress", True)
    x, y = _loader_arrays(loader)
    if len(x) < 2:
        raise PimcError("compress(method='feature-reg'): needs at least 2 training images (one is held out)")
    fit, held = split_validation(len(x), config.val_fraction, seed)
    batches = make_loader(x[fit], y[fit], getattr(loader, "batch_size", None) or 64, True, seed)
    result = feature_regularize(model, batches, x[fit][: config.calibration], (x[held], y[held]), shape, config,
                                seed, progress)
    export_feature_reg_onnx(result, out, shape)
    return result.gated


_RUNNERS: dict[str, Callable[..., Any]] = {
    "decompose": _decompose, "pattern": _pattern, "prune": _prune, "quantize": _quantize,
    "comparator": _comparator, "feature-reg": _feature_reg,
}
