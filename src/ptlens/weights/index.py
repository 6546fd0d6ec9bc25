"""A checkpoint's tensor index as plain data, and a narrow reader over it.

The index (names, dtypes, shapes, byte offsets) is parsed from the safetensors headers
alone, so a 405B checkpoint is described without touching its weights. The reader hands out
row ranges of one tensor at a time, mapped from the file or read into a caller's buffer.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ptlens.errors import PtlensError

if TYPE_CHECKING:
    import torch

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
            "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
"""Bytes per element of each safetensors dtype."""

BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
"""The unsigned integer type holding one element's bit pattern, by item size."""


class _TorchDtypes(Mapping):
    """safetensors dtype name → torch dtype, importing torch on first use: a ``--spectral off`` scan of bf16
    or float32 checkpoints works on numpy bit patterns and never loads torch (1.1 s of a 1B pair's 6 s)."""

    _names = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
              "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
              "BOOL": "bool"}

    def __getitem__(self, name: str) -> "torch.dtype":
        import torch

        return getattr(torch, self._names[name])

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


DTYPES: Mapping[str, "torch.dtype"] = _TorchDtypes()


_NUMPY_FLOATS = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def decode(raw: np.ndarray, dtype: str, out: type = np.float32) -> np.ndarray:
    """Stored bytes (uint8) of safetensors dtype ``dtype`` → values as ``out`` (float32 or float64).

    bfloat16 is the top half of a float32; float16/32/64 are numpy's own; only float8 goes through
    torch. Exact for every float dtype into float64, and for all but float64 into float32.
    """
    if dtype == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(out, copy=False)
    if dtype in _NUMPY_FLOATS:
        return raw.view(_NUMPY_FLOATS[dtype]).astype(out, copy=False)
    import torch

    return torch.from_numpy(raw).view(DTYPES[dtype]).double().numpy().astype(out, copy=False)


FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
MANTISSA_BITS = {"F64": 52, "F32": 23, "F16": 10, "BF16": 7, "F8_E4M3": 3, "F8_E5M2": 2}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the first element in ``file``
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


@dataclass
class CheckpointIndex:
    """Every tensor of one checkpoint folder, from headers only."""

    root: Path
    tensors: dict[str, TensorInfo]
    config: dict = field(default_factory=dict)
    format: str = "safetensors"
    head_aliases: dict[str, str] = field(default_factory=dict)
    """Head name → the embedding it reads (tied checkpoints in a lineage with untied ones: :func:`align_tied_heads`)."""

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def tied_embeddings(self) -> bool:
        """No ``lm_head`` stored next to an embedding: the head reuses the embedding matrix."""
        has_head = any(n.endswith("lm_head.weight") and n not in self.head_aliases for n in self.tensors)
        has_embed = any(n.endswith("embed_tokens.weight") for n in self.tensors)
        return bool(self.config.get("tie_word_embeddings", False)) or (has_embed and not has_head)

    @classmethod
    def from_dir(cls, root: str | Path, *, allow_pickle: bool = False) -> "CheckpointIndex":
        root = Path(root)
        if not root.is_dir():
            raise PtlensError(f"{root}: no such model folder")
        config = _read_config(root)
        index_file = root / "model.safetensors.index.json"
        if index_file.is_file():
            files = _shards_from_index(index_file)
        else:
            files = sorted(root.glob("*.safetensors"))
        if not files:
            if any(root.glob("*.bin")) or any(root.glob("*.pt")):
                if not allow_pickle:
                    raise PtlensError(
                        f"{root}: only pickle weights (*.bin); pass --allow-pickle to load them with weights_only=True")
                return _pickle_index(root, config)
            raise PtlensError(f"{root}: not a model folder (no *.safetensors weights, no model.safetensors.index.json)")
        tensors: dict[str, TensorInfo] = {}
        for f in files:
            for info in read_header(f):
                if info.name in tensors:
                    raise PtlensError(f"{f}: tensor {info.name} also stored in {tensors[info.name].file.name}")
                tensors[info.name] = info
        return cls(root=root, tensors=tensors, config=config)


def align_tied_heads(indexes: list[CheckpointIndex]) -> list[CheckpointIndex]:
    """Where some checkpoints store an output head and others tie it to the input embedding (Qwen2.5-Math → R1-Distill),
    give each tied one the head name, pointing at its embedding's bytes: a tied model's head *is* its embedding, so
    the scan compares it as such instead of calling the head missing. In place; returns ``indexes``."""
    from ptlens.weights.names import parse_name

    heads = {n for ix in indexes if not ix.tied_embeddings for n in ix.tensors if parse_name(n).group == "head"}
    if not heads:
        return indexes
    for ix in indexes:
        if not ix.tied_embeddings or any(h in ix.tensors for h in heads):
            continue
        embed = next((n for n in ix.tensors if parse_name(n).group == "embedding" and parse_name(n).is_vocab), None)
        if embed is not None:
            for h in heads:
                ix.tensors[h] = ix.tensors[embed]  # TensorInfo keeps the embedding's name: the reader finds its bytes
                ix.head_aliases[h] = embed
    return indexes


def _read_config(root: Path) -> dict:
    f = root / "config.json"
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except ValueError as e:
        raise PtlensError(f"{f}: not valid JSON ({e})") from None


def _shards_from_index(index_file: Path) -> list[Path]:
    try:
        wm = json.loads(index_file.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise PtlensError(f"{index_file}: not a valid safetensors index ({e})") from None
    shards = sorted(set(wm.values()))
    missing = [s for s in shards if not (index_file.parent / s).is_file()]
    if missing:
        raise PtlensError(f"{index_file}: names shard(s) that do not exist: {', '.join(missing)}")
    return [index_file.parent / s for s in shards]


def read_header(path: Path) -> list[TensorInfo]:
    """Parse one safetensors header and check every tensor's bytes lie inside the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise PtlensError(f"{path}: truncated safetensors file (no header)")
        (hlen,) = struct.unpack("<Q", raw)
        if hlen > min(_MAX_HEADER, size - 8):
            raise PtlensError(f"{path}: corrupt safetensors header (length {hlen} for a {size}-byte file)")
        try:
            header = json.loads(f.read(hlen))
        except (ValueError, UnicodeDecodeError):
            raise PtlensError(f"{path}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise PtlensError(f"{path}: corrupt safetensors header")
    base = 8 + hlen
    out = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = meta["dtype"], tuple(int(s) for s in meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise PtlensError(f"{path}: corrupt safetensors header entry for {name}") from None
        if dtype not in DTYPES:
            raise PtlensError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        info = TensorInfo(name, path, dtype, shape, base + a, b - a)
        if b < a or info.nbytes != info.numel * ITEMSIZE[dtype]:
            raise PtlensError(f"{path}: corrupt safetensors header (tensor {name}: offsets do not match its shape)")
        if base + b > size:
            raise PtlensError(f"{path}: truncated safetensors file (tensor {name} ends at byte {base + b}, file has {size})")
        out.append(info)
    return out


def _pickle_index(root: Path, config: dict) -> CheckpointIndex:
    """``*.bin`` checkpoints, opened only on request, with ``weights_only=True`` and mmap."""
    tensors = {}
    import torch

    for f in sorted(root.glob("*.bin")):
        try:
            sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
            raise PtlensError(f"{f}: cannot load pickle checkpoint with weights_only=True ({e.__class__.__name__})") from None
        for name, t in sd.items():
            if not isinstance(t, torch.Tensor):
                continue
            dtype = next((k for k, v in DTYPES.items() if v == t.dtype), None)
            if dtype is None:
                continue
            tensors[name] = TensorInfo(name, f, dtype, tuple(t.shape), -1, t.numel() * t.element_size())
    return CheckpointIndex(root=root, tensors=tensors, config=config, format="pickle")


class Reader:
    """Row ranges of a checkpoint's tensors: mapped for the streaming pass, or read with ``pread``.

    The element-wise pass maps one chunk at a time (``map_rows``): no copy out of the page
    cache, and the pages count as resident only while their chunk is alive, so memory stays one
    chunk per checkpoint. Whole-file mappings would count every page ever touched;
    safetensors' own API allocates a new tensor per slice.
    """

    def __init__(self, index: CheckpointIndex):
        self.index = index
        self._fds: dict[Path, int] = {}
        self._pickled: dict[Path, dict[str, "torch.Tensor"]] = {}

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._pickled.clear()

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def _span(self, info: TensorInfo, start: int, stop: int | None) -> tuple[int, int, int]:
        rows = info.shape[0] if info.shape else 1
        stop = rows if stop is None else min(stop, rows)
        row_bytes = info.nbytes // rows if rows else 0
        return info.start + start * row_bytes, (stop - start) * row_bytes, stop

    def read_into(self, name: str, start: int, stop: int, out: np.ndarray) -> "torch.Tensor":
        """Fill the uint8 buffer ``out`` with rows ``start:stop``; return them as a flat tensor of the stored dtype."""
        import torch

        return torch.from_numpy(self.read_bytes(name, start, stop, out)).view(DTYPES[self.index.tensors[name].dtype])

    def read_bytes(self, name: str, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Fill the uint8 buffer ``out`` with rows ``start:stop``; return the filled part."""
        info = self.index.tensors[name]
        offset, length, stop = self._span(info, start, stop)
        buf = out[:length]
        if info.start < 0:
            t = self._load_pickled(info)
            t = t.reshape(1) if t.ndim == 0 else t[start:stop]
            import torch

            buf[:] = t.contiguous().reshape(-1).view(torch.uint8).numpy()
        else:
            fd, view, done = self._fd(info.file), memoryview(buf), 0
            while done < length:
                k = os.preadv(fd, [view[done:]], offset + done)
                if k <= 0:
                    raise PtlensError(f"{info.file}: truncated while reading {name}")
                done += k
        return buf

    def map_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as uint8 bytes mapped copy-on-write from the file; unmapped when the array is dropped."""
        info = self.index.tensors[name]
        offset, length, stop = self._span(info, start, stop)
        if info.start < 0 or length == 0 or offset % ITEMSIZE[info.dtype]:  # pickled, empty or unaligned
            return self.read_bytes(name, start, stop, np.empty(length, dtype=np.uint8))
        skip = offset % mmap.ALLOCATIONGRANULARITY
        m = mmap.mmap(self._fd(info.file), length + skip, flags=mmap.MAP_PRIVATE,
                      prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset - skip)
        return np.frombuffer(m, dtype=np.uint8, count=length, offset=skip)

    def rows(self, name: str, start: int = 0, stop: int | None = None) -> "torch.Tensor":
        """Rows ``start:stop`` of tensor ``name`` (elements for 1-D, the value for 0-D), stored dtype, a new tensor."""
        info = self.index.tensors[name]
        _, length, stop = self._span(info, start, stop)
        flat = self.read_into(name, start, stop, np.empty(length, dtype=np.uint8))
        if not info.shape:
            return flat.reshape(())
        return flat.reshape(stop - start, *info.shape[1:])

    def _load_pickled(self, info: TensorInfo) -> "torch.Tensor":
        sd = self._pickled.get(info.file)
        if sd is None:
            import torch

            sd = torch.load(info.file, map_location="cpu", weights_only=True, mmap=True)
            self._pickled = {info.file: sd}
        return sd[info.name]
