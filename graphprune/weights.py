"""Weights that stay on disk: memory-mapped external data, spilled results, released pages.

An LLM export keeps its weights in external data files far larger than
memory. Loading maps each external tensor read-only (``np.memmap``: an ndarray
whose pages come from the file on first touch), so the IR holds views, not
copies, and every rule, pass and emitter reads them as ordinary arrays.

Pages a process has touched count in its resident set until it unmaps them,
even for a read-only file mapping. :func:`release` drops them again
(``madvise(MADV_DONTNEED)``: the data stays in the page cache, the next read
faults it back in), and the loops that sweep all weights (importance,
slicing, writing) release each tensor once done with it, so their peak is one
tensor, not the model.

Sliced results of a disk-backed graph go to a :class:`Spill` file in a
private temporary directory, mapped back in the same way, so the pruned
weights do not accumulate in memory before they are written.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .errors import InputError

MAP_MIN_BYTES = 1 << 16  # smaller external tensors are read into memory (a mapping each would cost more)
SPILL_MIN_BYTES = 1 << 20  # results at least this large go to the spill file
ALIGNMENT = 4096  # external tensors start at page offsets, so runtimes can map them in place
UNMAPPABLE = {TensorProto.STRING, TensorProto.INT4, TensorProto.UINT4, TensorProto.FLOAT4E2M1}


def external_location(tensor: TensorProto) -> tuple[str, int, int | None]:
    """``(location, offset, length)`` of an external tensor (length None when unstated)."""
    info = {e.key: e.value for e in tensor.external_data}
    if "location" not in info:
        raise InputError(f"initializer '{tensor.name}' is stored externally but names no location; "
                         "re-export the model")
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise InputError(f"initializer '{tensor.name}': external data offset/length are not integers "
                         f"({info.get('offset')!r}, {info.get('length')!r}); re-export the model") from None
    return info["location"], offset, length


def _data_path(base_dir: Path, location: str, name: str, where: str, anchored: bool = False) -> Path:
    """The file an external entry names; ``anchored``: absolute locations (set by
    :func:`anchor_external`) are accepted, otherwise the location must stay beside the model."""
    relative = Path(location)
    if anchored and relative.is_absolute():
        path = relative
    elif relative.is_absolute() or ".." in relative.parts:
        raise InputError(f"{where}: initializer '{name}' points outside the model's directory "
                         f"({location}); external data must lie beside the model")
    else:
        path = base_dir / relative
    if not path.is_file():
        raise InputError(f"{where}: external data file {path} (initializer '{name}') is missing; "
                         "copy it beside the model")
    return path


def map_external(model: onnx.ModelProto, base_dir: str | os.PathLike, where: str) -> dict[str, np.ndarray]:
    """Arrays of every externally stored initializer of ``model``: mapped, or read when small.

    The TensorProtos keep their external references (no data is loaded into
    them). Raises ``InputError`` naming the tensor and file when a reference
    is broken (missing file, range past its end).
    """
    sizes: dict[Path, int] = {}
    return {t.name: _external_array(t, Path(base_dir), where, sizes) for t in model.graph.initializer
            if t.data_location == TensorProto.EXTERNAL}


def _external_array(tensor: TensorProto, base: Path, where: str, sizes: dict[Path, int]) -> np.ndarray:
    """One external tensor's value (``sizes`` caches each data file's length)."""
    location, offset, length = external_location(tensor)
    path = _data_path(base, location, tensor.name, where, anchored=True)
    shape = tuple(int(d) for d in tensor.dims)
    if tensor.data_type in UNMAPPABLE:
        copy = TensorProto()
        copy.CopyFrom(tensor)
        onnx.external_data_helper.load_external_data_for_tensor(copy, str(base))
        return onnx.numpy_helper.to_array(copy)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if length is not None and length != nbytes:
        raise InputError(f"{where}: initializer '{tensor.name}' of shape {list(shape)} needs {nbytes} "
                         f"bytes but its external data entry says {length}; the file is damaged")
    size = sizes.setdefault(path, path.stat().st_size)
    if offset < 0 or offset + nbytes > size:
        raise InputError(f"{where}: initializer '{tensor.name}' reads bytes {offset}..{offset + nbytes} of "
                         f"{path}, which holds {size}; the data file is truncated or belongs to another model")
    if nbytes >= MAP_MIN_BYTES:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    with open(path, "rb") as f:
        f.seek(offset)
        return np.frombuffer(f.read(nbytes), dtype=dtype).reshape(shape).copy()


def _mapping(array) -> mmap.mmap | None:
    """The mmap an array's memory comes from, if any (np.memmap and views of it)."""
    while array is not None:
        if isinstance(array, mmap.mmap):
            return array
        found = getattr(array, "_mmap", None)
        if isinstance(found, mmap.mmap):
            return found
        array = getattr(array, "base", None)
    return None


def release(array) -> None:
    """Drop the resident pages of a mapped array (a no-op for arrays in memory)."""
    mapping = _mapping(array)
    if mapping is not None and not mapping.closed:
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError, AttributeError):  # not on this platform: pages stay until unmapped
            pass


def is_mapped(array) -> bool:
    return _mapping(array) is not None


class Spill:
    """A private, append-only file for large intermediate arrays, removed with its owner.

    ``put(array)`` writes the array at an aligned offset and returns a
    read-only mapping of it; the in-memory original can then be freed.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(tempfile.mkdtemp(prefix="graphprune-spill-", dir=directory))
        self.path = self.directory / "spill.bin"
        self.path.touch()
        self._size = 0
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.directory), True)

    def put(self, array: np.ndarray) -> np.ndarray:
        array = np.ascontiguousarray(array)
        if array.nbytes < SPILL_MIN_BYTES or array.dtype.hasobject:
            return array
        offset = -(-self._size // ALIGNMENT) * ALIGNMENT
        with open(self.path, "r+b") as f:
            f.seek(offset)
            write_array(f, array)
        self._size = offset + array.nbytes
        return np.memmap(self.path, dtype=array.dtype, mode="r", offset=offset, shape=array.shape)

    def close(self) -> None:
        self._finalizer()


WRITE_CHUNK = 1 << 26  # bytes per write: a mapped tensor is copied through a bounded window


def write_array(f, array: np.ndarray) -> None:
    """Write an array's bytes (C order, little-endian as ONNX stores them) in bounded chunks."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    flat = array.reshape(-1).view(np.uint8)
    for start in range(0, flat.size, WRITE_CHUNK):
        f.write(memoryview(flat[start:start + WRITE_CHUNK]))
        release(array)


class ExternalWriter:
    """Streams initializers into external data files in ``directory`` at aligned offsets.

    ``tensor`` moves an inline tensor's data out; ``copy`` moves an absolute
    reference's bytes across (``copy_file_range``: the data never enters this
    process). Both re-point the TensorProto in place. With ``shard_bytes`` a new
    file (``<location>.1``, ``.2``, ...) starts before a tensor that would take
    the current one past that size; ``locations`` lists the files written.
    """

    def __init__(self, directory: str | os.PathLike, location: str, shard_bytes: int | None = None):
        self.directory = Path(directory)
        self.base = location
        self.shard_bytes = shard_bytes
        self.locations: list[str] = []
        self.f = None  # opened on the first tensor: no empty file for a model without large ones
        self.offset = 0

    def _open(self) -> None:
        if self.f is not None:
            self.f.close()
        self.location = self.base if not self.locations else f"{self.base}.{len(self.locations)}"
        self.locations.append(self.location)
        self.f = open(self.directory / self.location, "wb", buffering=0)
        self.offset = 0

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    def __enter__(self) -> "ExternalWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _align(self, nbytes: int) -> int:
        if self.f is None or (self.shard_bytes and self.offset and self.offset + nbytes > self.shard_bytes):
            self._open()
        offset = -(-self.offset // ALIGNMENT) * ALIGNMENT
        if offset != self.offset:
            self.f.write(b"\0" * (offset - self.offset))
        return offset

    def _point(self, proto: TensorProto, offset: int, nbytes: int) -> None:
        proto.data_location = TensorProto.EXTERNAL
        del proto.external_data[:]
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(nbytes))):
            entry = proto.external_data.add()
            entry.key, entry.value = key, value

    def tensor(self, proto: TensorProto) -> None:
        """Move an inline tensor's data out to the file (in place)."""
        array = onnx.numpy_helper.to_array(proto)
        offset = self._align(array.nbytes)
        write_array(self.f, array)
        self.offset = offset + array.nbytes
        proto.ClearField("raw_data")
        for name in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            proto.ClearField(name)
        self._point(proto, offset, array.nbytes)

    def copy(self, proto: TensorProto) -> None:
        """Copy an absolute reference's range into the file and re-point it (in place)."""
        location, source_offset, length = external_location(proto)
        if length is None:
            length = int(np.prod(proto.dims, dtype=np.int64)) * \
                np.dtype(helper.tensor_dtype_to_np_dtype(proto.data_type)).itemsize
        offset = self._align(length)
        copy_range(Path(location), source_offset, length, self.f)
        self.offset = offset + length
        self._point(proto, offset, length)


# -- references: a ModelProto whose large tensors point at file ranges -------------------
#
# A disk-backed model travels between graphprune's steps as a small ModelProto whose
# large initializers are external entries with an *absolute* location: the source's own
# data files for untouched tensors, the spill file for sliced ones. Nothing is copied
# until the model is written (save_onnx streams each range into the output's data
# file) or run (a session is handed the mapped arrays, verify.session).

def file_range(array: np.ndarray) -> tuple[Path, int, int] | None:
    """``(file, offset, nbytes)`` when a C-contiguous array is a mapped range of a file."""
    if not isinstance(array, np.memmap) or array.filename is None or not array.flags.c_contiguous:
        return None
    mapping = _mapping(array)
    if mapping is None or mapping.closed:
        return None
    start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY  # where numpy began the mapping
    base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    return Path(array.filename), start + (array.ctypes.data - base), array.nbytes


def reference(name: str, path: Path, offset: int, nbytes: int, data_type: int, shape) -> TensorProto:
    """An external TensorProto naming an absolute file range (no data)."""
    proto = TensorProto()
    proto.name = name
    proto.data_type = data_type
    proto.dims.extend(int(d) for d in shape)
    proto.data_location = TensorProto.EXTERNAL
    for key, value in (("location", str(path)), ("offset", str(offset)), ("length", str(nbytes))):
        entry = proto.external_data.add()
        entry.key, entry.value = key, value
    return proto


def anchor_external(model: onnx.ModelProto, base_dir: str | os.PathLike, where: str) -> bool:
    """Make every external reference of ``model`` absolute (checked: file present, range inside it).

    Tensors under ``MAP_MIN_BYTES`` are read into the protobuf instead: they are
    shape data as often as weights (Reshape targets, ReduceMean/Unsqueeze axes
    exported with ``size_threshold=0``), which shape inference — ours and the
    runtime's — only sees inline. Constant-node tensors stored externally are
    loaded into the node. Returns whether large external tensors remain.
    """
    base = Path(base_dir).resolve()
    found = False
    for tensor in model.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        found = True
        location, offset, length = external_location(tensor)
        path = _data_path(base, location, tensor.name, where)
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = str(path)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == TensorProto.EXTERNAL:
                location, _, _ = external_location(attr.t)
                _data_path(base, location, attr.t.name or node.name, where)
                onnx.external_data_helper.load_external_data_for_tensor(attr.t, str(base))
                attr.t.data_location = TensorProto.DEFAULT
                del attr.t.external_data[:]
    if not found:
        return False
    sizes: dict[Path, int] = {}
    for tensor in model.graph.initializer:  # checks every range now, so later steps cannot fail on it
        if tensor.data_location == TensorProto.EXTERNAL:
            value = _external_array(tensor, base, where, sizes)
            if not isinstance(value, np.memmap):
                tensor.CopyFrom(onnx.numpy_helper.from_array(value, tensor.name))
    return has_references(model)


def has_references(model: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def tensor_array(tensor: TensorProto, where: str = "the model") -> np.ndarray:
    """A TensorProto's value; an absolute external reference is mapped, not read.

    Raw data of the wrong length is an InputError naming ``where`` (the file) and the tensor."""
    if tensor.data_location == TensorProto.EXTERNAL:
        return _external_array(tensor, Path("/"), f"tensor '{tensor.name}'", {})
    try:
        return onnx.numpy_helper.to_array(tensor)
    except ValueError:
        from .validate import raw_size_error

        error = raw_size_error(tensor, where) if tensor.HasField("raw_data") else None
        if error is None:
            raise
        raise error from None


COPY_CHUNK = 1 << 26


def copy_range(source: Path, offset: int, nbytes: int, out) -> None:
    """Append ``nbytes`` of ``source`` from ``offset`` to the open file ``out`` (page cache only)."""
    with open(source, "rb") as f:
        done = 0
        while done < nbytes:
            n = os.copy_file_range(f.fileno(), out.fileno(), min(COPY_CHUNK, nbytes - done),
                                   offset + done) if hasattr(os, "copy_file_range") else 0
            if n <= 0:  # no copy_file_range here (or across these file systems): read and write
                f.seek(offset + done)
                chunk = f.read(min(COPY_CHUNK, nbytes - done))
                if not chunk:
                    raise InputError(f"{source}: ends before byte {offset + nbytes}; the external data "
                                     "file changed while graphprune was reading it")
                out.write(chunk)
                n = len(chunk)
            done += n
