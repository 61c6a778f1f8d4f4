"""Tests of the hand-written tf.train.Example codec and the slice-record schema.

  .venv/bin/python -m pytest -q tests/test_records.py

The wire format is checked against protobuf itself: `example.proto` / `feature.proto` are
declared here with protobuf's descriptor API (TensorFlow is not installed), and records are
parsed and produced by the real protobuf runtime.
"""

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
