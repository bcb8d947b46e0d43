"""Reading and writing ONNX files safely: clear errors, atomic writes, external data above 2 GB."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from .errors import PimcError

TWO_GB = 2**31
_UMASK = os.umask(0)
os.umask(_UMASK)
EXTERNAL_THRESHOLD = TWO_GB - 64 * 2**20  # leave room for the graph itself


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file (with any external data beside it), or raise a one-line PimcError."""
    p = Path(path)
    if not p.exists():
        raise PimcError(f"{p}: no such file")
    if p.is_dir():
        raise PimcError(f"{p}: is a directory, expected an .onnx file")
    if p.stat().st_size == 0:
        raise PimcError(f"{p}: file is empty")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise PimcError(f"{p}: not a valid ONNX model ({type(exc).__name__})") from exc
    if not model.graph.node and not model.graph.output:
        raise PimcError(f"{p}: not a valid ONNX model (no graph)")
    if not model.opset_import:
        raise PimcError(f"{p}: not a valid ONNX model (no opset_import)")
    try:
        onnx.load_external_data_for_model(model, str(p.parent))
    except Exception as exc:
        raise PimcError(f"{p}: cannot read its external data ({exc})") from exc
    return model


def write_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write atomically: a temporary file in the same folder, then rename.

    Models whose tensors exceed 2 GB are saved with external data (``<name>.data`` beside the file).
    """
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise PimcError(f"{p}: output folder {folder} does not exist")
    if p.is_dir():
        raise PimcError(f"{p}: output path is a directory")
    if not os.access(folder, os.W_OK):
        raise PimcError(f"{p}: output folder {folder} is not writable")
    large = model.ByteSize() > EXTERNAL_THRESHOLD if _fits_bytesize(model) else True
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        if large:
            data_name = p.name + ".data"
            tmp_data = folder / (Path(tmp).name + ".data")
            onnx.save_model(
                copy_model(model), tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                location=tmp_data.name, size_threshold=1024,
            )
            # The model refers to the data file by name; rewrite it to the final name before renaming.
            saved = onnx.load(tmp, load_external_data=False)
            for tensor in _external_tensors(saved):
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = data_name
            onnx.save_model(saved, tmp)
            os.replace(tmp_data, folder / data_name)
        else:
            onnx.save_model(model, tmp)
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PimcError(f"{p}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy (saving with external data mutates the proto it is given)."""
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def _fits_bytesize(model: onnx.ModelProto) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:
        return False


def _external_tensors(model: onnx.ModelProto):
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            yield init


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise PimcError(f"{p}: output folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except OSError as exc:
        raise PimcError(f"{p}: cannot write ({exc.strerror or exc})") from exc
    return p


def serialize_deterministic(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)
