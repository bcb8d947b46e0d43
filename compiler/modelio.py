"""Reading and writing ONNX files safely: clear errors, atomic writes, external data above 2 GB."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import EncodeError
from onnx import numpy_helper

from .errors import PimcError

TWO_GB = 2**31
_UMASK = os.umask(0)
os.umask(_UMASK)
EXTERNAL_THRESHOLD = TWO_GB - 64 * 2**20  # leave room for the graph itself


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file (with any external data beside it), or raise a one-line PimcError."""
    return read_model_bytes(path)[0]


MAX_MODEL_FILE_BYTES = TWO_GB  # one protobuf; larger weights live in external data files
MAX_TEXT_FILE_BYTES = 64 * 2**20  # pipelines, hardware configs


def read_input_file(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular input file of at most ``limit`` bytes, or a one-line PimcError.

    Symlinks are followed; a loop, a FIFO (which would block forever), a device such as /dev/zero
    (which never ends) or a directory is refused before anything is read."""
    p = Path(path)
    try:
        info = p.stat()
    except OSError as exc:
        raise PimcError(f"{p}: {_stat_problem(p, exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise PimcError(f"{p}: is a directory, expected {_article(what)}")
    if not stat.S_ISREG(info.st_mode):
        raise PimcError(f"{p}: not a regular file ({_file_kind(info.st_mode)}), expected {_article(what)}")
    if info.st_size > limit:
        raise PimcError(f"{p}: {info.st_size} bytes, larger than {_article(what)} can be ({limit} bytes)")
    try:
        with open(p, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise PimcError(f"{p}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise PimcError(f"{p}: larger than {_article(what)} can be ({limit} bytes)")
    return data


def _article(what: str) -> str:
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


def _stat_problem(p: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        if p.is_symlink():
            return f"no such file (dangling symlink to {os.readlink(p)})"
        return "no such file"
    if exc.errno == errno.EACCES:
        return "permission denied"
    return f"cannot read ({exc.strerror or exc})"


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a file")


def read_model_bytes(path: str | os.PathLike) -> tuple[onnx.ModelProto, bytes | None]:
    """Like ``read_model``, also returning the file's bytes when they are the whole model (no external
    data), so a checker can use them without serializing the model again."""
    p = Path(path)
    data = read_input_file(p, MAX_MODEL_FILE_BYTES, "ONNX file")
    if not data:
        raise PimcError(f"{p}: file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise PimcError(f"{p}: not a valid ONNX model ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise PimcError(f"{p}: not a valid ONNX model (no graph)")
    if not model.opset_import:
        raise PimcError(f"{p}: not a valid ONNX model (no opset_import)")
    if not any(True for _ in _external_tensors(model)):
        return model, data
    try:
        onnx.load_external_data_for_model(model, str(p.parent))
    except Exception as exc:
        raise PimcError(f"{p}: cannot read its external data ({_one_line(exc)})") from None
    return model, None


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def write_model(model: onnx.ModelProto, path: str | os.PathLike, data: bytes | None = None) -> Path:
    """Write atomically: a temporary file in the same folder, then rename.

    Models above ``EXTERNAL_THRESHOLD`` (just under the 2 GB protobuf limit) are saved with external
    data: every tensor above 1 KiB goes to ``<name>.data`` beside the file. ``data`` may give the
    model's serialized bytes when the caller already has them.
    """
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise PimcError(f"{p}: output folder {folder} does not exist")
    if p.is_dir():
        raise PimcError(f"{p}: output path is a directory")
    if not os.access(folder, os.W_OK):
        raise PimcError(f"{p}: output folder {folder} is not writable")
    chunks = [data] if data is not None else _serialized_chunks_or_none(model)
    large = chunks is None or sum(len(c) for c in chunks) > EXTERNAL_THRESHOLD
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise PimcError(f"{p}: cannot write ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        if large:
            data_name = p.name + ".data"
            tmp_data = folder / (Path(tmp).name + ".data")
            try:
                Path(tmp).write_bytes(_externalized(model, tmp_data, data_name).SerializeToString())
                os.chmod(tmp_data, 0o666 & ~_UMASK)
                os.replace(tmp_data, folder / data_name)
            finally:
                tmp_data.unlink(missing_ok=True)
        else:
            with open(tmp, "wb") as fh:
                fh.writelines(chunks)
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PimcError(f"{p}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


EXTERNAL_MIN_BYTES = 1024


def _externalized(model: onnx.ModelProto, data_path: Path, location: str) -> onnx.ModelProto:
    """A copy of ``model`` whose tensors above ``EXTERNAL_MIN_BYTES`` live in ``data_path`` (referred to as
    ``location``). Weights are streamed to the file one by one, never copied into a second proto."""
    clone = shell_without(model, skip="graph")
    graph = shell_without(model.graph, skip="initializer")
    clone.graph.CopyFrom(graph)
    offset = 0
    with open(data_path, "wb") as fh:
        for init in model.graph.initializer:
            payload = _tensor_bytes(init)
            if payload is None or len(payload) <= EXTERNAL_MIN_BYTES:
                clone.graph.initializer.append(init)
                continue
            pad = (-offset) % 4096
            fh.write(b"\0" * pad)
            offset += pad
            fh.write(payload)
            stub = clone.graph.initializer.add()
            stub.name, stub.data_type = init.name, init.data_type
            stub.dims.extend(init.dims)
            stub.doc_string = init.doc_string
            stub.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(payload)))):
                stub.external_data.add(key=key, value=value)
            offset += len(payload)
    return clone


def _tensor_bytes(init: onnx.TensorProto) -> bytes | None:
    """Little-endian payload of a tensor as ``raw_data`` would hold it; None for strings/external."""
    if init.data_location == onnx.TensorProto.EXTERNAL or init.data_type == onnx.TensorProto.STRING:
        return None
    if init.HasField("raw_data"):
        return init.raw_data
    return numpy_helper.from_array(numpy_helper.to_array(init)).raw_data


def shell_without(message, skip: str):
    """A copy of a protobuf message without one (large) field."""
    shell = type(message)()
    for fd, value in message.ListFields():
        if fd.name == skip:
            continue
        if fd.is_repeated:
            getattr(shell, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(shell, fd.name).CopyFrom(value)
        else:
            setattr(shell, fd.name, value)
    return shell


def structure_fingerprint(model: onnx.ModelProto) -> str:
    """A cheap digest of everything but the weights' values (graph, attributes, annotations, metadata,
    initializer names/types/shapes): guards reuse of an earlier serialization of the same model."""
    digest = hashlib.sha256()
    digest.update(shell_without(model, skip="graph").SerializeToString(deterministic=True))
    digest.update(shell_without(model.graph, skip="initializer").SerializeToString(deterministic=True))
    for init in model.graph.initializer:
        digest.update(f"{init.name}|{init.data_type}|{list(init.dims)}|{init.data_location};".encode())
    return digest.hexdigest()


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy (saving with external data mutates the proto it is given)."""
    clone = onnx.ModelProto()
    clone.CopyFrom(model)
    return clone


def serialize_model(model: onnx.ModelProto) -> bytes | None:
    """The serialized model, or None when it does not fit in one protobuf (2 GB)."""
    chunks = _serialized_chunks_or_none(model)
    return None if chunks is None else b"".join(chunks)


def _serialized_chunks_or_none(model: onnx.ModelProto) -> list[bytes] | None:
    try:
        chunks = _serialized_chunks(model)
    except (ValueError, EncodeError):  # upb raises EncodeError above 2 GB
        return None
    return None if sum(len(c) for c in chunks) >= TWO_GB else chunks


_GRAPH_TAG = b"\x3a"  # ModelProto.graph: field 7, length-delimited
_INITIALIZER_TAG = b"\x2a"  # GraphProto.initializer: field 5, length-delimited


def _serialized_chunks(model: onnx.ModelProto) -> list[bytes]:
    """The model's protobuf encoding in pieces: the model and graph without their weights, then one
    length-delimited record per initializer. Protobuf readers accept fields in any order, the result
    parses to an equal ModelProto, and it is about a third faster than one ``SerializeToString`` on
    large models (upb grows a single buffer)."""
    if not model.HasField("graph"):
        return [model.SerializeToString()]
    parts = [shell_without(model.graph, skip="initializer").SerializeToString()]
    for init in model.graph.initializer:
        body = init.SerializeToString()
        parts.append(_INITIALIZER_TAG + _varint(len(body)))
        parts.append(body)
    graph_len = sum(len(p) for p in parts)
    return [shell_without(model, skip="graph").SerializeToString(), _GRAPH_TAG + _varint(graph_len), *parts]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _external_tensors(model: onnx.ModelProto):
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            yield init


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise PimcError(f"{p}: output folder {folder} does not exist")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise PimcError(f"{p}: cannot write ({exc.strerror or exc})") from exc
    return p


def serialize_deterministic(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)
