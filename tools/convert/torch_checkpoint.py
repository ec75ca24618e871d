"""Reads PyTorch checkpoints (zip and legacy formats) into numpy arrays without PyTorch.

A checkpoint is a pickle whose tensors point, through pickle "persistent ids", at raw storage
blobs kept outside the pickle:
  zip format (torch >= 1.6): <prefix>/data.pkl and one file <prefix>/data/<key> per storage;
  legacy format: pickles of the magic number, the protocol version and a sys-info dict, then the
                 object pickle, then the sorted list of storage keys, then each storage as an
                 8-byte little-endian element count followed by its raw bytes.
Only an allowlist of globals may be resolved while unpickling, so a malicious checkpoint cannot
run code: anything else (os.system, builtins.eval, ...) raises CheckpointError.
"""

import collections
import functools
import io
import pickle
import struct
import sys
import zipfile
import zlib

import numpy as np

# torch.serialization's constants for the legacy format.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Storage classes -> element dtype. BFloat16 has no numpy type; it is read as its uint16 bits.
_STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "bf16",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",
}


class CheckpointError(ValueError):
    """A checkpoint that is malformed, unsupported or unsafe; the message names the file."""


class _StorageType:
    """Stands in for a torch.*Storage class named in a persistent id."""

    def __init__(self, name):
        self.name = name
        code = _STORAGE_DTYPES[name]
        self.bfloat16 = code == "bf16"
        self.dtype = np.dtype("u2" if self.bfloat16 else code)


class _StorageRef:
    """A storage named by a persistent id; its bytes are attached once they have been read."""

    def __init__(self, storage_type, key, numel):
        self.storage_type = storage_type
        self.key = key
        self.numel = numel
        self.array = None  # 1-D array of numel elements, filled in after unpickling
        self.view = None   # (root _StorageRef, element offset) for legacy storage views


class _TensorRef:
    """What torch._utils._rebuild_tensor_v2 would build, before the storage data is known."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 called without a storage")
    if not all(isinstance(v, int) for v in (storage_offset, *size, *stride)):
        raise pickle.UnpicklingError("tensor offset, size and stride must be integers")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    # An nn.Parameter pickles as its data tensor; mirad only needs the values.
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    # Tensor subclasses and tensors with Python attributes: keep the plain tensor.
    return func(*args)


# The only globals a checkpoint may name. Everything else is refused (see find_class).
_ALLOWED_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
}
# Classes that appear only as the new_type argument of _rebuild_from_type_v2.
_TYPE_MARKERS = {("torch", "Tensor"), ("torch.nn.parameter", "Parameter")}


class _TypeMarker:
    def __init__(self, name):
        self.name = name


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only allowlisted globals and records storage references."""

    def __init__(self, file):
        super().__init__(file, encoding="utf-8")
        self.storages = {}  # key -> _StorageRef

    def find_class(self, module, name):
        # A fresh object per lookup: a pickle can set attributes on what it resolves (BUILD),
        # and must not be able to alter what a later load in this process gets.
        key = (module, name)
        if key == ("collections", "OrderedDict"):
            return collections.OrderedDict  # a built-in type: its attributes are read-only
        if key in _ALLOWED_FUNCTIONS:
            return functools.partial(_ALLOWED_FUNCTIONS[key])
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if key in _TYPE_MARKERS:
            return _TypeMarker(f"{module}.{name}")
        raise pickle.UnpicklingError(
            f"refusing to resolve global '{module}.{name}' (not allowlisted: a checkpoint "
            f"may only hold tensors in dicts and lists)")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if typename != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id type {typename!r}")
        # zip: ('storage', type, key, location, numel);
        # legacy: ('storage', type, key, location, numel, view_metadata).
        if len(pid) not in (5, 6):
            raise pickle.UnpicklingError(f"persistent id with {len(pid)} fields")
        storage_type, key, _location, numel = pid[1:5]
        view_metadata = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"persistent id names no storage type: {storage_type!r}")
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"storage '{key}': bad element count {numel!r}")
        root = self.storages.get(key)
        if root is None:
            root = self.storages[key] = _StorageRef(storage_type, key, numel)
        elif root.storage_type.name != storage_type.name:
            raise pickle.UnpicklingError(f"storage '{key}' used with two different types")
        if view_metadata is None:
            return root
        # Very old checkpoints pickle storage views: (view_key, element offset, element count).
        view_key, view_offset, view_numel = view_metadata
        view = _StorageRef(storage_type, str(view_key), view_numel)
        view.view = (root, view_offset)
        return view


def _resolve(obj, where):
    """Replaces every _TensorRef in a (nested) container by a contiguous numpy array."""
    if isinstance(obj, _TensorRef):
        return _materialize(obj, where)
    if isinstance(obj, dict):
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _resolve(v, where)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, where) for v in obj)
    if isinstance(obj, (_StorageRef, _StorageType)):
        raise CheckpointError(f"{where}: a bare storage outside a tensor is not supported")
    return obj


def _storage_array(storage, where):
    if storage.view is not None:
        root, offset = storage.view
        base = _storage_array(root, where)
        if offset < 0 or offset + storage.numel > base.size:
            raise CheckpointError(f"{where}: storage view '{storage.key}' outside storage "
                                  f"'{root.key}'")
        return base[offset:offset + storage.numel]
    if storage.array is None:
        raise CheckpointError(f"{where}: storage '{storage.key}' has no data")
    return storage.array


def _materialize(ref, where):
    if not isinstance(ref.storage, _StorageRef):
        raise CheckpointError(f"{where}: a tensor without a storage")
    base = _storage_array(ref.storage, where)
    st = ref.storage.storage_type
    geometry = (ref.offset, *ref.size, *ref.stride)
    if not all(isinstance(v, int) and v >= 0 for v in geometry) \
            or len(ref.size) != len(ref.stride):
        raise CheckpointError(f"{where}: storage '{ref.storage.key}': bad tensor geometry "
                              f"size={ref.size} stride={ref.stride} offset={ref.offset}")
    count = int(np.prod(ref.size, dtype=object))
    if count == 0:
        array = np.zeros(ref.size, dtype=base.dtype)
    else:
        last = ref.offset + sum((d - 1) * s for d, s in zip(ref.size, ref.stride))
        if last >= base.size:
            raise CheckpointError(f"{where}: storage '{ref.storage.key}' has {base.size} "
                                  f"elements, a tensor reads element {last}")
        # More elements than the storage holds means overlapping strides (an expanded tensor):
        # never in a state dict, and a cheap way to make a reader allocate without bound.
        if count > base.size:
            raise CheckpointError(f"{where}: storage '{ref.storage.key}': a tensor of {count} "
                                  f"elements over {base.size} stored ones (overlapping strides "
                                  f"are not supported)")
        view = np.lib.stride_tricks.as_strided(
            base[ref.offset:], shape=ref.size,
            strides=[s * base.itemsize for s in ref.stride], writeable=False)
        array = np.array(view, order="C")
    if st.bfloat16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _read_exact(f, n, where, what):
    data = f.read(n)
    if len(data) != n:
        raise CheckpointError(f"{where}: truncated while reading {what} "
                              f"({len(data)} of {n} bytes)")
    return data


def _load_zip(data, where):
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(f"{where}: not a readable zip archive (truncated or corrupt): "
                              f"{e}") from None
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{where}: zip archive has no single <prefix>/data.pkl "
                              f"(is it a PyTorch checkpoint?)")
    prefix = pickles[0][: -len("data.pkl")]

    def read(name):
        try:
            return archive.read(name)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as e:
            raise CheckpointError(f"{where}: {name}: {e}") from None

    # Files written on big-endian machines say so in <prefix>/byteorder (torch >= 1.10).
    byteorder = read(prefix + "byteorder").decode("ascii", "replace").strip() \
        if prefix + "byteorder" in names else "little"
    if byteorder not in ("little", "big"):
        raise CheckpointError(f"{where}: unknown byte order {byteorder!r}")
    try:
        unpickler = _RestrictedUnpickler(io.BytesIO(read(pickles[0])))
        obj = unpickler.load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as e:
        raise CheckpointError(f"{where}: {prefix}data.pkl: {e}") from None
    order = "<" if byteorder == "little" else ">"
    for key, ref in unpickler.storages.items():
        name = f"{prefix}data/{key}"
        if name not in names:
            raise CheckpointError(f"{where}: storage file {name} missing")
        raw = read(name)
        dtype = ref.storage_type.dtype.newbyteorder(order)
        if len(raw) < ref.numel * dtype.itemsize:
            raise CheckpointError(f"{where}: storage {name} holds {len(raw)} bytes, "
                                  f"{ref.numel} elements need {ref.numel * dtype.itemsize}")
        ref.array = np.frombuffer(raw, dtype=dtype, count=ref.numel).astype(
            ref.storage_type.dtype.newbyteorder("="))
    return obj


def _load_legacy(data, where):
    f = io.BytesIO(data)
    try:
        magic = _RestrictedUnpickler(f).load()
        if magic != LEGACY_MAGIC_NUMBER:
            raise CheckpointError(f"{where}: not a PyTorch checkpoint (bad magic number)")
        protocol = _RestrictedUnpickler(f).load()
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise CheckpointError(f"{where}: unsupported legacy protocol version {protocol!r}")
        sys_info = _RestrictedUnpickler(f).load()
        if not isinstance(sys_info, dict):
            raise CheckpointError(f"{where}: malformed sys-info record")
        unpickler = _RestrictedUnpickler(f)
        obj = unpickler.load()
        keys = _RestrictedUnpickler(f).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error) as e:
        raise CheckpointError(f"{where}: {e}") from None
    if not isinstance(keys, list):
        raise CheckpointError(f"{where}: malformed storage key list")
    # torch writes legacy storages (and their element counts) little-endian on every machine,
    # whatever sys_info says about the writer, and byte-swaps on load where needed.
    order = "<"
    for key in keys:
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        ref = unpickler.storages.get(key)
        if ref is None:
            raise CheckpointError(f"{where}: storage '{key}' listed but never referenced")
        (count,) = struct.unpack(order + "q", _read_exact(f, 8, where, f"storage '{key}' size"))
        if count != ref.numel:
            raise CheckpointError(f"{where}: storage '{key}' has {count} elements on disk, "
                                  f"{ref.numel} in the pickle")
        dtype = ref.storage_type.dtype.newbyteorder(order)
        raw = _read_exact(f, count * dtype.itemsize, where, f"storage '{key}'")
        ref.array = np.frombuffer(raw, dtype=dtype).astype(
            ref.storage_type.dtype.newbyteorder("="))
    missing = [k for k, r in unpickler.storages.items() if r.array is None]
    if missing:
        raise CheckpointError(f"{where}: storages referenced but not stored: {missing[:5]}")
    return obj


def load(source, name=None):
    """Loads a checkpoint (path or bytes) and returns its object with tensors as numpy arrays."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where = bytes(source), name or "<bytes>"
    else:
        where = name or str(source)
        try:
            with open(source, "rb") as fh:
                data = fh.read()
        except OSError as e:
            raise CheckpointError(f"{where}: cannot read: {e.strerror}") from None
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        obj = _load_zip(data, where)
    elif data[:1] == b"\x80":
        obj = _load_legacy(data, where)
    elif data[:2] == b"\x1f\x8b" or (len(data) > 262 and data[257:262] == b"ustar"):
        raise CheckpointError(f"{where}: tar/gzip checkpoints (PyTorch < 0.4) are not supported")
    else:
        raise CheckpointError(f"{where}: not a PyTorch checkpoint (neither zip nor pickle)")
    try:
        return _resolve(obj, where)
    except RecursionError:
        raise CheckpointError(f"{where}: containers nested too deeply") from None


def load_state_dict(source, name=None):
    """Loads a checkpoint holding a state dict and returns an OrderedDict name -> numpy array.

    A dict that wraps the state dict under "state_dict" or "model" (training checkpoints) is
    unwrapped. Entries that are not tensors are an error: a state dict holds only tensors."""
    where = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "<bytes>")
    obj = load(source, name)
    if isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: holds a {type(obj).__name__}, not a state dict")
    out = collections.OrderedDict()
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise CheckpointError(f"{where}: entry {key!r} is a {type(value).__name__}, "
                                  f"not a tensor")
        out[key] = value
    return out


if __name__ == "__main__":
    # Lists a checkpoint's tensors: python3 torch_checkpoint.py FILE.pth
    if len(sys.argv) != 2:
        sys.exit("usage: torch_checkpoint.py CHECKPOINT")
    try:
        for k, v in load_state_dict(sys.argv[1]).items():
            print(f"{k}\t{v.dtype}\t{list(v.shape)}")
    except CheckpointError as e:
        sys.exit(f"error: {e}")
