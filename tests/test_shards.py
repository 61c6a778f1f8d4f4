"""Tests of the shard source (medsr_jax.data.shards) and of `main` training from shards.

Fixture shard directories are written by tests/shard_fixtures.py from the embedded sample.

  .venv/bin/python -m pytest -q tests/test_shards.py
"""

import hashlib
import json
import os
import pickle

import ml_collections
import numpy as np
import pytest

from medsr_jax import main as main_lib
from medsr_jax.data import manifest as manifest_lib
from medsr_jax.data import pipeline, records, sample, shards, sources
from medsr_jax.errors import InputError
from medsr_jax.io import tfrecord
from tests import shard_fixtures
from tests import tiny_config as tiny_config_lib


@pytest.fixture(scope='module')
def shard_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('shards')
  written = shard_fixtures.write_shards(directory)
  return str(directory), written


@pytest.fixture(scope='module')
def brats_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('brats')
  written = shard_fixtures.write_shards(
      directory, dataset='brats', protocol='msgan', modalities=('t1ce', 't1', 't2', 'flair'),
      num_shards={'train': 2}, max_slices={'train': 10})
  return str(directory), written


def _copy(src_dir, dst):
  os.makedirs(dst)
  for name in os.listdir(src_dir):
    with open(os.path.join(src_dir, name), 'rb') as f, open(os.path.join(dst, name), 'wb') as g:
      g.write(f.read())
  return str(dst)


def _batches_equal(a, b):
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


# ---------------------------------------------------------------- reading


def test_reads_every_record_in_order_across_shards(shard_dir):
  directory, written = shard_dir
  src = shards.ShardSource(directory, 'train')
  assert len(src) == len(written['train'])
  assert len({src.locate(i)[0] for i in range(len(src))}) == 3
  for i in range(len(src)):
    np.testing.assert_array_equal(src[i], written['train'][i])
  np.testing.assert_array_equal(src[-1], written['train'][-1])
  with pytest.raises(IndexError):
    src[len(src)]  # pylint: disable=pointless-statement
  rec = src.record(5)
  assert rec.subject == 'colin27' and rec.dataset == 'oasis' and rec.label.shape == (32, 32)
  assert src.slice_shape == (32, 32, 1)


def test_pickles_to_paths_and_reopens_lazily(shard_dir):
  directory, written = shard_dir
  src = shards.ShardSource(directory, 'train')
  src[0]  # pylint: disable=pointless-statement  (opens a file, loads the indexes)
  blob = pickle.dumps(src)
  assert len(blob) < 2000  # paths and counts, no arrays or files
  copy = pickle.loads(blob)
  assert copy._offsets is None  # pylint: disable=protected-access
  np.testing.assert_array_equal(copy[40], written['train'][40])


def test_channel_selection_and_labels(brats_dir):
  directory, written = brats_dir
  src = shards.ShardSource(directory, 'train', modalities=('flair', 't1ce'), with_label=True)
  item = src[3]
  np.testing.assert_array_equal(item['image'], written['train'][3][..., [3, 0]])
  assert item['label'].shape == (32, 32) and src.modalities == ['flair', 't1ce']
  assert src.slice_shape == (32, 32, 2)
  with pytest.raises(InputError, match='dwi'):
    shards.ShardSource(directory, 'train', modalities=('dwi',))
  with pytest.raises(InputError, match="no 'val' split"):
    shards.ShardSource(directory, 'val')


def test_pipeline_over_shards_equals_the_in_memory_pipeline(shard_dir):
  directory, written = shard_dir
  kwargs = dict(global_batch_size=4, lr_patch=4, scale=4, seed=11)
  from_shards = pipeline.train_iterator(
      pipeline.make_train_dataset(shards.ShardSource(directory), **kwargs), num_threads=2)
  in_memory = pipeline.train_iterator(
      pipeline.make_train_dataset(sources.ArraySliceSource(written['train']), **kwargs))
  for _ in range(4):
    _batches_equal(next(from_shards), next(in_memory))


class _Recording:
  """Wraps a source and records the record indices it is asked for."""

  def __init__(self, source):
    self.source, self.reads = source, []

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    self.reads.append(int(i))
    return self.source[i]


def test_each_process_reads_only_its_share(shard_dir):
  directory, _ = shard_dir
  kwargs = dict(global_batch_size=8, lr_patch=4, scale=4, seed=2)
  whole = _Recording(shards.ShardSource(directory))
  single = pipeline.make_train_dataset(whole, **kwargs)
  globals_ = [single[k] for k in range(3)]
  shares = []
  for p in range(4):
    rec = _Recording(shards.ShardSource(directory))
    ds = pipeline.make_train_dataset(rec, process_index=p, process_count=4, **kwargs)
    shares.append(([ds[k] for k in range(3)], rec.reads))
  for k in range(3):  # Concatenated local batches are the global batch ...
    _batches_equal({key: np.concatenate([s[0][k][key] for s in shares]) for key in ('lr', 'hr')},
                   globals_[k])
  # ... and each process read 2 of every 8 records: its own, nothing else.
  for p, (_, reads) in enumerate(shares):
    expected = [whole.reads[k * 8 + p * 2 + j] for k in range(3) for j in range(2)]
    assert sorted(reads) == sorted(expected)


def test_iterator_state_resumes_exactly(shard_dir):
  directory, _ = shard_dir
  kwargs = dict(global_batch_size=4, lr_patch=4, scale=4, seed=5, noise_sigma=0.01)
  it = pipeline.train_iterator(pipeline.make_train_dataset(shards.ShardSource(directory),
                                                           **kwargs), num_threads=2)
  for _ in range(30):  # past the end of the first epoch (93 slices)
    next(it)
  state = it.get_state()
  assert state == {'next_index': 30}
  expected = [next(it) for _ in range(2)]
  fresh = pipeline.train_iterator(pipeline.make_train_dataset(shards.ShardSource(directory),
                                                              **kwargs))
  fresh.set_state(state)
  for x, y in zip([next(fresh) for _ in range(2)], expected):
    _batches_equal(x, y)


# ---------------------------------------------------------------- damage


def test_corrupt_byte_names_file_and_offset(shard_dir, tmp_path):
  directory = _copy(shard_dir[0], tmp_path / 'damaged')
  src = shards.ShardSource(directory)
  path, offset = src.locate(40)
  assert os.path.basename(path).startswith('train-00001-of-00003')
  with open(path, 'r+b') as f:  # One byte inside the image data of record 40.
    f.seek(offset + 12 + 100)
    byte = f.read(1)
    f.seek(offset + 12 + 100)
    f.write(bytes([byte[0] ^ 0x01]))
  with pytest.raises(tfrecord.CorruptRecordError) as err:
    shards.ShardSource(directory)[40]  # pylint: disable=expression-not-assigned
  assert err.value.path == path and err.value.offset == offset
  assert path in str(err.value) and f'offset {offset}' in str(err.value)
  # Through the pipeline: every batch of the first epoch reads every record once.
  ds = pipeline.make_train_dataset(shards.ShardSource(directory), global_batch_size=31,
                                   lr_patch=4, scale=4, seed=0)
  with pytest.raises(tfrecord.CorruptRecordError, match=f'{path} at byte offset {offset}'):
    for k in range(3):
      ds[k]  # pylint: disable=pointless-statement
  it = pipeline.train_iterator(ds, num_threads=2)  # raised from a reader thread too
  with pytest.raises(tfrecord.CorruptRecordError, match=f'{path} at byte offset {offset}'):
    for _ in range(3):
      next(it)


def test_truncated_shard_and_bad_index(shard_dir, tmp_path):
  directory = _copy(shard_dir[0], tmp_path / 'cut')
  src = shards.ShardSource(directory)
  last = len(src) - 1
  path, offset = src.locate(last)
  os.truncate(path, os.path.getsize(path) - 3)
  with pytest.raises(tfrecord.CorruptRecordError, match=f'offset {offset}.*truncated'):
    shards.ShardSource(directory)[last]  # pylint: disable=expression-not-assigned
  index = path + manifest_lib.INDEX_SUFFIX
  np.save(index, np.load(index)[:-1])
  with pytest.raises(InputError, match='bad shard index'):
    shards.ShardSource(directory)[0]  # pylint: disable=expression-not-assigned
  np.save(index, np.load(index)[:0].tolist() + [1] * 31)
  with pytest.raises(InputError, match=os.path.basename(index)):
    shards.ShardSource(directory)[0]  # pylint: disable=expression-not-assigned


def test_bad_length_crc_and_bad_slice_records_name_file_and_offset(shard_dir, tmp_path):
  directory = _copy(shard_dir[0], tmp_path / 'bad')
  src = shards.ShardSource(directory)
  path, offset = src.locate(1)
  with open(path, 'r+b') as f:  # the length CRC of record 1
    f.seek(offset + 9)
    byte = f.read(1)
    f.seek(offset + 9)
    f.write(bytes([byte[0] ^ 0x10]))
  with pytest.raises(tfrecord.CorruptRecordError, match=f'offset {offset}: length CRC'):
    shards.ShardSource(directory)[1]  # pylint: disable=expression-not-assigned
  # A record with good CRCs that is not a slice record: the same error from [i] and record(i).
  data = list(tfrecord.read_records(path, verify=False))
  data[2] = records.encode_example({'image': [b'1234'], 'image/shape': np.array([2, 2, 1]),
                                    'image/dtype': [b'float32']})
  with tfrecord.TFRecordWriter(path) as w:
    offsets = [w.write(d) for d in data]
  np.save(path + manifest_lib.INDEX_SUFFIX, np.asarray(offsets, np.int64))
  src = shards.ShardSource(directory)
  for read in (src.__getitem__, src.record):
    with pytest.raises(InputError, match=f'{path} at byte offset {offsets[2]}: .*bytes for '
                                         'shape'):
      read(2)
  np.testing.assert_array_equal(src[3], shard_dir[1]['train'][3])


def test_incomplete_or_missing_directories(tmp_path):
  shard_fixtures.write_shards(tmp_path / 'partial', complete=False,
                              num_shards={'train': 1}, max_slices={'train': 4})
  with pytest.raises(InputError, match='not complete'):
    shards.ShardSource(tmp_path / 'partial')
  assert len(shards.ShardSource(tmp_path / 'partial', allow_incomplete=True)) == 4
  with pytest.raises(InputError, match='not found'):
    shards.ShardSource(tmp_path / 'nothing')


# ---------------------------------------------------------------- config and main


def test_source_from_config_reads_splits_from_the_manifest(shard_dir):
  directory, written = shard_dir
  cfg = ml_collections.ConfigDict(dict(source='sample', path=directory, crop_hw=(160, 128),
                                       modalities=()))
  train = sources.source_from_config(cfg, 'train')
  assert isinstance(train, shards.ShardSource) and len(train) == len(written['train'])
  test = sources.source_from_config(cfg, 'test')
  assert isinstance(test, sources.ArraySliceSource)
  np.testing.assert_array_equal(np.stack([test[i] for i in range(len(test))]), written['test'])
  assert test.slice_index.shape == (len(test),) and test.subject[0] == 'colin27'


def test_main_trains_from_shards(shard_dir, tmp_path):
  directory, written = shard_dir
  config = tiny_config_lib.get_config('steps=3')
  config.data.path = directory
  summary = main_lib.run(config, str(tmp_path / 'run'))
  results = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert summary['model']['psnr_mean'] > 0
  assert len(results['bicubic']['psnr']) == len(results['model']['psnr']) == len(written['test'])
  expected_ids = sample.load_sample((32, 32))['test'].slice_index.tolist()
  assert results['slice_index'] == expected_ids  # val/test come from the manifest's splits
  assert (tmp_path / 'run' / 'export' / 'params.npz').exists()
  assert sorted(p.name for p in (tmp_path / 'run' / 'checkpoints').iterdir()
                if p.name.isdigit()) == ['3']


def test_shuffled_stream_is_grains_shuffled_source(shard_dir):
  # `pipeline.shuffled_stream` shuffles indices and then reads (no per-read metrics); the items
  # are those of grain's MapDataset.source(...).shuffle(...).repeat().
  import grain  # pylint: disable=import-outside-toplevel
  src = shards.ShardSource(shard_dir[0])
  ours = pipeline.shuffled_stream(src, 7)
  grains = grain.MapDataset.source(src).shuffle(seed=pipeline.derive_seeds(7)[0]).repeat()
  for i in list(range(0, 2 * len(src), 7)) + [len(src) - 1, len(src)]:
    np.testing.assert_array_equal(ours[i], grains[i])
  assert pickle.loads(pickle.dumps(ours))[3].shape == (32, 32, 1)


# ---------------------------------------------------------------- batches stay bit-identical
#
# Digests of fixed-seed batches from shards, computed with the pipeline as it was before the
# fast decode / read / transform paths (issue 13, point 5) and stored here: those paths must not
# change a single bit of any batch. Bicubic and blur are float64 BLAS products, whose last bits
# may differ on another CPU or BLAS build; `_blas_fingerprint` checks them, and where it differs
# the digests of BLAS-made arrays are not comparable (the crops still are, and the LR is checked
# against `degradation.degrade` of the HR crop instead).

def _digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f'{a.dtype.str}{a.shape}'.encode())
    h.update(a.tobytes())
  return h.hexdigest()[:24]


def _blas_fingerprint() -> str:
  from medsr_jax.data import degradation  # pylint: disable=import-outside-toplevel
  x = np.random.default_rng(0).random((96, 96, 1), dtype=np.float32)
  return _digest(degradation.resize_bicubic(x, (41, 41)), degradation.resize_bicubic(x, (95, 95)),
                 degradation.gaussian_blur_3x3(degradation.resize_bicubic(x, (24, 24))))


def _golden_sources(directory) -> dict:
  """Three shard directories: RDST-sized, MIASSR-sized, 4-channel BraTS-like with labels."""
  directory = str(directory)
  specs = {'rdst': dict(crop_hw=(160, 128), max_slices={'train': 40}),
           'miassr': dict(crop_hw=(180, 144), max_slices={'train': 40}),
           'brats': dict(crop_hw=(32, 32), max_slices={'train': 12}, dataset='brats',
                         protocol='msgan', modalities=('t1ce', 't1', 't2', 'flair'))}
  for name, spec in specs.items():
    shard_fixtures.write_shards(os.path.join(directory, name), num_shards={'train': 2}, **spec)
  return {name: os.path.join(directory, name) for name in specs}


def _golden_batches(dirs) -> dict:
  """{name: [batch, ...]} of the fixed-seed streams whose digests are stored below."""
  from medsr_jax.data import arbitrary_scale, transforms  # pylint: disable=import-outside-toplevel
  rdst = pipeline.make_train_dataset(shards.ShardSource(dirs['rdst']), global_batch_size=32,
                                     lr_patch=24, scale=4, seed=0)
  miassr = arbitrary_scale.make_train_dataset(shards.ShardSource(dirs['miassr']),
                                              global_batch_size=16, seed=0)
  noisy = pipeline.make_train_dataset(
      shards.ShardSource(dirs['brats'], modalities=('flair', 't1ce')), global_batch_size=4,
      lr_patch=8, scale=4, seed=3, blur=True, noise_sigma=0.01)
  msgan = pipeline.local_batches(pipeline.transformed_stream(
      shards.ShardSource(dirs['brats'], with_label=True),
      transforms.MsganTriple((24, 24), 4.0), seed=5), global_batch_size=4)
  return {name: [ds[k] for k in (0, 1, 7)]
          for name, ds in (('rdst', rdst), ('miassr', miassr), ('noisy', noisy),
                           ('msgan', msgan))}


def _golden_digests(batches_by_name: dict) -> dict:
  out = {'blas': _blas_fingerprint()}
  for name, batches in batches_by_name.items():
    for k, batch in zip((0, 1, 7), batches):
      for key in sorted(batch):
        out[f'{name}/{k}/{key}'] = _digest(batch[key])
  return out


_GOLDEN = {  # computed with the code before issue 13 point 5 (tests/test_shards.py there)
    'blas': '931557b42ccf3bc234dd3dbe',
    'miassr/0/hr': 'ff5aa52f9e8c372773bc397e',
    'miassr/0/lr': 'a27773e0b56eefc02f7d88a2',
    'miassr/0/scale': 'cfd9706a5821fd83465022e6',
    'miassr/1/hr': 'f24aca727dd5ae5f1e9a136c',
    'miassr/1/lr': '55dbdeee8bf41ade74f8954d',
    'miassr/1/scale': 'd62f87726f80a6751c3b76d4',
    'miassr/7/hr': '89fb17a9d7dc842bbdeb2127',
    'miassr/7/lr': 'bc0d8e0eeb599ab46dabf91d',
    'miassr/7/scale': '1e17d083034e69e3ccdd3cfa',
    'msgan/0/hr': '05a1f67933b1956951464fef',
    'msgan/0/hr2': 'ab094cae36090b3093d499c5',
    'msgan/0/lr': 'a7b351e02397713e325c68e1',
    'msgan/1/hr': '1c9c3b851e6e997e457584b2',
    'msgan/1/hr2': 'e2ee3e927c1dcbd93360ed7c',
    'msgan/1/lr': '3d932affff2b8c2e2f80626b',
    'msgan/7/hr': '6e2e9279b50b5fcdd65a6b75',
    'msgan/7/hr2': 'bc29069a5889f8ff436fba54',
    'msgan/7/lr': '12249a8df42a30d91f1e1fd8',
    'noisy/0/hr': '1e666a6ee8a5f8c151c59ca3',
    'noisy/0/lr': '36449403ba48be6073a121dc',
    'noisy/1/hr': 'a0f818e8d96b0b15a33dd3bb',
    'noisy/1/lr': 'f5976bf75ee32dae6b142d32',
    'noisy/7/hr': 'a829a0af7ee621cd2a99eb27',
    'noisy/7/lr': '07039f99c626bb38da3f0fd1',
    'rdst/0/hr': 'c8756077e0d0684d990e7745',
    'rdst/0/lr': 'a6ebaf1628061ea426a3142c',
    'rdst/1/hr': 'e7bf6bc1499b85aa90b6b423',
    'rdst/1/lr': 'cbccf8271e04c878107da55c',
    'rdst/7/hr': '3f24ef355be2499d3f1e13a9',
    'rdst/7/lr': '2496cb8aead5980ab309705b',
}


@pytest.fixture(scope='module')
def golden_dirs(tmp_path_factory):
  return _golden_sources(tmp_path_factory.mktemp('golden'))


def test_fixed_seed_batches_equal_the_digests_from_before_the_fast_paths(golden_dirs):
  from medsr_jax.data import degradation  # pylint: disable=import-outside-toplevel
  batches = _golden_batches(golden_dirs)
  got = _golden_digests(batches)
  assert sorted(got) == sorted(_GOLDEN)
  crops_only = [k for k in got if k.startswith('rdst/') and k.endswith('/hr')]
  for k in crops_only:
    assert got[k] == _GOLDEN[k], k
  # Whatever the BLAS: each LR is exactly the degradation of its HR crop.
  for batch in batches['rdst']:
    for lr, hr in zip(batch['lr'], batch['hr']):
      np.testing.assert_array_equal(lr, degradation.degrade(hr, 4, lr_hw=(24, 24)))
  if got['blas'] != _GOLDEN['blas']:
    pytest.skip('this BLAS rounds bicubic products differently from the one the digests were '
                'made with; only the crops were compared')
  assert got == _GOLDEN
