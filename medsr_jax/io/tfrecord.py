"""TFRecord framing without TensorFlow: write, read, verify and index records.

A TFRecord file is a plain sequence of records, each framed as

  uint64 little-endian  length of the data
  uint32 little-endian  masked CRC32C of those 8 length bytes
  bytes                 the data (here: usually a serialized tf.train.Example or a TensorBoard Event)
  uint32 little-endian  masked CRC32C of the data

where mask(crc) = (((crc >> 15) | (crc << 17)) + 0xa282ead8) mod 2**32 and CRC32C is the Castagnoli CRC
(computed with `google_crc32c`). Files written here are readable by TensorFlow's `TFRecordDataset`, by
`grain.experimental.TFRecordIterDataset` and by TensorBoard (see the environment notes, section 1).

The same framing serves the trainer's TensorBoard event files (`medsr_jax.logging.writers`) and the
`data_prep` shards, whose offset index (`TFRecordWriter.write` returns each record's offset, or
`index_records` rebuilds it) gives grain random access via `read_record_at`. Every read verifies both
CRCs by default; a damaged or truncated file raises `CorruptRecordError` naming the file and byte offset.

Usage:
  with TFRecordWriter("shard-00000.tfrecord") as w:
    offsets = [w.write(record) for record in records]
  for record in read_records("shard-00000.tfrecord"):
    ...
  data, next_offset = read_record_at("shard-00000.tfrecord", offsets[3])
"""

from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO, Iterator

import google_crc32c

from medsr_jax.errors import InputError

_MASK_DELTA = 0xA282EAD8
_HEADER_LEN = 12  # uint64 length + uint32 masked CRC of the length
_FOOTER_LEN = 4  # uint32 masked CRC of the data
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")

PathLike = str | os.PathLike


class CorruptRecordError(InputError):
  """A TFRecord file is damaged: bad CRC, or a record cut short by the end of the file."""

  def __init__(self, path: str, offset: int, reason: str):
    self.path = path
    self.offset = offset
    self.reason = reason
    super().__init__(f"corrupt TFRecord file {path} at byte offset {offset}: {reason}")


def masked_crc32c(data: bytes) -> int:
  """The masked CRC32C of `data`, as stored in TFRecord framing."""
  crc = google_crc32c.value(bytes(data))
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
  """Returns `data` framed as one TFRecord (header + data + footer)."""
  data = bytes(data)
  length = _LENGTH.pack(len(data))
  return length + _CRC.pack(masked_crc32c(length)) + data + _CRC.pack(masked_crc32c(data))


class TFRecordWriter:
  """Writes framed records to a new file (an existing file is overwritten).

  `write` returns the byte offset at which the record starts, for an offset index. Use as a context
  manager, or call `close()`.
  """

  def __init__(self, path: PathLike):
    self.path = os.fspath(path)
    try:
      self._file: BinaryIO | None = open(self.path, "wb")
    except OSError as e:
      raise InputError(f"cannot write TFRecord file {self.path}: {e.strerror}") from e
    self._offset = 0

  @property
  def offset(self) -> int:
    """Byte offset where the next record will start (= bytes written so far)."""
    return self._offset

  def write(self, record: bytes) -> int:
    """Appends one record and returns the byte offset at which it starts."""
    if self._file is None:
      raise ValueError(f"TFRecordWriter for {self.path} is closed")
    framed = frame_record(record)
    start = self._offset
    self._file.write(framed)
    self._offset += len(framed)
    return start

  def flush(self, fsync: bool = False) -> None:
    """Pushes buffered records to the OS (and to disk when `fsync`)."""
    if self._file is None:
      return
    self._file.flush()
    if fsync:
      os.fsync(self._file.fileno())

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> "TFRecordWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _file_size(f: BinaryIO) -> int | None:
  try:
    return os.fstat(f.fileno()).st_size
  except (AttributeError, OSError, io.UnsupportedOperation):
    return None


def _read_exact(f: BinaryIO, n: int, path: str, offset: int, what: str) -> bytes:
  buf = f.read(n)
  if len(buf) != n:
    raise CorruptRecordError(path, offset, f"truncated record ({what}: {len(buf)} of {n} bytes)")
  return buf


def _read_one(f: BinaryIO, path: str, offset: int, size: int | None,
              verify: bool) -> tuple[bytes, int] | None:
  """Reads the record starting at `offset` (the current file position); None at a clean EOF."""
  header = f.read(_HEADER_LEN)
  if not header:
    return None
  if len(header) != _HEADER_LEN:
    raise CorruptRecordError(
        path, offset, f"truncated record (header: {len(header)} of {_HEADER_LEN} bytes)")
  length_bytes = header[:8]
  (length,) = _LENGTH.unpack(length_bytes)
  (length_crc,) = _CRC.unpack(header[8:])
  if verify and masked_crc32c(length_bytes) != length_crc:
    raise CorruptRecordError(path, offset, "length CRC mismatch")
  end = offset + _HEADER_LEN + length + _FOOTER_LEN
  if size is not None and end > size:
    raise CorruptRecordError(
        path, offset, f"truncated record (needs {end - offset} bytes, file has {size - offset})")
  data = _read_exact(f, length, path, offset, "data")
  (data_crc,) = _CRC.unpack(_read_exact(f, _FOOTER_LEN, path, offset, "data CRC"))
  if verify and masked_crc32c(data) != data_crc:
    raise CorruptRecordError(path, offset, "data CRC mismatch")
  return data, end


def _open_for_read(path: PathLike) -> BinaryIO:
  try:
    return open(path, "rb")
  except OSError as e:
    raise InputError(f"cannot read TFRecord file {os.fspath(path)}: {e.strerror}") from e


def read_records(path: PathLike, verify: bool = True) -> Iterator[bytes]:
  """Yields the data of every record in `path`, in order, checking CRCs when `verify`."""
  name = os.fspath(path)
  with _open_for_read(path) as f:
    size = _file_size(f)
    offset = 0
    while True:
      got = _read_one(f, name, offset, size, verify)
      if got is None:
        return
      data, offset = got
      yield data


def read_record_at(f_or_path: PathLike | BinaryIO, offset: int,
                   verify: bool = True) -> tuple[bytes, int]:
  """Reads the record starting at byte `offset`; returns (data, offset of the next record).

  `f_or_path` is a path or a binary file object opened for reading (kept open, so a data source can
  reuse one handle for many reads). An offset at or past the end of the file is a CorruptRecordError.
  """
  if isinstance(f_or_path, (str, os.PathLike)):
    with _open_for_read(f_or_path) as f:
      return read_record_at(f, offset, verify)
  f = f_or_path
  name = str(getattr(f, "name", "<file object>"))
  if offset < 0:
    raise CorruptRecordError(name, offset, "negative offset")
  f.seek(offset)
  got = _read_one(f, name, offset, _file_size(f), verify)
  if got is None:
    raise CorruptRecordError(name, offset, "no record here (end of file)")
  return got


def index_records(path: PathLike, verify: bool = True) -> list[int]:
  """Byte offsets of every record in `path`.

  Always checks the length CRCs and that each record fits in the file; with `verify` the data CRCs
  are checked too (which reads the whole file), without it the data is skipped with a seek.
  """
  name = os.fspath(path)
  offsets = []
  with _open_for_read(path) as f:
    size = _file_size(f)
    offset = 0
    while True:
      if verify:
        got = _read_one(f, name, offset, size, verify=True)
        if got is None:
          break
        offsets.append(offset)
        offset = got[1]
        continue
      header = f.read(_HEADER_LEN)
      if not header:
        break
      if len(header) != _HEADER_LEN:
        raise CorruptRecordError(name, offset, "truncated record (header)")
      (length,) = _LENGTH.unpack(header[:8])
      if masked_crc32c(header[:8]) != _CRC.unpack(header[8:])[0]:
        raise CorruptRecordError(name, offset, "length CRC mismatch")
      end = offset + _HEADER_LEN + length + _FOOTER_LEN
      if size is not None and end > size:
        raise CorruptRecordError(name, offset, "truncated record")
      offsets.append(offset)
      offset = end
      f.seek(offset)
  return offsets
