"""Slice records: `tf.train.Example` messages encoded and decoded without TensorFlow.

Shards written by `data_prep` hold one serialized `tf.train.Example` per 2-D slice, framed as
TFRecords (`medsr_jax.io.tfrecord`). TensorFlow is not a dependency, so the few protobuf messages
involved are encoded here by hand, following the protobuf wire format of `example.proto` /
`feature.proto`:

  Example   { Features features = 1; }
  Features  { map<string, Feature> feature = 1; }   (map entry: string key = 1, Feature value = 2)
  Feature   { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                           Int64List int64_list = 3; } }
  BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
  Int64List { repeated int64 value = 1 [packed]; }

Map entries are written in sorted key order, so equal records encode to equal bytes (shards are
byte-identical across builds). The decoder accepts what TensorFlow writes (packed or unpacked
repeated scalars, any entry order) and rejects anything else with `RecordFormatError`.

The slice schema (`encode_slice` / `decode_slice`), one record per slice:

  image         bytes   the preprocessed slice, (H, W, C) little-endian, C order
  image/shape   int64   [H, W, C]
  image/dtype   bytes   'float32' in [0, 1], cropped: min-max normalised per volume (protocols
                        rdst, miassr) or divided by the dataset's maximum (msgan)
  label         bytes   optional (H, W) uint8 label map on the same grid (tumour / tissue / ...)
  label/shape   int64   [H, W] (present iff label is)
  subject       bytes   subject id (e.g. 'OAS1_0001_MR1')
  volume        bytes   id of the source volume within the subject (e.g. 'patient001_frame01';
                        ACDC has two frames per subject); the subject id when there is one volume
  slice_index   int64   index of the slice along the slicing axis of the source volume
  spacing       float   in-plane (row, column) voxel size in mm, then the slice thickness
  affine        float   the source volume's 4x4 voxel-to-world affine, row-major (16 values)
  orientation   bytes   axis codes of the source volume (nibabel aff2axcodes, e.g. 'RAS')
  modalities    bytes   one name per channel (e.g. 't1ce', 't1', 't2', 'flair')
  intensity     float   per channel the raw [lo, hi] that became [0, 1], so raw = lo + image *
                        (hi - lo) (2 * C values: lo_0, hi_0, lo_1, hi_1, ...): the volume's
                        [min, max] (min-max protocols) or [0, dataset divisor] (msgan)
  source_shape  int64   [H0, W0] of the slice before the crop
  crop_offset   int64   [row, col] of the crop's top-left corner in that slice (negative where
                        the slice was padded), so a record maps back onto the source grid
  dataset       bytes   'oasis' | 'brats' | 'acdc' | 'covid_ct' | 'folder'
  lesion_centre bytes   optional: 16 bytes, the (row, col) lesion centre as two little-endian
                        float64: the mean position of the label pixels > 0 (all labels fused), in
                        pixels of the stored slice. Written by protocol msgan; absent when the
                        record has no label or no lesion pixel, and in records of the other
                        protocols or of older builds (decoded as None)

Readable by TensorFlow with `tf.io.parse_single_example` and the feature spec in
`TF_FEATURE_SPEC_DOC`.

Decoding speed. `decode_slice`, `decode_slice_pixels` and `decode_example` first try a fast path
(one pass over the canonical layout, and a cache of layouts that skips even that pass: "Fast
path" below) and fall back to the general parser for anything else; values and errors are the
same either way, bit for bit (tests/test_records.py). `decode_slice_pixels` checks a record as
`decode_slice` does and builds only its image (and label): what `ShardSource[i]` uses. A 160x128
slice record on the 2-core development CPU (busy, per CPU-second): general parser ~4k
records/s, `decode_slice` ~26k, `decode_slice_pixels` ~30k (`python -m experiments.bench_data`).

Run `python -m pytest tests/test_records.py tests/test_data_prep_msgan.py`.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np

from medsr_jax.errors import InputError

Feature = Union[list[bytes], np.ndarray]  # bytes list, float32 array or int64 array

TF_FEATURE_SPEC_DOC = """
  {'image': tf.io.FixedLenFeature([], tf.string),
   'image/shape': tf.io.FixedLenFeature([3], tf.int64),
   'image/dtype': tf.io.FixedLenFeature([], tf.string),
   'label': tf.io.VarLenFeature(tf.string), 'label/shape': tf.io.VarLenFeature(tf.int64),
   'subject': tf.io.FixedLenFeature([], tf.string),
   'slice_index': tf.io.FixedLenFeature([], tf.int64),
   'spacing': tf.io.FixedLenFeature([3], tf.float32),
   'affine': tf.io.FixedLenFeature([16], tf.float32),
   'orientation': tf.io.FixedLenFeature([], tf.string),
   'modalities': tf.io.VarLenFeature(tf.string),
   'volume': tf.io.FixedLenFeature([], tf.string),
   'intensity': tf.io.VarLenFeature(tf.float32),
   'source_shape': tf.io.FixedLenFeature([2], tf.int64),
   'crop_offset': tf.io.FixedLenFeature([2], tf.int64),
   'dataset': tf.io.FixedLenFeature([], tf.string),
   'lesion_centre': tf.io.FixedLenFeature([], tf.string, default_value=b'')}
  # lesion_centre: b'' when absent, else tf.io.decode_raw(v, tf.float64) -> [row, col]
"""


class RecordFormatError(InputError):
  """Bytes that are not a well-formed tf.train.Example (or not a slice record)."""


# ----------------------------------------------------------------------------------------------
# Protobuf wire format (varints, length-delimited fields).

_WIRE_VARINT, _WIRE_64, _WIRE_LEN, _WIRE_32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
  if value < 0:
    value += 1 << 64  # int64 negatives are 10-byte two's-complement varints
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  result, shift = 0, 0
  while True:
    if pos >= len(buf) or shift > 63:
      raise RecordFormatError('truncated or overlong varint in record')
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7


def _field(number: int, wire: int, payload: bytes) -> bytes:
  tag = _varint((number << 3) | wire)
  if wire == _WIRE_LEN:
    return tag + _varint(len(payload)) + payload
  return tag + payload


def _fields(buf: memoryview) -> list[tuple[int, int, Any]]:
  """(field number, wire type, value) for every field of one message.

  Length-delimited values are zero-copy `memoryview` slices of `buf` (a record holds an 80 kB+
  image that would otherwise be copied once per nesting level).
  """
  out, pos = [], 0
  while pos < len(buf):
    key, pos = _read_varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == _WIRE_VARINT:
      value, pos = _read_varint(buf, pos)
    elif wire == _WIRE_LEN:
      n, pos = _read_varint(buf, pos)
      if pos + n > len(buf):
        raise RecordFormatError('length-delimited field runs past the end of the record')
      value, pos = buf[pos:pos + n], pos + n
    elif wire == _WIRE_32:
      value, pos = buf[pos:pos + 4], pos + 4
    elif wire == _WIRE_64:
      value, pos = buf[pos:pos + 8], pos + 8
    else:
      raise RecordFormatError(f'unsupported protobuf wire type {wire}')
    if pos > len(buf):
      raise RecordFormatError('record ends inside a field')
    out.append((number, wire, value))
  return out


# ----------------------------------------------------------------------------------------------
# tf.train.Example.


def _encode_feature(value: Feature) -> bytes:
  if isinstance(value, (list, tuple)):
    items = [bytes(v) for v in value]
    body = b''.join(_field(1, _WIRE_LEN, v) for v in items)
    return _field(1, _WIRE_LEN, body)
  arr = np.asarray(value)
  if arr.dtype.kind == 'f':
    packed = np.ascontiguousarray(arr.reshape(-1), dtype='<f4').tobytes()
    body = _field(1, _WIRE_LEN, packed) if packed else b''
    return _field(2, _WIRE_LEN, body)
  if arr.dtype.kind in 'iub':
    packed = b''.join(_varint(int(v)) for v in arr.reshape(-1))
    body = _field(1, _WIRE_LEN, packed) if packed else b''
    return _field(3, _WIRE_LEN, body)
  raise TypeError(f'cannot encode a feature of dtype {arr.dtype}')


def encode_example(features: Mapping[str, Feature]) -> bytes:
  """Serialized tf.train.Example. Values: list of bytes, or float / integer numpy arrays."""
  entries = b''
  for key in sorted(features):
    entry = _field(1, _WIRE_LEN, key.encode('utf-8')) + _field(2, _WIRE_LEN,
                                                               _encode_feature(features[key]))
    entries += _field(1, _WIRE_LEN, entry)
  return _field(1, _WIRE_LEN, entries)


def _decode_scalars(payloads: list[tuple[int, Any]], kind: str) -> np.ndarray:
  values: list = []
  for wire, v in payloads:
    if kind == 'float':
      if wire == _WIRE_LEN:
        if len(v) % 4:
          raise RecordFormatError('packed float list has a partial value')
        values.extend(np.frombuffer(v, '<f4').tolist())
      elif wire == _WIRE_32:
        values.append(struct.unpack('<f', bytes(v))[0])
      else:
        raise RecordFormatError('bad wire type in a float list')
    else:
      if wire == _WIRE_LEN:
        pos = 0
        while pos < len(v):
          x, pos = _read_varint(v, pos)
          values.append(x)
      elif wire == _WIRE_VARINT:
        values.append(v)
      else:
        raise RecordFormatError('bad wire type in an int64 list')
  if kind == 'float':
    return np.asarray(values, np.float32)
  return np.asarray([x - (1 << 64) if x >= 1 << 63 else x for x in values], np.int64)


def _decode_feature(buf: bytes) -> Feature:
  kinds = _fields(buf)
  if len(kinds) != 1 or kinds[0][1] != _WIRE_LEN or kinds[0][0] not in (1, 2, 3):
    raise RecordFormatError('a Feature must hold exactly one bytes, float or int64 list')
  number, _, body = kinds[0]
  inner = [(f, w, v) for f, w, v in _fields(body)]
  if any(f != 1 for f, _, _ in inner):
    raise RecordFormatError('unexpected field inside a feature list')
  if number == 1:
    if any(w != _WIRE_LEN for _, w, _ in inner):
      raise RecordFormatError('bad wire type in a bytes list')
    return [bytes(v) for _, _, v in inner]
  return _decode_scalars([(w, v) for _, w, v in inner], 'float' if number == 2 else 'int')


def decode_example(data: bytes) -> dict[str, Feature]:
  """{key: list of bytes | float32 array | int64 array} from a serialized tf.train.Example."""
  if isinstance(data, (bytes, bytearray)):
    scanned = _scan_cached(data)
    out = None if scanned is None else _example_from_scan(data, scanned)
    if out is not None:
      return out
  return _decode_example_general(data)


def _decode_example_general(data: bytes) -> dict[str, Feature]:
  """`decode_example` by the general parser (any valid encoding; errors for malformed bytes)."""
  out: dict[str, Feature] = {}
  for number, wire, features in _fields(memoryview(data).cast('B')):
    if number != 1 or wire != _WIRE_LEN:
      raise RecordFormatError('not a tf.train.Example (unexpected top-level field)')
    for n2, w2, entry in _fields(features):
      if n2 != 1 or w2 != _WIRE_LEN:
        raise RecordFormatError('not a tf.train.Example (unexpected field in Features)')
      key, value = None, b''
      for n3, w3, v in _fields(entry):
        if w3 != _WIRE_LEN or n3 not in (1, 2):
          raise RecordFormatError('malformed feature map entry')
        if n3 == 1:
          key = bytes(v).decode('utf-8')
        else:
          value = v
      if key is None:
        raise RecordFormatError('feature map entry without a key')
      out[key] = _decode_feature(value) if value else []
  return out


# ----------------------------------------------------------------------------------------------
# Fast path: one pass over the canonical layout, and a layout cache.
#
# `_scan` walks a serialized Example once and returns every feature's list without building
# `_fields`' per-level lists and memoryviews: a bytes list as (start, end) spans into the buffer
# (so the image is never copied before `np.frombuffer`), a packed float list as (offset, count)
# of its little-endian payload, a packed int64 list as (values, start, end). It accepts only the
# canonical layout, the one this encoder, TensorFlow and protobuf write: one Features field
# spanning the message; map entries of a key (shorter than 128 bytes) then a value filling the
# entry; a Feature holding one list that fills it; packed scalars in one run (or none). Anything
# else, malformed records included, makes it return None, and the callers fall back to the
# general parser above, which decodes or rejects it exactly as before. It never raises.
#
# `_scan_cached` skips even that walk for records laid out like one seen before (the records of
# one shard directory mostly share a few layouts). What the walk reads, and so everything it
# returns, is a function of the bytes outside the list payloads (tags, lengths, keys) and of the
# int64 payloads; so a record of the same length whose bytes outside the payloads equal a
# scanned record's (one numpy gather and compare) has that record's spans, and only its int64
# payloads are decoded again. A few layouts are kept per record length, per process.

_KEY = 0x0A     # field 1, length-delimited: Example.features, Features.feature, entry key, list
_VALUE = 0x12   # field 2, length-delimited: the map entry's Feature
# What a malformed record can raise inside the fast path (ValueError: RecordFormatError from a
# truncated varint, UnicodeDecodeError from a key); each one means: use the general parser.
_FAST_ERRORS = (IndexError, ValueError, OverflowError, struct.error)


def _uvarint(buf, pos: int) -> tuple[int, int]:
  """`_read_varint` for the fast path: the same values; past the buffer it raises IndexError."""
  b = buf[pos]
  result, shift = b & 0x7F, 7
  while b >= 0x80:
    if shift > 63:
      raise RecordFormatError('overlong varint')
    pos += 1
    b = buf[pos]
    result |= (b & 0x7F) << shift
    shift += 7
  return result, pos + 1


def _scan_bytes(buf, pos: int, stop: int) -> Optional[list[tuple[int, int]]]:
  spans = []
  while pos < stop:
    if buf[pos] != _KEY:
      return None
    n = buf[pos + 1]
    pos += 2
    if n >= 0x80:
      n, pos = _uvarint(buf, pos - 1)
    if pos + n > stop:
      return None
    spans.append((pos, pos + n))
    pos += n
  return spans


def _packed(buf, pos: int, stop: int) -> int:
  """Start of the one packed run that fills buf[pos:stop] (-1 if it does not)."""
  if buf[pos] != _KEY:
    return -1
  n = buf[pos + 1]
  pos += 2
  if n >= 0x80:
    n, pos = _uvarint(buf, pos - 1)
  return pos if pos + n == stop else -1


def _scan_ints(buf, pos: int, stop: int) -> Optional[list[int]]:
  """The int64 values of the packed varints buf[pos:stop] (None if they do not fill it)."""
  values: list[int] = []
  while pos < stop:
    x = buf[pos]
    if x < 0x80:
      pos += 1
    else:
      x, pos = _uvarint(buf, pos)
      if x >= 1 << 64:
        return None
      if x >= 1 << 63:
        x -= 1 << 64
    values.append(x)
  return values if pos == stop else None


def _scan_unchecked(buf, start: int, end: int) -> Optional[dict[str, tuple[int, Any]]]:
  if end - start < 2 or buf[start] != _KEY:
    return None
  n = buf[start + 1]
  pos = start + 2
  if n >= 0x80:
    n, pos = _uvarint(buf, start + 1)
  if pos + n != end:
    return None
  out: dict[str, tuple[int, Any]] = {}
  while pos < end:
    # A map entry: tag, length; its key: tag, length (< 128), bytes.
    n = buf[pos + 1]
    if n < 0x80:
      stop = pos + 2 + n
      at = pos + 2
    else:
      n, at = _uvarint(buf, pos + 1)
      stop = at + n
    klen = buf[at + 1]
    key_end = at + 2 + klen
    if (buf[pos] != _KEY or stop > end or buf[at] != _KEY or klen >= 0x80 or
        key_end + 4 > stop or buf[key_end] != _VALUE):
      return None
    # Its Feature: tag, length (filling the entry); the list: tag, length (filling the Feature).
    n = buf[key_end + 1]
    pos = key_end + 2
    if n >= 0x80:
      n, pos = _uvarint(buf, key_end + 1)
    if pos + n != stop:
      return None
    tag = buf[pos]
    n = buf[pos + 1]
    pos += 2
    if n >= 0x80:
      n, pos = _uvarint(buf, pos - 1)
    if pos + n != stop:
      return None
    if tag == 0x0A:  # bytes list
      value = _scan_bytes(buf, pos, stop)
    elif tag == 0x12:  # float list: empty, or one packed run of float32
      if pos < stop:
        pos = _packed(buf, pos, stop)
        if pos < 0 or (stop - pos) % 4:
          return None
      value = (pos, (stop - pos) // 4)
    elif tag == 0x1A:  # int64 list: empty, or one packed run of varints
      if pos < stop:
        pos = _packed(buf, pos, stop)
        if pos < 0:
          return None
      values = _scan_ints(buf, pos, stop)
      value = None if values is None else (values, pos, stop)
    else:
      return None
    if value is None:
      return None
    out[buf[at + 2:key_end].decode('utf-8')] = (tag >> 3, value)
    pos = stop
  return out


def _scan(buf, start: int, end: int) -> Optional[dict[str, tuple[int, Any]]]:
  """{key: (1, [(start, end), ...]) | (2, (offset, count)) | (3, (values, start, end))}, or
  None (then only the general parser can tell)."""
  try:
    return _scan_unchecked(buf, start, end)
  except _FAST_ERRORS:
    return None


class _Layout(NamedTuple):
  positions: np.ndarray  # every byte offset outside the list payloads
  expected: bytes        # the scanned record's bytes there
  scanned: dict          # its `_scan` (shared: never modified)
  ints: tuple            # (key, start, end) of each int64 payload


_LAYOUTS: dict[int, list[_Layout]] = {}  # by record length, the latest first
_MAX_LENGTHS, _MAX_PER_LENGTH = 64, 4


def _layout(buf, scanned: dict[str, tuple[int, Any]]) -> _Layout:
  payloads, ints = [], []
  for key, (kind, value) in scanned.items():
    if kind == 1:
      payloads.extend(value)
    elif kind == 2:
      payloads.append((value[0], value[0] + 4 * value[1]))
    else:
      payloads.append((value[1], value[2]))
      ints.append((key, value[1], value[2]))
  pieces, pos = [], 0
  for s, e in sorted(payloads):
    pieces.append(np.arange(pos, s))
    pos = e
  pieces.append(np.arange(pos, len(buf)))
  positions = np.concatenate(pieces)
  return _Layout(positions, np.frombuffer(buf, np.uint8)[positions].tobytes(), scanned,
                 tuple(ints))


def _scan_cached(buf) -> Optional[dict[str, tuple[int, Any]]]:
  """`_scan(buf, 0, len(buf))`, through the layout cache (see above)."""
  n = len(buf)
  layouts = _LAYOUTS.get(n, ())
  if layouts:
    data = np.frombuffer(buf, np.uint8)
  for lay in layouts:
    if data[lay.positions].tobytes() != lay.expected:
      continue
    if not lay.ints:
      return lay.scanned
    out = dict(lay.scanned)
    try:
      for key, s, e in lay.ints:
        values = _scan_ints(buf, s, e)
        if values is None:
          return None  # so would `_scan`: it decodes the same bytes after the same checks
        out[key] = (3, (values, s, e))
    except _FAST_ERRORS:
      return None
    return out
  scanned = _scan(buf, 0, n)
  if scanned is not None:
    if n not in _LAYOUTS and len(_LAYOUTS) >= _MAX_LENGTHS:
      _LAYOUTS.clear()
    _LAYOUTS[n] = [_layout(buf, scanned)] + list(layouts)[:_MAX_PER_LENGTH - 1]
  return scanned


def _float32s(buf, offset: int, count: int) -> Optional[np.ndarray]:
  """The float32 payload, or None if it holds a NaN: the general path's trip through Python
  floats quiets signalling NaNs (and numpy would warn doing that), so NaNs take that path."""
  values = np.frombuffer(buf, '<f4', count, offset)
  return None if np.isnan(values).any() else values.copy()


def _example_from_scan(buf, scanned: dict[str, tuple[int, Any]]
                       ) -> Optional[dict[str, Feature]]:
  out: dict[str, Feature] = {}
  for key, (kind, value) in scanned.items():
    if kind == 1:
      out[key] = [bytes(buf[s:e]) for s, e in value]
    elif kind == 2:
      out[key] = _float32s(buf, *value)
      if out[key] is None:
        return None
    else:
      out[key] = np.asarray(value[0], np.int64)
  return out


# ----------------------------------------------------------------------------------------------
# The slice schema.

DATASETS = ('oasis', 'brats', 'acdc', 'covid_ct', 'folder')


@dataclasses.dataclass
class SliceRecord:
  """One preprocessed 2-D slice and everything needed to place it back in its volume."""
  image: np.ndarray                      # (H, W, C) float32 in [0, 1]
  subject: str
  slice_index: int
  spacing: Sequence[float]               # (row mm, column mm, slice thickness mm)
  affine: np.ndarray                     # (4, 4) voxel-to-world of the source volume
  orientation: str                       # e.g. 'RAS'
  modalities: Sequence[str]              # one per channel
  intensity: Any                         # (C, 2) per-channel (min, max); one (2,) pair = all
  dataset: str
  label: Optional[np.ndarray] = None     # (H, W) uint8
  volume: str = ''                       # '' = the subject id
  source_shape: Optional[Sequence[int]] = None  # None = the image's own (H, W): no crop
  crop_offset: Sequence[int] = (0, 0)
  lesion_centre: Optional[tuple[float, float]] = None  # (row, col) px; None = not recorded


def _intensity(value: Any, channels: int) -> np.ndarray:
  arr = np.asarray(value, np.float32)
  if arr.shape == (2,):
    arr = np.tile(arr, (channels, 1))
  if arr.shape != (channels, 2):
    raise ValueError(f'intensity must be (min, max) or {channels} such pairs, got {arr.shape}')
  return arr


def encode_slice(rec: SliceRecord) -> bytes:
  """Serialized tf.train.Example for one slice (schema in the module docstring)."""
  image = np.asarray(rec.image)
  if image.ndim != 3 or image.dtype != np.float32:
    raise ValueError(f'image must be (H, W, C) float32, got {image.dtype} {image.shape}')
  if len(rec.modalities) != image.shape[2]:
    raise ValueError(f'{len(rec.modalities)} modality names for {image.shape[2]} channels')
  if rec.dataset not in DATASETS:
    raise ValueError(f'dataset must be one of {DATASETS}, got {rec.dataset!r}')
  features: dict[str, Feature] = {
      'image': [np.ascontiguousarray(image, '<f4').tobytes()],
      'image/shape': np.asarray(image.shape, np.int64),
      'image/dtype': [b'float32'],
      'subject': [rec.subject.encode('utf-8')],
      'slice_index': np.asarray([rec.slice_index], np.int64),
      'spacing': np.asarray(rec.spacing, np.float32).reshape(3),
      'affine': np.asarray(rec.affine, np.float32).reshape(16),
      'orientation': [rec.orientation.encode('utf-8')],
      'modalities': [m.encode('utf-8') for m in rec.modalities],
      'volume': [(rec.volume or rec.subject).encode('utf-8')],
      'intensity': _intensity(rec.intensity, image.shape[2]).reshape(-1),
      'source_shape': np.asarray(rec.source_shape if rec.source_shape is not None
                                 else image.shape[:2], np.int64).reshape(2),
      'crop_offset': np.asarray(rec.crop_offset, np.int64).reshape(2),
      'dataset': [rec.dataset.encode('utf-8')],
  }
  if rec.label is not None:
    label = np.asarray(rec.label)
    if label.shape != image.shape[:2] or label.dtype != np.uint8:
      raise ValueError(f'label must be uint8 {image.shape[:2]}, got {label.dtype} {label.shape}')
    features['label'] = [np.ascontiguousarray(label).tobytes()]
    features['label/shape'] = np.asarray(label.shape, np.int64)
  if rec.lesion_centre is not None:
    centre = np.asarray(rec.lesion_centre, np.float64)
    if centre.shape != (2,) or not np.all(np.isfinite(centre)):
      raise ValueError(f'lesion_centre must be two finite numbers (row, col), got '
                       f'{rec.lesion_centre!r}')
    features['lesion_centre'] = [centre.astype('<f8').tobytes()]
  return encode_example(features)


def _one_bytes(f: Mapping[str, Feature], key: str) -> bytes:
  v = f.get(key)
  if not isinstance(v, list) or len(v) != 1:
    raise RecordFormatError(f'slice record: {key!r} missing or not a single bytes value')
  return v[0]


def _numbers(f: Mapping[str, Feature], key: str, n: Optional[int]) -> np.ndarray:
  v = f.get(key)
  if not isinstance(v, np.ndarray) or (n is not None and v.size != n):
    raise RecordFormatError(f'slice record: {key!r} missing or has the wrong length')
  return v


class _NotCanonical(Exception):
  """The fast path met something it leaves to the general parser."""


def _fast_slice(buf, pixels_only: bool = False, want_label: bool = True) -> Any:
  """`decode_slice(buf)` by `_scan_cached`, or None where the general path must decide.

  Returns exactly what `_decode_slice_general` returns for every record it accepts; a record
  that is malformed, or valid but laid out unusually, gives None (never an error). With
  `pixels_only` it checks everything the same way but returns just (image, label), the label
  only when `want_label` (else None), without building the metadata.
  """
  f = _scan_cached(buf)
  if f is None:
    return None

  def one(key: str) -> tuple[int, int]:
    v = f.get(key)
    if v is None or v[0] != 1 or len(v[1]) != 1:
      raise _NotCanonical
    return v[1][0]

  def text(key: str) -> str:
    s, e = one(key)
    return buf[s:e].decode('utf-8')

  def ints(key: str, n: int) -> list[int]:
    v = f.get(key)
    if v is None or v[0] != 3 or len(v[1][0]) != n:
      raise _NotCanonical
    return v[1][0]

  def floats(key: str, n: int) -> int:
    v = f.get(key)
    if v is None or v[0] != 2 or v[1][1] != n:
      raise _NotCanonical
    return v[1][0]

  try:
    s, e = one('image/dtype')
    if buf[s:e] != b'float32':
      raise _NotCanonical
    shape = tuple(ints('image/shape', 3))
    s, e = one('image')
    if min(shape) < 0 or e - s != 4 * shape[0] * shape[1] * shape[2]:
      raise _NotCanonical
    image = np.frombuffer(buf, '<f4', (e - s) // 4, s).reshape(shape).astype(np.float32)
    label = None
    if 'label' in f:
      lshape = tuple(ints('label/shape', 2))
      s, e = one('label')
      if lshape != shape[:2] or e - s != lshape[0] * lshape[1]:
        raise _NotCanonical
      if want_label:
        label = np.frombuffer(buf, np.uint8, e - s, s).reshape(lshape).copy()
    centre = None
    if 'lesion_centre' in f:
      s, e = one('lesion_centre')
      if e > s:
        if e - s != 16:
          raise _NotCanonical
        centre = struct.unpack_from('<2d', buf, s)
    modalities = f.get('modalities', (1, []))
    if modalities[0] != 1:
      raise _NotCanonical
    modalities = [buf[s:e].decode('utf-8') for s, e in modalities[1]]
    strings = [text(k) for k in ('subject', 'orientation', 'dataset', 'volume')]
    slice_index = ints('slice_index', 1)[0]
    spacing, affine = floats('spacing', 3), floats('affine', 16)
    intensity = floats('intensity', 2 * shape[2])
    source_shape, crop_offset = tuple(ints('source_shape', 2)), tuple(ints('crop_offset', 2))
    if pixels_only:
      return image, label
    spacing = np.frombuffer(buf, '<f4', 3, spacing)
    affine = np.frombuffer(buf, '<f4', 16, affine)
    intensity = np.frombuffer(buf, '<f4', 2 * shape[2], intensity)
    if np.isnan(spacing).any() or np.isnan(affine).any() or np.isnan(intensity).any():
      raise _NotCanonical  # see `_float32s`
    # float64 straight from float32: what the general path's float32 -> float64 casts give.
    return SliceRecord(
        image=image, label=label, subject=strings[0], slice_index=slice_index,
        spacing=tuple(spacing.tolist()), affine=affine.reshape(4, 4).astype(np.float64),
        orientation=strings[1], modalities=modalities,
        intensity=intensity.reshape(shape[2], 2).astype(np.float64),
        dataset=strings[2], volume=strings[3], source_shape=source_shape,
        crop_offset=crop_offset, lesion_centre=centre)
  except (_NotCanonical,) + _FAST_ERRORS:
    return None


def decode_slice(data: bytes) -> SliceRecord:
  """The `SliceRecord` of a serialized slice record (RecordFormatError if malformed)."""
  if isinstance(data, (bytes, bytearray)):
    rec = _fast_slice(data)
    if rec is not None:
      return rec
  return _decode_slice_general(data)


def decode_slice_pixels(data: bytes, *, label: bool = False
                        ) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """(image, label) of `decode_slice(data)`, which checks and raises the same, without
  building the rest (the training sources' hot path). label: the record's label (None if it
  has none) when `label`, else None."""
  if isinstance(data, (bytes, bytearray)):
    got = _fast_slice(data, pixels_only=True, want_label=label)
    if got is not None:
      return got
  rec = _decode_slice_general(data)
  return rec.image, rec.label if label else None


def _decode_slice_general(data: bytes) -> SliceRecord:
  """`decode_slice` by the general parser (`_decode_example_general`)."""
  f = _decode_example_general(data)
  if _one_bytes(f, 'image/dtype') != b'float32':
    raise RecordFormatError('slice record: image/dtype must be float32')
  shape = tuple(int(s) for s in _numbers(f, 'image/shape', 3))
  raw = _one_bytes(f, 'image')
  if len(raw) != 4 * int(np.prod(shape)):
    raise RecordFormatError(f'slice record: image has {len(raw)} bytes for shape {shape}')
  image = np.frombuffer(raw, '<f4').reshape(shape).astype(np.float32)  # copy: owns its memory
  label = None
  if 'label' in f:
    lshape = tuple(int(s) for s in _numbers(f, 'label/shape', 2))
    lraw = _one_bytes(f, 'label')
    if lshape != shape[:2] or len(lraw) != lshape[0] * lshape[1]:
      raise RecordFormatError('slice record: label does not match the image grid')
    label = np.frombuffer(lraw, np.uint8).reshape(lshape).copy()
  centre = None
  if 'lesion_centre' in f:
    craw = _one_bytes(f, 'lesion_centre')
    if craw:  # b'' (what a TF default would write) means absent
      if len(craw) != 16:
        raise RecordFormatError(f'slice record: lesion_centre has {len(craw)} bytes, expected '
                                '16 (two float64)')
      row, col = np.frombuffer(craw, '<f8').tolist()
      centre = (float(row), float(col))
  modalities = f.get('modalities', [])
  return SliceRecord(
      image=image, label=label,
      subject=_one_bytes(f, 'subject').decode('utf-8'),
      slice_index=int(_numbers(f, 'slice_index', 1)[0]),
      spacing=tuple(float(x) for x in _numbers(f, 'spacing', 3)),
      affine=_numbers(f, 'affine', 16).reshape(4, 4).astype(np.float64),
      orientation=_one_bytes(f, 'orientation').decode('utf-8'),
      modalities=[m.decode('utf-8') for m in modalities] if isinstance(modalities, list) else [],
      intensity=_numbers(f, 'intensity', 2 * shape[2]).reshape(shape[2], 2).astype(np.float64),
      dataset=_one_bytes(f, 'dataset').decode('utf-8'),
      volume=_one_bytes(f, 'volume').decode('utf-8'),
      source_shape=tuple(int(v) for v in _numbers(f, 'source_shape', 2)),
      crop_offset=tuple(int(v) for v in _numbers(f, 'crop_offset', 2)),
      lesion_centre=centre)
