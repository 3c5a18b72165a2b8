"""Reading and writing PyTorch checkpoints without torch (an allow-list unpickler and a pickler).

`load_torch_file(path)` reads a file written by `torch.save` -- the zip format (torch >= 1.6:
`<root>/data.pkl` + one raw little-endian blob per storage under `<root>/data/<key>`) or the legacy
stream format (torch < 1.6, e.g. pytracking's released `.pth.tar`: magic number, protocol version and
system-info pickles, the object pickle, the sorted storage keys, then every storage as an int64
element count followed by its bytes) -- and returns the same nested containers with NumPy arrays in
place of tensors.

Nothing in the file is executed. Pickles can call any importable function, so the unpickler resolves
globals through an allow-list that maps each allowed name to a function *of this module* (the tensor
rebuilders, storage types, dtypes) or to an inert container (`OrderedDict`, `set`, ...). Classes of
the training code (`ltr.*`, `pytracking.*`, e.g. pytracking's `NetConstructor`) become inert
`PickledObject` stubs that keep their state as plain data. Every other global (`os.system`,
`builtins.eval`, `subprocess.Popen`, ...) raises `UnsafeCheckpointError` naming `module.name`.

Tensor layout is kept: a conv weight stays `(O, I, kh, kw)`; `cia_jax.interop.mapping` does the
conversion to Flax. bfloat16 tensors become float32 (NumPy has no bfloat16).
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Mapping

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Storage classes of torch (torch.<Name>Storage) -> element dtype. 'bfloat16' is decoded by hand.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}
# torch dtype names (pickled as globals `torch.<name>`) -> element dtype.
_TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64,
    "float16": np.float16, "half": np.float16, "bfloat16": "bfloat16", "int64": np.int64, "long": np.int64,
    "int32": np.int32, "int": np.int32, "int16": np.int16, "short": np.int16, "int8": np.int8,
    "uint8": np.uint8, "bool": np.bool_,
}
# Packages whose classes are replaced by inert stubs (pytracking's / CIA's training code).
_STUB_PACKAGES = ("ltr", "pytracking")


class UnsafeCheckpointError(ValueError):
  """The pickle references a global outside the allow-list (it could run code when unpickled)."""


class PickledObject:
  """Inert stand-in for an instance of a training-code class (e.g. `ltr.admin.model_constructor.NetConstructor`).

  `__dict__` holds the unpickled state (plain data); `_args` holds constructor arguments if the pickle
  called the class. `pickled_class` is the original 'module.name'.
  """

  pickled_class = "?"

  def __init__(self, *args, **kwargs):
    self._args = args
    if kwargs:
      self._kwargs = kwargs

  def __setstate__(self, state):
    # pickle BUILD: a dict (the usual `__dict__`), or (dict, slot-dict), or anything else.
    if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
      for part in state:
        if part:
          self.__dict__.update(part)
    elif isinstance(state, dict):
      self.__dict__.update(state)
    else:
      self.__dict__["_state"] = state

  def __repr__(self):
    return f"<PickledObject {self.pickled_class} {sorted(k for k in self.__dict__ if not k.startswith('_'))}>"


_STUB_CLASSES: dict[str, type] = {}


def _stub_class(module: str, name: str) -> type:
  full = f"{module}.{name}"
  if full not in _STUB_CLASSES:
    _STUB_CLASSES[full] = type(name, (PickledObject,), {"pickled_class": full, "__module__": __name__})
  return _STUB_CLASSES[full]


class _StorageType:
  """Marker for a pickled storage class or dtype (`torch.FloatStorage`, `torch.float32`)."""

  def __init__(self, name: str, dtype: Any):
    self.name = name
    self.dtype = dtype


class _Storage:
  """A flat storage: raw bytes (None while not read yet) plus the element dtype ('bfloat16' decoded on use)."""

  def __init__(self, data: bytes | memoryview | None, dtype: Any, where: str):
    self.data = data
    self.dtype = dtype
    self.where = where

  def elements(self, dtype: Any = None) -> np.ndarray:
    """The storage as a 1-D array of `dtype` (default: its own), float32 for bfloat16."""
    dtype = self.dtype if dtype is None else dtype
    if dtype == "bfloat16":
      raw = np.frombuffer(self.data, dtype="<u2", count=len(self.data) // 2)
      return (raw.astype(np.uint32) << 16).view(np.float32)
    dt = np.dtype(dtype).newbyteorder("<")
    if len(self.data) % dt.itemsize:
      raise ValueError(f"{self.where}: storage of {len(self.data)} bytes is not a whole number of "
                       f"{dt.name} elements")
    return np.frombuffer(self.data, dtype=dt, count=len(self.data) // dt.itemsize)


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any, dtype: Any = None) -> np.ndarray:
  """A (possibly strided, offset) view of `storage` copied into a contiguous NumPy array."""
  if not isinstance(storage, _Storage):
    raise ValueError(f"corrupt checkpoint: tensor rebuilt from {type(storage).__name__}, not a storage")
  if storage.data is None:
    return None  # Legacy format, first pass: the bytes are not read yet.
  flat = storage.elements(dtype)
  size = tuple(int(s) for s in size)
  stride = tuple(int(s) for s in stride)
  offset = int(storage_offset)
  if len(size) != len(stride) or any(s < 0 for s in size) or offset < 0:
    raise ValueError(f"{storage.where}: invalid tensor geometry size={size} stride={stride} offset={offset}")
  if 0 in size:
    return np.zeros(size, flat.dtype.newbyteorder("="))
  last = offset + sum((n - 1) * st for n, st in zip(size, stride))
  if any(st < 0 for st in stride) or last >= flat.size:
    raise ValueError(f"{storage.where}: tensor (size={size}, stride={stride}, offset={offset}) reaches "
                     f"element {last}, but the storage has {flat.size}")
  view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                         strides=tuple(st * flat.itemsize for st in stride), writeable=False)
  return np.array(view, dtype=flat.dtype.newbyteorder("="))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
  return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
  if not isinstance(dtype, _StorageType):
    raise ValueError(f"corrupt checkpoint: tensor dtype {dtype!r}")
  return _rebuild_tensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  # Tensor subclasses (Parameter) are plain arrays here; `func` is itself an allow-listed rebuilder.
  if not callable(func) or func not in _SAFE_CALLABLES:
    raise UnsafeCheckpointError(f"tensor rebuild through a non-allow-listed function {func!r}")
  return func(*args)


def _reconstruct_stub(cls, base, state=None):
  """copyreg._reconstructor, allowed only for stub classes (protocol 0/1 pickles of plain objects)."""
  if not (isinstance(cls, type) and issubclass(cls, PickledObject)):
    raise UnsafeCheckpointError(f"copyreg._reconstructor of {cls!r}: only training-code classes are allowed")
  obj = cls.__new__(cls)
  if state is not None:
    obj.__setstate__(state)
  return obj


def _torch_size(*args):
  return tuple(*args) if args else ()


class _Marker:
  """Inert placeholder for harmless torch classes (`torch.device`, `torch.Tensor`, ...) that may appear."""

  def __init__(self, *args):
    self.args = args


def _latin1_bytes(text, encoding="latin1"):
  """`_codecs.encode` as protocol-2 pickles use it for bytes objects (str + 'latin1'); nothing else."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise UnsafeCheckpointError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed")
  return text.encode("latin1")


def _marker_class(name: str) -> type:
  return type(name, (_Marker,), {"__module__": __name__})


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): lambda storage, offset, size, stride: _rebuild_tensor(
        storage, offset, size, stride),
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _marker_class("device"),
    ("torch", "Tensor"): _marker_class("Tensor"),
    ("torch.nn.parameter", "Parameter"): _marker_class("Parameter"),
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "set"): set,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "str"): str,
    ("builtins", "bool"): bool,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("copyreg", "_reconstructor"): _reconstruct_stub,
}
# NumPy arrays / scalars / dtypes (e.g. in pytracking's 'stats' or 'settings'): numpy's own rebuilders only
# allocate arrays and copy bytes (object arrays hold objects unpickled through this same allow-list).
_np_multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray  # pylint: disable=protected-access
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
  _SAFE_GLOBALS[(_mod, "_reconstruct")] = _np_multiarray._reconstruct  # pylint: disable=protected-access
  _SAFE_GLOBALS[(_mod, "scalar")] = _np_multiarray.scalar
_SAFE_GLOBALS[("_codecs", "encode")] = _latin1_bytes
_SAFE_GLOBALS[("numpy", "ndarray")] = np.ndarray
_SAFE_GLOBALS[("numpy", "dtype")] = np.dtype
for _name, _dt in _STORAGE_DTYPES.items():
  _SAFE_GLOBALS[("torch", _name)] = _StorageType(_name, _dt)
  _SAFE_GLOBALS[("torch.storage", _name)] = _StorageType(_name, _dt)
for _name, _dt in _TORCH_DTYPES.items():
  _SAFE_GLOBALS[("torch", _name)] = _StorageType(_name, _dt)
_SAFE_CALLABLES = {_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler with an allow-list `find_class` and torch's persistent storage ids."""

  def __init__(self, file, where: str, load_storage):
    super().__init__(file, encoding="latin1")  # latin1: Python 2 era pickles (very old checkpoints)
    self._where = where
    self._load_storage = load_storage

  def find_class(self, module: str, name: str):
    # Protocol-2 pickles spell some globals the Python 2 way (__builtin__, commands); report py3 names.
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
      module = _compat_pickle.IMPORT_MAPPING[module]
    if (module, name) in _SAFE_GLOBALS:
      return _SAFE_GLOBALS[(module, name)]
    if module.split(".")[0] in _STUB_PACKAGES:
      return _stub_class(module, name)
    raise UnsafeCheckpointError(
        f"{self._where}: refusing to load global '{module}.{name}' (not a tensor, storage or container, "
        "nor a pytracking/ltr class); the file may run code when unpickled")

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid:
      raise ValueError(f"{self._where}: unexpected persistent id {pid!r}")
    if pid[0] == "storage":
      return self._load_storage(pid)
    if pid[0] == "module" and len(pid) >= 2 and isinstance(pid[1], type):
      return pid[1]  # A whole pickled nn.Module's class (already resolved through find_class).
    raise ValueError(f"{self._where}: unsupported persistent id type {pid[0]!r}")


def _storage_type(pid: tuple, where: str) -> _StorageType:
  st = pid[1]
  if not isinstance(st, _StorageType):
    raise ValueError(f"{where}: storage of unknown type {st!r}")
  return st


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
      raise ValueError(f"{path}: zip file without exactly one '<root>/data.pkl' (not a torch.save file); "
                       f"entries: {names[:8]}")
    root = pkls[0].rsplit("/", 1)[0]
    byteorder = "little"
    if f"{root}/byteorder" in names:
      byteorder = zf.read(f"{root}/byteorder").decode().strip()
    if byteorder != "little":
      raise ValueError(f"{path}: big-endian torch checkpoints are not supported (byteorder={byteorder!r})")
    cache: dict[str, _Storage] = {}

    def load_storage(pid):
      # ('storage', storage_type, key, location, numel)
      if len(pid) < 5:
        raise ValueError(f"{path}: malformed storage id {pid!r}")
      st, key = _storage_type(pid, path), str(pid[2])
      if key not in cache:
        entry = f"{root}/data/{key}"
        if entry not in names:
          raise ValueError(f"{path}: storage '{entry}' referenced by data.pkl is missing")
        cache[key] = _Storage(zf.read(entry), st.dtype, f"{path}:{entry}")
      return cache[key]

    return _RestrictedUnpickler(io.BytesIO(zf.read(pkls[0])), path, load_storage).load()


def _element_size(dtype: Any) -> int:
  return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    data = f.read()
  buf = io.BytesIO(data)
  plain = lambda: _RestrictedUnpickler(buf, path, _no_storage(path)).load()  # noqa: E731
  try:
    magic = plain()
  except UnsafeCheckpointError:
    raise
  except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
    raise ValueError(f"{path}: not a PyTorch checkpoint (neither a torch zip file nor a legacy torch.save "
                     f"stream: {type(e).__name__}: {e})") from e
  if magic != _LEGACY_MAGIC:
    # A bare pickle (no torch framing): accept it if it holds no tensors (e.g. plain NumPy-free data).
    if buf.tell() == len(data):
      return magic
    raise ValueError(f"{path}: not a PyTorch checkpoint (no torch.save magic number)")
  version = plain()
  if version != _LEGACY_PROTOCOL:
    raise ValueError(f"{path}: unsupported legacy torch protocol version {version!r}")
  sys_info = plain()
  if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
    raise ValueError(f"{path}: big-endian torch checkpoints are not supported")
  roots: dict[str, _StorageType] = {}

  def load_storage(pid):
    # ('storage', storage_type, root_key, location, numel, view_metadata). The bytes follow the object
    # pickle, so this first pass only records the storage types and skips building tensors.
    if len(pid) < 6:
      raise ValueError(f"{path}: malformed legacy storage id {pid!r}")
    roots.setdefault(str(pid[2]), _storage_type(pid, path))
    return _Storage(None, roots[str(pid[2])].dtype, f"{path}:storage {pid[2]}")

  _RestrictedUnpickler(buf, path, load_storage).load()
  keys = plain()
  if not isinstance(keys, list):
    raise ValueError(f"{path}: corrupt legacy checkpoint (storage key list is {type(keys).__name__})")
  blobs: dict[str, memoryview] = {}
  view_all = memoryview(data)
  pos = buf.tell()
  for key in keys:
    key = str(key)
    if key not in roots:
      raise ValueError(f"{path}: storage key {key!r} is not referenced by the object pickle")
    st = roots[key]
    if pos + 8 > len(data):
      raise ValueError(f"{path}: truncated legacy checkpoint (storage {key})")
    (numel,) = struct.unpack("<q", data[pos:pos + 8])
    nbytes = numel * _element_size(st.dtype)
    pos += 8
    if numel < 0 or pos + nbytes > len(data):
      raise ValueError(f"{path}: truncated legacy checkpoint (storage {key} needs {nbytes} bytes)")
    blobs[key] = view_all[pos:pos + nbytes]
    pos += nbytes
  # Second pass over the object pickle, now with every storage's bytes known.
  return _load_legacy_second_pass(path, data, blobs)


def _load_legacy_second_pass(path: str, data: bytes, blobs: Mapping[str, memoryview]) -> Any:
  buf = io.BytesIO(data)
  plain = lambda: _RestrictedUnpickler(buf, path, _no_storage(path)).load()  # noqa: E731
  plain(), plain(), plain()  # magic, protocol, sys_info

  def load_storage(pid):
    st, key, view = _storage_type(pid, path), str(pid[2]), pid[5]
    if key not in blobs:
      raise ValueError(f"{path}: storage {key!r} has no data in the file")
    blob = blobs[key]
    if view is not None:
      _, offset, size = view
      es = _element_size(st.dtype)
      blob = blob[int(offset) * es:(int(offset) + int(size)) * es]
    return _Storage(blob, st.dtype, f"{path}:storage {key}")

  return _RestrictedUnpickler(buf, path, load_storage).load()


def _no_storage(path: str):
  def fail(pid):
    raise ValueError(f"{path}: unexpected storage reference in a torch.save header pickle")
  return fail


def load_torch_file(path: str) -> Any:
  """Reads a `torch.save` file (zip or legacy format) without torch and without running pickled code.

  Args:
    path: checkpoint file (`.pth`, `.pth.tar`, `.pt`).

  Returns:
    The saved object with tensors as NumPy arrays (torch layout and shape; bfloat16 -> float32;
    non-contiguous / offset views copied out), `OrderedDict`s kept, and instances of pytracking
    classes as `PickledObject` stubs.

  Raises:
    FileNotFoundError: no such file.
    UnsafeCheckpointError: the pickle references a global outside the allow-list (nothing is run).
    ValueError: not a torch checkpoint, or a corrupt one (the message names the file).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such checkpoint file")
  if zipfile.is_zipfile(path):
    try:
      return _load_zip(path)
    except (UnsafeCheckpointError, ValueError):
      raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
      raise ValueError(f"{path}: corrupt torch zip checkpoint ({type(e).__name__}: {e})") from e
  try:
    return _load_legacy(path)
  except (UnsafeCheckpointError, ValueError):
    raise
  except (pickle.UnpicklingError, EOFError, KeyError, TypeError, struct.error) as e:
    raise ValueError(f"{path}: corrupt legacy torch checkpoint ({type(e).__name__}: {e})") from e


def state_dict_from_checkpoint(obj: Any, where: str = "checkpoint") -> dict[str, np.ndarray]:
  """The network state dict of a loaded checkpoint: `obj['net']` (pytracking), `obj['state_dict']`, or `obj`.

  A 'module.' prefix on every key (a state dict saved from `nn.DataParallel`) is removed.

  Args:
    obj: what `load_torch_file` returned.
    where: name used in error messages (the file).

  Returns:
    `{torch key: array}` (a plain dict, order kept).
  """
  if isinstance(obj, Mapping):
    for key in ("net", "state_dict", "model"):
      if key in obj and isinstance(obj[key], Mapping):
        obj = obj[key]
        break
  if not isinstance(obj, Mapping) or not obj:
    raise ValueError(f"{where}: expected a state dict (or a pytracking checkpoint with 'net'), got "
                     f"{type(obj).__name__}")
  bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
  if bad:
    raise ValueError(f"{where}: not a flat state dict of tensors; offending entries: {bad[:5]}")
  if all(k.startswith("module.") for k in obj):  # saved from an nn.DataParallel wrapper
    return {k[len("module."):]: v for k, v in obj.items()}
  return dict(obj)


# ------------------------------------------------------------------------------------------------
# Writing (torch zip format, readable by `torch.load(..., weights_only=True)`).

_NP_TO_STORAGE = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.int16): "ShortStorage",
                  np.dtype(np.int8): "CharStorage", np.dtype(np.uint8): "ByteStorage",
                  np.dtype(np.bool_): "BoolStorage"}


class _Global:
  """A global reference written as-is (the real torch objects need not be importable here)."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle's save_reduce insists on a callable; never called here.
    raise TypeError(f"{self.module}.{self.name} is only a reference")


class _TorchPickler(pickle._Pickler):  # pylint: disable=protected-access  (pure-Python pickler: custom dispatch)
  """Pickles NumPy arrays as torch tensors whose storages go to separate zip records."""

  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def __init__(self, file, storages: list[np.ndarray]):
    super().__init__(file, protocol=2)
    self._storages = storages

  def _save_global_ref(self, obj: _Global):
    self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
    self.memoize(obj)

  dispatch[_Global] = _save_global_ref

  def persistent_id(self, obj):
    if isinstance(obj, _StorageRef):
      return ("storage", _Global("torch", _NP_TO_STORAGE[obj.array.dtype]), str(obj.key), "cpu", obj.array.size)
    return None

  def reducer_override(self, obj):
    if isinstance(obj, np.ndarray):
      if obj.dtype not in _NP_TO_STORAGE:
        raise ValueError(f"save_torch_file: unsupported dtype {obj.dtype}")
      arr = obj if obj.flags.c_contiguous else np.ascontiguousarray(obj)  # (ascontiguousarray makes 0-d 1-d)
      ref = _StorageRef(len(self._storages), arr.reshape(-1))
      self._storages.append(ref.array)
      strides = tuple(s // arr.itemsize for s in arr.strides) if arr.size else (1,) * arr.ndim
      return (_Global("torch._utils", "_rebuild_tensor_v2"),
              (ref, 0, tuple(arr.shape), strides, False, collections.OrderedDict()))
    return NotImplemented


class _StorageRef:
  def __init__(self, key: int, array: np.ndarray):
    self.key, self.array = key, array


def save_torch_file(path: str, obj: Any) -> None:
  """Writes `obj` (dicts / lists / tuples / scalars / strings with NumPy arrays) in torch's zip format.

  Arrays become tensors (float32/64/16, int64/32/16/8, uint8, bool) that `torch.load(path,
  weights_only=True)` reads; e.g. `save_torch_file(p, flax_to_torch(variables, arch))` exports weights to the
  reference. Records are stored uncompressed, as torch does.
  """
  storages: list[np.ndarray] = []
  buf = io.BytesIO()
  _TorchPickler(buf, storages).dump(obj)
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
    zf.writestr("archive/data.pkl", buf.getvalue())
    zf.writestr("archive/byteorder", "little")
    for i, arr in enumerate(storages):
      zf.writestr(f"archive/data/{i}", arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    zf.writestr("archive/version", "3\n")
