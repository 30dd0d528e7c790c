#!/usr/bin/env python3
"""Convert a PyTorch checkpoint in the legacy (pre-1.6, non-zip) format to safetensors.

Reads the file without PyTorch: only the standard library and numpy, then writes
the tensors with `safetensors.numpy.save_file`, keeping the checkpoint's key names.

Usage: convert_legacy_pth.py INPUT.pth OUTPUT.safetensors [--expect-params MIN MAX]

The legacy layout is a sequence of pickles followed by raw storage data:
  1. the magic number 0x1950a86a20f9469cfc6c,
  2. the protocol version (1001),
  3. system information (byte order, type sizes),
  4. the object itself (a state dict) whose tensors refer to storages by key
     through pickle persistent ids,
  5. the list of storage keys, in the order their data follows;
then, for each storage, its element count as an 8-byte little-endian integer and
the elements' raw bytes.
"""

import argparse
import collections
import os
import pickle
import struct
import sys

import numpy as np
from safetensors.numpy import save_file

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class StorageType:
    """Stands for a `torch.*Storage` class named in the pickle."""

    def __init__(self, name):
        if name not in STORAGE_DTYPES:
            raise ValueError(f"unsupported storage type torch.{name}")
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class Storage:
    """A storage whose data is read after the main pickle."""

    def __init__(self, key, dtype, numel):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data = None  # numpy 1-D array, filled in later


class StorageView:
    """A legacy storage view: a slice of a root storage."""

    def __init__(self, root, offset, size):
        self.root = root
        self.offset = offset
        self.size = size
        self.dtype = root.dtype


class TensorRef:
    """A tensor to build once its storage data is known."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def materialise(self):
        storage = self.storage
        base_offset = 0
        if isinstance(storage, StorageView):
            base_offset = storage.offset
            storage = storage.root
        data = storage.data
        if data is None:
            raise ValueError(f"storage {storage.key} has no data in the file")
        start = base_offset + self.offset
        if not self.size:
            return np.array(data[start], dtype=data.dtype)
        last = start + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=data.dtype)
        if last >= len(data):
            raise ValueError(
                f"tensor of size {self.size} at offset {start} overruns storage {storage.key} "
                f"of {len(data)} elements"
            )
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[start:], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        return np.ascontiguousarray(view)


def rebuild_tensor(storage, storage_offset, size, stride, *_rest):
    """Stub of torch._utils._rebuild_tensor_v2 and _rebuild_tensor."""
    return TensorRef(storage, storage_offset, size, stride)


def rebuild_parameter(data, *_rest):
    """Stub of torch._utils._rebuild_parameter: a parameter is its tensor."""
    return data


class LegacyUnpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self.storages = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module.startswith("torch"):
            raise pickle.UnpicklingError(f"unsupported object {module}.{name} in the checkpoint")
        return super().find_class(module, name)

    def persistent_load(self, saved_id):
        kind = saved_id[0]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id kind {kind!r}")
        _, storage_type, root_key, _location, numel, view_metadata = saved_id
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        root = self.storages.get(root_key)
        if root is None:
            root = Storage(root_key, storage_type.dtype, numel)
            self.storages[root_key] = root
        if view_metadata is not None:
            _view_key, offset, view_size = view_metadata
            return StorageView(root, offset, view_size)
        return root


def read_exact(f, n, what):
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"file ends inside {what}: wanted {n} bytes, got {len(data)}")
    return data


def load_legacy(path):
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != MAGIC_NUMBER:
            raise ValueError(
                f"{path} is not a legacy PyTorch file (magic number {magic!r}); "
                "a zip-format file needs torch.load"
            )
        protocol = pickle.load(f)
        if protocol != PROTOCOL_VERSION:
            raise ValueError(f"{path}: unsupported protocol version {protocol}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        unpickler = LegacyUnpickler(f)
        obj = unpickler.load()
        keys = pickle.load(f)
        for key in keys:
            storage = unpickler.storages.get(key)
            if storage is None:
                raise ValueError(f"{path}: data for storage {key} that no tensor uses")
            (numel,) = struct.unpack("<q", read_exact(f, 8, f"the size of storage {key}"))
            nbytes = numel * storage.dtype.itemsize
            raw = read_exact(f, nbytes, f"the data of storage {key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"), count=numel)
        trailing = f.read(1)
        if trailing:
            raise ValueError(f"{path}: unexpected data after the last storage")
    return obj


def flatten(obj, prefix=""):
    """Turns a (possibly nested) state dict into {name: numpy array}."""
    out = {}
    if isinstance(obj, dict):
        if "state_dict" in obj and isinstance(obj["state_dict"], dict) and not prefix:
            obj = obj["state_dict"]
        for k, v in obj.items():
            name = f"{prefix}{k}"
            if isinstance(v, TensorRef):
                out[name] = v.materialise()
            elif isinstance(v, dict):
                out.update(flatten(v, prefix=f"{name}."))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument(
        "--expect-params",
        nargs=2,
        type=int,
        metavar=("MIN", "MAX"),
        help="fail unless the number of floating-point parameters is in [MIN, MAX]",
    )
    args = parser.parse_args()

    tensors = flatten(load_legacy(args.input))
    if not tensors:
        sys.exit(f"error: {args.input} holds no tensors")
    n_float = sum(int(a.size) for a in tensors.values() if a.dtype.kind == "f")
    n_all = sum(int(a.size) for a in tensors.values())
    print(
        f"{args.input}: {len(tensors)} tensors, {n_float:,} floating-point values "
        f"({n_float / 1e6:.2f} M), {n_all:,} values in all"
    )
    if args.expect_params:
        lo, hi = args.expect_params
        if not lo <= n_float <= hi:
            sys.exit(f"error: expected between {lo:,} and {hi:,} floating-point values, found {n_float:,}")

    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{args.output}.tmp-{os.getpid()}"
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "source": os.path.basename(args.input)})
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
