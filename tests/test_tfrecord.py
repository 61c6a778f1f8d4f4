"""Tests for medsr_jax.io.tfrecord: framing, round trip, random access, corruption detection."""

import os
import struct

import google_crc32c
import pytest

from medsr_jax.errors import InputError
from medsr_jax.io import tfrecord

RECORDS = [b"", b"a", b"hello world", bytes(range(256)) * 5]


def _mask(crc):
  # Written out independently of the module under test (TFRecord spec).
  rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
  return (rotated + 0xA282EAD8) & 0xFFFFFFFF


def _write(path, records=RECORDS):
  with tfrecord.TFRecordWriter(path) as w:
    return [w.write(r) for r in records]


def test_crc32c_known_vector():
  assert google_crc32c.value(b"123456789") == 0xE3069283
  assert tfrecord.masked_crc32c(b"123456789") == _mask(0xE3069283)


def test_round_trip_and_offsets(tmp_path):
  path = tmp_path / "a.tfrecord"
  offsets = _write(path)
  assert list(tfrecord.read_records(path)) == RECORDS
  assert tfrecord.index_records(path) == offsets
  assert tfrecord.index_records(path, verify=False) == offsets
  assert offsets[0] == 0
  expected = [0]
  for r in RECORDS[:-1]:
    expected.append(expected[-1] + 16 + len(r))
  assert offsets == expected
  # Random access, by path and through one open handle.
  assert tfrecord.read_record_at(path, offsets[2]) == (RECORDS[2], offsets[3])
  with open(path, "rb") as f:
    for i in reversed(range(len(RECORDS))):
      data, nxt = tfrecord.read_record_at(f, offsets[i])
      assert data == RECORDS[i]
      assert nxt == (offsets[i + 1] if i + 1 < len(RECORDS) else os.path.getsize(path))


def test_framing_bytes_independent(tmp_path):
  path = tmp_path / "b.tfrecord"
  _write(path, [b"abc", b"xyz12"])
  raw = path.read_bytes()
  pos = 0
  for data in (b"abc", b"xyz12"):
    (length,) = struct.unpack_from("<Q", raw, pos)
    assert length == len(data)
    (len_crc,) = struct.unpack_from("<I", raw, pos + 8)
    assert len_crc == _mask(google_crc32c.value(raw[pos:pos + 8]))
    assert raw[pos + 12:pos + 12 + length] == data
    (data_crc,) = struct.unpack_from("<I", raw, pos + 12 + length)
    assert data_crc == _mask(google_crc32c.value(data))
    pos += 16 + length
  assert pos == len(raw)


def _flip(path, index):
  raw = bytearray(path.read_bytes())
  raw[index] ^= 0x01
  path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["data", "length"])
def test_flipped_byte_is_reported_with_offset(tmp_path, where):
  path = tmp_path / "c.tfrecord"
  offsets = _write(path)
  bad = offsets[2]  # b"hello world"
  _flip(path, bad + (12 + 3 if where == "data" else 0))
  with pytest.raises(tfrecord.CorruptRecordError) as info:
    list(tfrecord.read_records(path))
  assert info.value.offset == bad
  assert str(path) in str(info.value) and f"offset {bad}" in str(info.value)
  assert isinstance(info.value, InputError)
  with pytest.raises(tfrecord.CorruptRecordError, match=f"offset {bad}"):
    tfrecord.read_record_at(path, bad)
  with pytest.raises(tfrecord.CorruptRecordError, match=f"offset {bad}"):
    tfrecord.index_records(path)
  # Records before the damage still read fine.
  assert tfrecord.read_record_at(path, offsets[1])[0] == RECORDS[1]
  if where == "data":  # verify=False skips the CRC checks.
    assert len(list(tfrecord.read_records(path, verify=False))) == len(RECORDS)


def test_flipped_crc_byte_is_reported(tmp_path):
  path = tmp_path / "d.tfrecord"
  offsets = _write(path)
  _flip(path, os.path.getsize(path) - 1)  # last byte: data CRC of the last record
  with pytest.raises(tfrecord.CorruptRecordError, match="data CRC") as info:
    list(tfrecord.read_records(path))
  assert info.value.offset == offsets[-1]


@pytest.mark.parametrize("cut", [1, 4, 5, 100, 1290])
def test_truncated_file(tmp_path, cut):
  path = tmp_path / "e.tfrecord"
  offsets = _write(path)
  raw = path.read_bytes()
  path.write_bytes(raw[:-cut])
  with pytest.raises(tfrecord.CorruptRecordError, match="truncated") as info:
    list(tfrecord.read_records(path))
  assert info.value.offset == offsets[-1]
  with pytest.raises(tfrecord.CorruptRecordError, match="truncated"):
    tfrecord.index_records(path, verify=False)


def test_offset_past_end_and_missing_file(tmp_path):
  path = tmp_path / "f.tfrecord"
  _write(path)
  with pytest.raises(tfrecord.CorruptRecordError, match="end of file"):
    tfrecord.read_record_at(path, os.path.getsize(path))
  with pytest.raises(InputError, match="cannot read"):
    list(tfrecord.read_records(tmp_path / "missing.tfrecord"))


def test_empty_file_has_no_records(tmp_path):
  path = tmp_path / "g.tfrecord"
  _write(path, [])
  assert path.stat().st_size == 0
  assert list(tfrecord.read_records(path)) == []
  assert tfrecord.index_records(path) == []


def test_grain_reads_our_files(tmp_path):
  grain = pytest.importorskip("grain")
  path = tmp_path / "h.tfrecord"
  _write(path)
  assert [bytes(r) for r in grain.experimental.TFRecordIterDataset(str(path))] == RECORDS
