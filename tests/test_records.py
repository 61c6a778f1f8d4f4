"""Tests of the hand-written tf.train.Example codec and the slice-record schema.

  .venv/bin/python -m pytest -q tests/test_records.py

The wire format is checked against protobuf itself: `example.proto` / `feature.proto` are
declared here with protobuf's descriptor API (TensorFlow is not installed), and records are
parsed and produced by the real protobuf runtime.
"""

import struct

import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory

from medsr_jax.data import records


def _example_class():
  fd = descriptor_pb2.FileDescriptorProto(name='medsr_test_example.proto',
                                          package='medsr_test', syntax='proto3')
  f = descriptor_pb2.FieldDescriptorProto

  def msg(name, *fields, options=None):
    m = fd.message_type.add(name=name)
    for number, fname, ftype, label, type_name in fields:
      fld = m.field.add(name=fname, number=number, type=ftype, label=label)
      if type_name:
        fld.type_name = type_name
    if options:
      m.options.map_entry = True
    return m

  rep, opt = f.LABEL_REPEATED, f.LABEL_OPTIONAL
  msg('BytesList', (1, 'value', f.TYPE_BYTES, rep, None))
  msg('FloatList', (1, 'value', f.TYPE_FLOAT, rep, None))
  msg('Int64List', (1, 'value', f.TYPE_INT64, rep, None))
  feature = msg('Feature', (1, 'bytes_list', f.TYPE_MESSAGE, opt, '.medsr_test.BytesList'),
                (2, 'float_list', f.TYPE_MESSAGE, opt, '.medsr_test.FloatList'),
                (3, 'int64_list', f.TYPE_MESSAGE, opt, '.medsr_test.Int64List'))
  feature.oneof_decl.add(name='kind')
  for fld in feature.field:
    fld.oneof_index = 0
  features = msg('Features', (1, 'feature', f.TYPE_MESSAGE, rep,
                              '.medsr_test.Features.FeatureEntry'))
  entry = features.nested_type.add(name='FeatureEntry')
  entry.field.add(name='key', number=1, type=f.TYPE_STRING, label=opt)
  entry.field.add(name='value', number=2, type=f.TYPE_MESSAGE, label=opt,
                  type_name='.medsr_test.Feature')
  entry.options.map_entry = True
  msg('Example', (1, 'features', f.TYPE_MESSAGE, opt, '.medsr_test.Features'))
  pool = descriptor_pool.DescriptorPool()
  pool.Add(fd)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName('medsr_test.Example'))


Example = _example_class()


def _record(label=True):
  rng = np.random.default_rng(0)
  return records.SliceRecord(
      image=rng.random((6, 5, 2), dtype=np.float32), subject='OAS1_0001_MR1', slice_index=-3 + 90,
      spacing=(1.0, 1.25, 2.5), affine=np.diag([1.0, -1.25, 2.5, 1.0]), orientation='LAS',
      modalities=['t1', 'flair'], intensity=[(-1024.0, 3071.0), (0.0, 255.0)], dataset='brats',
      label=rng.integers(0, 4, (6, 5)).astype(np.uint8) if label else None,
      volume='OAS1_0001_MR1_mpr1', source_shape=(208, 176), crop_offset=(24, -2))


def test_slice_round_trip():
  for label in (True, False):
    rec = _record(label)
    back = records.decode_slice(records.encode_slice(rec))
    np.testing.assert_array_equal(back.image, rec.image)
    assert (back.label is None) == (not label)
    if label:
      np.testing.assert_array_equal(back.label, rec.label)
    assert (back.subject, back.slice_index, back.orientation, back.dataset) == (
        'OAS1_0001_MR1', 87, 'LAS', 'brats')
    assert back.spacing == (1.0, 1.25, 2.5)
    np.testing.assert_array_equal(back.intensity, [(-1024.0, 3071.0), (0.0, 255.0)])
    assert back.volume == 'OAS1_0001_MR1_mpr1'
    assert back.source_shape == (208, 176) and back.crop_offset == (24, -2)
    assert back.modalities == ['t1', 'flair']
    np.testing.assert_array_equal(back.affine, rec.affine)


def test_protobuf_parses_our_bytes_and_we_parse_protobufs():
  data = records.encode_slice(_record())
  msg = Example()
  msg.ParseFromString(data)
  feat = msg.features.feature
  assert list(feat['image/shape'].int64_list.value) == [6, 5, 2]
  assert list(feat['spacing'].float_list.value) == [1.0, 1.25, 2.5]
  assert [bytes(b) for b in feat['modalities'].bytes_list.value] == [b't1', b'flair']
  # What protobuf re-serializes (its own map order) decodes to the same record.
  again = records.decode_slice(msg.SerializeToString())
  np.testing.assert_array_equal(again.image, _record().image)
  assert again.modalities == ['t1', 'flair'] and again.slice_index == 87
  # And protobuf-written records (negative ints, empty lists) decode.
  other = Example()
  other.features.feature['n'].int64_list.value.extend([-5, 0, 2**40])
  other.features.feature['e'].float_list.value.extend([])
  other.features.feature['b'].bytes_list.value.extend([b'', b'x'])
  got = records.decode_example(other.SerializeToString())
  np.testing.assert_array_equal(got['n'], [-5, 0, 2**40])
  assert got['b'] == [b'', b'x'] and got['e'].size == 0 and got['e'].dtype == np.float32


def test_defaults_for_uncropped_single_volume_slices():
  rec = _record()
  rec.volume, rec.source_shape, rec.crop_offset, rec.intensity = '', None, (0, 0), (0.0, 1.0)
  back = records.decode_slice(records.encode_slice(rec))
  assert back.volume == rec.subject and back.source_shape == (6, 5)
  np.testing.assert_array_equal(back.intensity, [(0.0, 1.0), (0.0, 1.0)])
  rec.intensity = [(0.0, 1.0)] * 3
  with pytest.raises(ValueError, match='intensity'):
    records.encode_slice(rec)


def test_encoding_is_deterministic():
  assert records.encode_slice(_record()) == records.encode_slice(_record())


@pytest.mark.parametrize('data', [b'\x0a\x05abc', b'\x12\x00', b'\x0a\x03\x0a\x01', b'\xff'])
def test_malformed_bytes_raise(data):
  with pytest.raises(records.RecordFormatError):
    records.decode_slice(data)


def test_bad_slices_are_refused():
  rec = _record()
  rec.modalities = ['t1']
  with pytest.raises(ValueError, match='modality'):
    records.encode_slice(rec)
  rec = _record()
  rec.image = rec.image.astype(np.float64)
  with pytest.raises(ValueError, match='float32'):
    records.encode_slice(rec)
  data = records.encode_example({'image': [b'1234'], 'image/shape': np.array([2, 2, 1]),
                                 'image/dtype': [b'float32']})
  with pytest.raises(records.RecordFormatError, match='bytes for shape'):
    records.decode_slice(data)


def test_manifest_round_trip_and_errors(tmp_path):
  from medsr_jax.data import manifest as mf
  from medsr_jax.errors import InputError
  m = mf.Manifest(dataset='oasis', protocol='rdst', settings={'crop': [24, 24]}, channels=1,
                  modalities=['t1'], has_labels=True, slice_shape=[160, 128, 1],
                  splits={'train': mf.Split(['OAS1_0001_MR1'], 3, [mf.Shard(
                      mf.shard_name('train', 0, 1), mf.shard_name('train', 0, 1) + mf.INDEX_SUFFIX,
                      3, 'ab' * 32)])}, complete=True)
  mf.write_manifest(tmp_path, m)
  assert mf.read_manifest(tmp_path) == m
  assert mf.shard_name('val', 2, 8) == 'val-00002-of-00008.tfrecord'
  with pytest.raises(InputError, match='no manifest.json'):
    mf.read_manifest(tmp_path / 'sub' if (tmp_path / 'sub').mkdir() is None else tmp_path)
  text = (tmp_path / 'manifest.json').read_text()
  (tmp_path / 'manifest.json').write_text(text.replace('"num_records": 3,\n  "shards"',
                                                       '"num_records": 4,\n  "shards"'))
  raw = (tmp_path / 'manifest.json').read_text()
  (tmp_path / 'manifest.json').write_text(raw.replace('train-00000-of-00001.tfrecord"',
                                                      '../x.tfrecord"', 1))
  with pytest.raises(InputError, match='invalid shard manifest'):
    mf.read_manifest(tmp_path)
  (tmp_path / 'manifest.json').write_text('{"format": "other"}')
  with pytest.raises(InputError, match='wrong format'):
    mf.read_manifest(tmp_path)
  assert not list(tmp_path.glob('.*tmp*'))


# ---------------------------------------------------------------- the fast path
# pylint: disable=protected-access
#
# `decode_slice`, `decode_slice_pixels` and `decode_example` take a one-pass fast path (with a
# layout cache) for canonically laid-out records and fall back to the general parser for the
# rest; both must give the same values, bit for bit, and the same errors.


def _same(a, b):
  if isinstance(a, records.SliceRecord):
    return type(b) is records.SliceRecord and all(
        _same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
  if isinstance(a, np.ndarray):
    return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and
            a.tobytes() == b.tobytes() and a.flags.writeable == b.flags.writeable and
            a.flags.owndata == b.flags.owndata)
  if isinstance(a, dict):
    return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
  if isinstance(a, (list, tuple)):
    return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
  if isinstance(a, float):
    return type(b) is float and struct.pack('<d', a) == struct.pack('<d', b)
  return type(a) is type(b) and a == b


def _outcome(fn, data):
  try:
    return 'ok', fn(data)
  except Exception as e:  # pylint: disable=broad-except
    return 'error', type(e), str(e)


def _general_pixels(label):
  def fn(data):
    rec = records._decode_slice_general(data)
    return rec.image, rec.label if label else None
  return fn


def _assert_fast_equals_general(data):
  pairs = [(records.decode_slice, records._decode_slice_general),
           (records.decode_example, records._decode_example_general),
           (lambda d: records.decode_slice_pixels(d, label=True), _general_pixels(True)),
           (lambda d: records.decode_slice_pixels(d), _general_pixels(False))]
  for fast, general in pairs:
    got, want = _outcome(fast, data), _outcome(general, data)
    assert got[0] == want[0] and (got[1:] == want[1:] if got[0] == 'error' else
                                  _same(got[1], want[1])), (got[:2], want[:2])


def _random_slice(rng):
  h, w, c = (int(v) for v in rng.integers(1, 7, 3))
  return records.SliceRecord(
      image=rng.random((h, w, c), dtype=np.float32), subject=f's{rng.integers(1000)}',
      slice_index=int(rng.integers(-2**40, 2**40)), spacing=tuple(rng.random(3)),
      affine=rng.normal(size=(4, 4)) * 1e3, orientation='LPS', dataset='brats',
      modalities=[f'm{i}' for i in range(c)], intensity=rng.normal(size=(c, 2)),
      label=rng.integers(0, 4, (h, w)).astype(np.uint8) if rng.random() < 0.5 else None,
      volume='' if rng.random() < 0.5 else 'v1',
      source_shape=None if rng.random() < 0.5 else (int(rng.integers(0, 300)), 9),
      crop_offset=tuple(int(v) for v in rng.integers(-300, 300, 2)),
      lesion_centre=tuple(rng.normal(size=2) * 50) if rng.random() < 0.5 else None)


def test_fast_path_decodes_our_records_exactly_like_the_general_parser():
  rng = np.random.default_rng(0)
  for _ in range(150):  # channels, labels, centres, negative and large ints, empty volumes
    data = records.encode_slice(_random_slice(rng))
    assert records._fast_slice(data) is not None
    _assert_fast_equals_general(data)
    _assert_fast_equals_general(bytearray(data))


def test_fast_path_on_damaged_records_gives_the_general_results_and_errors():
  rng = np.random.default_rng(1)
  for _ in range(60):
    data = records.encode_slice(_random_slice(rng))
    for _ in range(6):
      m, kind, i = bytearray(data), rng.integers(4), int(rng.integers(len(data)))
      if kind == 0:
        m[i] = int(rng.integers(256))  # same length: goes through the layout cache
      elif kind == 1:
        del m[i:]
      elif kind == 2:
        m[i:i] = bytes(rng.integers(0, 256, 2).astype(np.uint8))
      else:
        del m[i:i + 2]
      _assert_fast_equals_general(bytes(m))


def test_layout_cache_tells_equal_lengths_apart():
  # Same length, same structure, other int64 values: the cache hits and re-decodes the ints.
  rec = _record()
  for offset in [(1, 2), (3, 4), (-1, -2), (-3, -4)]:
    rec.crop_offset = offset
    back = records.decode_slice(records.encode_slice(rec))
    assert back.crop_offset == offset
  # Same length, other layout (keys swapped between a bytes and an int64 feature).
  a = records.encode_example({'a': [b'xy'], 'b': np.array([1])})
  b = records.encode_example({'b': [b'xy'], 'a': np.array([1])})
  assert len(a) == len(b) and a != b
  for data in (a, b, a):
    _assert_fast_equals_general(data)
  assert records.decode_example(b)['b'] == [b'xy']


def _entry(key, feature):
  f = records._field
  return f(1, 2, f(1, 2, key.encode()) + f(2, 2, feature))


def test_foreign_encodings_fall_back_to_the_general_parser():
  f = records._field
  unpacked_floats = f(2, 2, b''.join(f(1, 5, struct.pack('<f', v)) for v in (1.5, -2.0)))
  unpacked_ints = f(3, 2, b''.join(f(1, 0, records._varint(v)) for v in (7, -1, 300)))
  two_runs = f(3, 2, f(1, 2, records._varint(5)) + f(1, 2, records._varint(6)))
  snan = f(2, 2, f(1, 2, struct.pack('<I', 0x7F800001) + struct.pack('<f', 3.0)))
  value_first = f(1, 2, f(2, 2, f(1, 2, f(1, 2, b'v'))) + f(1, 2, b'k'))
  cases = {
      'unpacked floats': (f(1, 2, _entry('x', unpacked_floats)), {'x': [1.5, -2.0]}),
      'unpacked ints': (f(1, 2, _entry('x', unpacked_ints)), {'x': [7, -1, 300]}),
      'two packed runs': (f(1, 2, _entry('x', two_runs)), {'x': [5, 6]}),
      'value before key': (f(1, 2, value_first), {'k': [b'v']}),
      'two Features': (f(1, 2, _entry('a', f(1, 2, f(1, 2, b'1')))) +
                       f(1, 2, _entry('b', f(1, 2, f(1, 2, b'2')))), {'a': [b'1'], 'b': [b'2']}),
      'empty Feature': (f(1, 2, _entry('e', b'')), {'e': []}),
  }
  for name, (data, expected) in cases.items():
    assert records._scan(data, 0, len(data)) is None, name
    got = records.decode_example(data)
    assert _same(got, records._decode_example_general(data)), name
    for key, value in expected.items():
      assert list(got[key]) == value, name
  # NaNs (a signalling one here) come out as the general parser makes them, without warnings.
  data = f(1, 2, _entry('n', snan))
  assert records._scan(data, 0, len(data)) is not None
  _assert_fast_equals_general(data)
  rec = _record()
  rec.affine = np.full((4, 4), np.nan)
  _assert_fast_equals_general(records.encode_slice(rec))
