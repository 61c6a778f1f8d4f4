"""Tests of the shard source (medsr_jax.data.shards) and of `main` training from shards.

Fixture shard directories are written by tests/shard_fixtures.py from the embedded sample.

  .venv/bin/python -m pytest -q tests/test_shards.py
"""

import json
import os
import pickle

import ml_collections
import numpy as np
import pytest

from medsr_jax import main as main_lib
from medsr_jax.data import manifest as manifest_lib
from medsr_jax.data import pipeline, sample, shards, sources
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
