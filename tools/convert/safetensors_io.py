"""Numpy-only safetensors reader and writer (atomic writes, validated reads)."""

import json
import os
import struct
import tempfile
from collections import OrderedDict

import numpy as np

# safetensors dtype names <-> numpy dtypes (always little-endian on disk). BF16 has no numpy
# type: it is read as uint16 bits and widened to float32 on request.
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {
    np.dtype("<f8"): "F64",
    np.dtype("<f4"): "F32",
    np.dtype("<f2"): "F16",
    np.dtype("<i8"): "I64",
    np.dtype("<i4"): "I32",
    np.dtype("<i2"): "I16",
    np.dtype("i1"): "I8",
    np.dtype("u1"): "U8",
    np.dtype("?"): "BOOL",
}

# A header this large is certainly not a tensor table; refuse before allocating it.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file that cannot be read or a tensor table that cannot be written."""


def _dtype_name(array):
    dt = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    name = _NAMES.get(np.dtype(dt))
    if name is None:
        raise SafetensorsError(f"unsupported dtype {array.dtype}")
    return name


def encode(tensors, metadata=None):
    """The bytes of a safetensors file holding `tensors` (name -> array), in the given order."""
    header = OrderedDict()
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise SafetensorsError(f"metadata must map str to str, got {key!r}: {value!r}")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name, array in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise SafetensorsError(f"bad tensor name {name!r}")
        array = np.asarray(array)
        dtype = _dtype_name(array)
        blob = np.ascontiguousarray(array).astype(_DTYPES[dtype], copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces to 8 bytes so that the data section is aligned, as the reference library does.
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write(path, tensors, metadata=None):
    """Writes a safetensors file atomically (see write_bytes_atomic)."""
    write_bytes_atomic(path, encode(tensors, metadata))


def write_bytes_atomic(path, data):
    """Writes a file atomically: a temp file in the same folder, fsync, then rename, so a reader
    never sees a half-written file and an interrupted write leaves the old one in place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path, to_float32=False):
    """Reads a safetensors file. Returns (OrderedDict name -> array, metadata dict).

    With to_float32, F16/BF16/F64 tensors are converted to float32, as mirad's loader does.
    Every structural error raises SafetensorsError naming the file (and the tensor)."""
    with open(path, "rb") as f:
        data = f.read()
    return decode(data, str(path), to_float32)


def decode(data, where="<bytes>", to_float32=False):
    """Parses the bytes of a safetensors file; see read()."""
    if len(data) < 8:
        raise SafetensorsError(f"{where}: file too short for a safetensors header")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(len(data) - 8, _MAX_HEADER_BYTES):
        raise SafetensorsError(f"{where}: header length {header_len} beyond the file "
                               f"({len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + header_len].decode("utf-8"),
                            object_pairs_hook=OrderedDict)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{where}: malformed JSON header: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{where}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise SafetensorsError(f"{where}: __metadata__ must map strings to strings")
    body = memoryview(data)[8 + header_len:]
    spans = []
    tensors = OrderedDict()
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: tensor '{name}': entry must have exactly dtype, "
                                   f"shape and data_offsets")
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise SafetensorsError(f"{where}: tensor '{name}': unknown dtype {info['dtype']!r}")
        shape = info["shape"]
        offsets = info["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise SafetensorsError(f"{where}: tensor '{name}': bad shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= len(body)):
            raise SafetensorsError(f"{where}: tensor '{name}': data_offsets {offsets!r} out of "
                                   f"range (data section is {len(body)} bytes)")
        count = int(np.prod(shape, dtype=np.int64))
        if offsets[1] - offsets[0] != count * dtype.itemsize:
            raise SafetensorsError(f"{where}: tensor '{name}': {offsets[1] - offsets[0]} bytes "
                                   f"for {info['dtype']} x {shape}, expected "
                                   f"{count * dtype.itemsize}")
        spans.append((offsets[0], offsets[1], name))
        array = np.frombuffer(body[offsets[0]:offsets[1]], dtype=dtype).reshape(shape).copy()
        if to_float32 and info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        elif to_float32 and info["dtype"] in ("F16", "F64"):
            array = array.astype(np.float32)
        tensors[name] = array
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise SafetensorsError(f"{where}: tensors '{n0}' and '{n1}' overlap")
    return tensors, dict(metadata)
