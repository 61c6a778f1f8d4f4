"""The random-access grain source over a `data_prep` shard directory (the reader side).

A shard directory (format: `medsr_jax.data.manifest`) holds, per split, TFRecord shards of slice
records (`medsr_jax.data.records`) and one int64 offset index per shard. `ShardSource(dir, split)`
is a grain random-access source over one split: global record i lives in the shard where the
running record counts of the manifest put it, at the byte offset its index gives, and reading it
is three positioned reads (`os.pread`: header, data, footer; no seek, so threads never share a
file position) with both CRCs of the framing checked. A record that fails any check is read again
by `io.tfrecord.read_record_at`, so a damaged record raises `CorruptRecordError` naming the shard
file and the byte offset; a record that passes the CRCs but is not a valid slice record raises
`InputError` naming both too.

Pickling and files. The source pickles to its paths and a few integers (no open files, no
arrays), so grain can send it to worker processes cheaply. Index files are loaded on first use
in each process; shard files are opened on first use in each thread (a small per-thread LRU of
open files, `max_open_files`), and reopened after a fork, so threads and processes never share a
file position.

What an item is. `source[i]` is the (H, W, C) float32 slice (channels picked and ordered by
`modalities`, e.g. ('t1ce',) from a 4-channel BraTS shard), the interface of
`array_source.ArraySliceSource`; with `with_label=True` it is {'image', 'label'} for
lesion-focused ROI crops. `record(i)` gives the whole decoded `SliceRecord`. `source[i]` checks
the record exactly as `record(i)` does but builds only the pixels (`records.decode_slice_pixels`,
the training hot path). `load_split` reads a whole split into an `ArraySliceSource` (whole-slice
validation / test sets).

A manifest with `complete: false` (a build still running or interrupted) is refused unless
`allow_incomplete=True`: its listed shards are whole, but training would silently miss data.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_shards.py
"""

from __future__ import annotations

import bisect
import collections
import os
import struct
import threading
from typing import Any, Optional, Sequence

import numpy as np

from medsr_jax.data import manifest as manifest_lib
from medsr_jax.data import records, transforms
from medsr_jax.data.array_source import ArraySliceSource
from medsr_jax.errors import InputError
from medsr_jax.io import tfrecord


_HEADER = struct.Struct('<QI')  # TFRecord framing: data length, masked CRC32C of the length


def _pread_record(fd: int, size: int, offset: int, verify: bool) -> Optional[bytes]:
  """The data of the TFRecord at `offset` of a file of `size` bytes, read with `os.pread`, both
  CRCs checked when `verify`; None when anything is off (then `tfrecord.read_record_at` reads
  it again and raises the error that names the fault).

  Three positioned reads (header, data, footer) instead of a seek and three buffered reads: the
  data lands straight in its own bytes object, which the CRC and the decoder then use in place.
  """
  try:
    header = os.pread(fd, 12, offset)
    if len(header) != 12:
      return None
    length, length_crc = _HEADER.unpack(header)
    if offset + 16 + length > size or (verify and
                                       tfrecord.masked_crc32c(header[:8]) != length_crc):
      return None
    data = os.pread(fd, length, offset + 12)
    footer = os.pread(fd, 4, offset + 12 + length)
  except (OSError, ValueError, OverflowError):
    return None
  if len(data) != length or len(footer) != 4 or (
      verify and tfrecord.masked_crc32c(data) != int.from_bytes(footer, 'little')):
    return None
  return data


class ShardSource:
  """Random-access source over split `split` of a shard directory (module docstring)."""

  def __init__(self, directory: str | os.PathLike, split: str = 'train', *,
               with_label: bool = False, modalities: Optional[Sequence[str]] = None,
               verify: bool = True, allow_incomplete: bool = False, max_open_files: int = 16):
    directory = os.path.abspath(os.fspath(directory))
    m = manifest_lib.read_manifest(directory)
    if not m.complete and not allow_incomplete:
      raise InputError(f'{directory}: the shard build is not complete (manifest.json has '
                       '"complete": false); finish or rerun data_prep')
    if split not in m.splits:
      raise InputError(f'{directory}: no {split!r} split in the shard manifest (it has '
                       f'{sorted(m.splits)})')
    sp = m.splits[split]
    if sp.num_records < 1:
      raise InputError(f'{directory}: split {split!r} has no records')
    if with_label and not m.has_labels:
      raise InputError(f'{directory}: the shards have no labels (needed for ROI crops)')
    if max_open_files < 1:
      raise InputError(f'max_open_files must be >= 1, got {max_open_files}')
    self.directory, self.split = directory, split
    self.dataset, self.protocol = m.dataset, m.protocol
    self.modalities = [m.modalities[i] for i in
                       transforms.channel_indices(m.modalities, modalities)]
    self._channels = (None if not modalities else
                      transforms.channel_indices(m.modalities, modalities))
    self._record_channels = int(m.channels)
    self._slice_shape = None if m.slice_shape is None else tuple(int(v) for v in m.slice_shape)
    self._files = tuple(os.path.join(directory, s.file) for s in sp.shards)
    self._index_files = tuple(os.path.join(directory, s.index) for s in sp.shards)
    self._counts = tuple(int(s.num_records) for s in sp.shards)
    self._ends = tuple(int(v) for v in np.cumsum(self._counts))
    self.with_label, self.verify = bool(with_label), bool(verify)
    self.max_open_files = int(max_open_files)
    self._reset_lazy_state()

  # ----- lazy, per-process / per-thread state -------------------------------------------------
  def _reset_lazy_state(self) -> None:
    self._lock = threading.Lock()
    self._offsets: Optional[list[np.ndarray]] = None
    self._local = threading.local()

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    for key in ('_lock', '_offsets', '_local'):
      state.pop(key)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._reset_lazy_state()

  def _load_offsets(self) -> list[np.ndarray]:
    offsets = self._offsets  # read on every record: no lock once the index is loaded
    if offsets is not None:
      return offsets
    with self._lock:
      if self._offsets is None:
        loaded = []
        for path, count in zip(self._index_files, self._counts):
          try:
            offsets = np.load(path, allow_pickle=False)
          except (OSError, ValueError) as e:
            raise InputError(f'{path}: cannot read the shard index ({e})') from e
          if (offsets.ndim != 1 or offsets.dtype.kind not in 'iu' or offsets.size != count or
              (count and (offsets[0] < 0 or np.any(np.diff(offsets) <= 0)))):
            raise InputError(f'{path}: bad shard index (expected {count} increasing byte '
                             f'offsets, got {offsets.dtype} {offsets.shape})')
          loaded.append(offsets.astype(np.int64))
        self._offsets = loaded
      return self._offsets

  def _file(self, shard: int) -> tuple[Any, int, int]:
    """This thread's open handle of shard `shard`: (file, descriptor, size at opening); an LRU
    of `max_open_files`, fork-safe."""
    local = self._local
    pid = os.getpid()
    if getattr(local, 'pid', None) != pid:
      local.pid, local.files = pid, collections.OrderedDict()  # Never reuse a parent's files.
    files = local.files
    entry = files.get(shard)
    if entry is not None:
      files.move_to_end(shard)
      return entry
    path = self._files[shard]
    try:
      f = open(path, 'rb')
      entry = (f, f.fileno(), os.fstat(f.fileno()).st_size)
    except OSError as e:
      raise InputError(f'{path}: cannot open shard ({e.strerror})') from e
    files[shard] = entry
    if len(files) > self.max_open_files:
      files.popitem(last=False)[1][0].close()
    return entry

  # ----- random access ------------------------------------------------------------------------
  def __len__(self) -> int:
    return self._ends[-1]

  def locate(self, index: int) -> tuple[str, int]:
    """(shard file, byte offset) of record `index`."""
    shard, local = self._shard_of(index)
    return self._files[shard], int(self._load_offsets()[shard][local])

  def _shard_of(self, index: int) -> tuple[int, int]:
    ends = self._ends
    n = ends[-1]
    i = int(index)
    if i < 0:
      i += n
    if not 0 <= i < n:
      raise IndexError(f'record {index} out of range for {n} records')
    shard = bisect.bisect_right(ends, i)
    return shard, i - (ends[shard - 1] if shard else 0)

  def read(self, index: int) -> bytes:
    """The raw (CRC-checked) bytes of record `index`."""
    shard, local = self._shard_of(index)
    offset = int(self._load_offsets()[shard][local])
    f, fd, size = self._file(shard)
    data = _pread_record(fd, size, offset, self.verify)
    if data is None:  # damaged or truncated: the reader that names the fault
      data, _ = tfrecord.read_record_at(f, offset, verify=self.verify)
    return data

  def _decoded(self, index: int, decode: Any) -> Any:
    """decode(the record's bytes), its errors prefixed with the shard file and offset."""
    data = self.read(index)
    try:
      return decode(data)
    except InputError as e:
      path, offset = self.locate(index)
      raise InputError(f'{path} at byte offset {offset}: {e}') from e

  def _check_shape(self, index: int, shape: tuple[int, ...]) -> None:
    if shape[2] != self._record_channels or (
        self._slice_shape is not None and shape != self._slice_shape):
      path, offset = self.locate(index)
      raise InputError(f'{path} at byte offset {offset}: slice of shape {shape} does not match '
                       f'the manifest ({self._slice_shape or "?"}, {self._record_channels} '
                       'channels)')

  def record(self, index: int) -> records.SliceRecord:
    """The decoded `SliceRecord` of record `index` (channels as stored)."""
    rec = self._decoded(index, records.decode_slice)
    self._check_shape(index, rec.image.shape)
    return rec

  def _select(self, image: np.ndarray) -> np.ndarray:
    if self._channels is None:
      return image
    return np.ascontiguousarray(image[..., list(self._channels)])

  def image_of(self, rec: records.SliceRecord) -> np.ndarray:
    """The record's image with this source's channels (`modalities`), in their order."""
    return self._select(rec.image)

  def __getitem__(self, index: int) -> Any:
    # The record is checked as by `record`, but only its pixels are built (the training path).
    image, label = self._decoded(index, self._pixels)
    self._check_shape(index, image.shape)
    image = self._select(image)
    if not self.with_label:
      return image
    if label is None:
      path, offset = self.locate(index)
      raise InputError(f'{path} at byte offset {offset}: record has no label (ROI crops need '
                       'one)')
    return {'image': image, 'label': label}

  def _pixels(self, data: bytes) -> tuple[np.ndarray, Optional[np.ndarray]]:
    return records.decode_slice_pixels(data, label=self.with_label)

  @property
  def slice_shape(self) -> Optional[tuple[int, int, int]]:
    """(H, W, C) after channel selection, or None when slices differ in size."""
    if self._slice_shape is None:
      return None
    return self._slice_shape[:2] + (len(self.modalities),)

  def __repr__(self) -> str:
    return (f'ShardSource({self.directory!r}, {self.split!r}, num_records={len(self)}, '
            f'shards={len(self._files)}, modalities={self.modalities})')


def load_split(directory: str | os.PathLike, split: str, *,
               modalities: Optional[Sequence[str]] = None,
               with_label: bool = False) -> ArraySliceSource:
  """A whole split in memory (slices, slice indices, subjects), e.g. for whole-slice evaluation.

  All slices must have the same size (InputError otherwise, e.g. ACDC centre crops of small
  frames; evaluate those per size). `with_label`: the label maps too (every record must have
  one), and items are {'image', 'label'}.
  """
  src = ShardSource(directory, split, modalities=modalities)
  recs = [src.record(i) for i in range(len(src))]
  shapes = {r.image.shape[:2] for r in recs}
  if len(shapes) != 1:
    raise InputError(f'{src.directory}: split {split!r} has slices of {len(shapes)} sizes '
                     f'{sorted(shapes)[:4]}; whole-slice evaluation needs one size')
  images = np.stack([src.image_of(r) for r in recs])
  labels = None
  if with_label:
    missing = [i for i, r in enumerate(recs) if r.label is None]
    if missing:
      path, offset = src.locate(missing[0])
      raise InputError(f'{path} at byte offset {offset}: record has no label (ROI crops need '
                       'one)')
    labels = np.stack([r.label for r in recs])
  return ArraySliceSource(images, slice_index=np.array([r.slice_index for r in recs]),
                          subject=[r.subject for r in recs], labels=labels,
                          with_label=with_label)
