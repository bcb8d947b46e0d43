"""``pimc.compress``: one library call per training-aware method, on a model the user has already trained.

``compress(model, train_loader, method=..., output="x.onnx", input_shape=(C, H, W), **options)`` runs the
method's training-aware compression on ``model`` (a torch module, changed in place, or an ONNX file,
converted by ``models/from_onnx.py``), writes the annotated ONNX atomically (an ONNX input keeps its input
and output names) and returns the compressed torch module. Options are the fields of the dataclasses the
method declares (``compiler/method.py``; each algorithm's ``config.py``), whose defaults are the
``pimc export METHOD`` defaults, plus ``seed`` and ``progress``:

* ``decompose`` — ``PenniConfig``;
* ``pattern`` — ``PatternConfig`` + ``AdmmSchedule`` (``mode``: admm | oneshot);
* ``prune`` — ``PruneConfig`` + ``PruneSchedule``;
* ``quantize`` — ``QatConfig``;
* ``comparator`` — ``LBCConfig`` + ``LBCTraining``;
* ``feature-reg`` — ``FeatureRegConfig`` (``val_fraction`` of the loader's images is held out to choose the
  default sparsity level; the returned module is the gated model).

Nothing here pre-trains: the model is taken as trained (the CLI pre-trains zoo and factory models).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..compiler.errors import PimcError
from ..compiler.method import get_method
from ..passes import METHODS as DECLARED_METHODS

METHODS = tuple(DECLARED_METHODS)  # the one registry (``pimc.passes.METHODS``), shared with ``pimc export``


def option_names(method: str) -> list[str]:
    """Every option ``compress(method=...)`` accepts."""
    return get_method(method).option_names()


def compress(model: Any, train_loader: Any, method: str, output: str | os.PathLike,
             input_shape: tuple[int, int, int] | None = None, **options: Any) -> Any:
    """Compress a trained ``model`` with ``method`` on ``train_loader`` (yields (images, labels)), write
    ``output`` (ONNX) and return the compressed torch module. See the module docstring for the options."""
    declared = get_method(method)
    configs = declared.build(options)
    from ..models.from_onnx import finish_output
    from ..models.train import dense_reference

    module, shape, source = _load(model, input_shape)
    reference = dense_reference(module, shape, source)  # the storage ratio stays against the model given here
    out = Path(output)
    compressed = declared.runner()(module, train_loader, shape, out, *configs, seed=options.get("seed", 0),
                                   progress=options.get("progress", True))
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
