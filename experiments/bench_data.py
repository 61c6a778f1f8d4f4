"""Benchmark: shard preprocessing / decoding speed and grain pipeline batches/s from shards.

  python -m experiments.bench_data                          # RDST and MIASSR, 1/2/4 workers
  python -m experiments.bench_data --workers=1,2 --modes=threads --batches=40

Writes fixture shard directories from the embedded sample (tests/shard_fixtures.py, the sample's
slices repeated to `--num_records` training records) in a temporary directory, then prints:

  * preprocessing: `data_prep.build` slices/s (read NIfTI, select, normalise, crop, encode,
    write) on 8 copies of the sample volume at 1/2/4 workers, when data_prep is present; and
    the record path piece by piece, records/s: encode + frame + write, read one record by
    offset with both CRCs, decode the tf.train.Example, a whole `ShardSource[i]` (random order);
  * pipeline batches/s (and slices/s), one OpenBLAS thread unless OPENBLAS_NUM_THREADS says
    otherwise, for
      rdst    160x128 slices, batch 32, random 96x96 HR patch -> 24x24 LR (bicubic, no blur);
      miassr  180x144 slices, batch 16, 96x96 patch, one scale per batch from the 30 thesis
              scales, LR int(96/s) bicubic + 3x3 blur, HR int(int(96/s)*s);
    with grain reader threads (`pipeline.train_iterator(num_threads=n)`) and with `mp_prefetch`
    worker processes (n workers), after `--warmup` batches.

docs/BENCHMARKS.md: RDST-E trains at 35.6 steps/s (batch 32) on an H100, so a pipeline that keeps
up with a 10x margin needs ~360 batches/s. Timing is measured here, never asserted in tests.
"""

from __future__ import annotations

import os

# Before numpy loads: one OpenBLAS thread per reader (see medsr_jax.data.pipeline, "Speed").
# OPENBLAS_NUM_THREADS=<n> python -m experiments.bench_data overrides it.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

# pylint: disable=wrong-import-position
import contextlib
import importlib.util
import io
import shutil
import tempfile
import time

import grain
import numpy as np
from absl import app, flags

from medsr_jax.data import arbitrary_scale
from medsr_jax.data import manifest as manifest_lib
from medsr_jax.data import pipeline, records, sample, shards
from medsr_jax.io import tfrecord
from tests import shard_fixtures

_SETTINGS = flags.DEFINE_list('settings', ['rdst', 'miassr'], 'Pipelines to time.')
_WORKERS = flags.DEFINE_list('workers', ['1', '2', '4'], 'Thread / worker counts.')
_MODES = flags.DEFINE_list('modes', ['threads', 'processes'], 'threads and/or processes.')
_BATCHES = flags.DEFINE_integer('batches', 60, 'Timed batches per measurement.')
_WARMUP = flags.DEFINE_integer('warmup', 8, 'Untimed batches first (worker start-up).')
_RECORDS = flags.DEFINE_integer('num_records', 1024, 'Training records in each fixture.')
_DIR = flags.DEFINE_string('dir', '', 'Where to write the fixtures (default: a temp dir).')

SETTINGS = {
    'rdst': dict(crop_hw=(160, 128), batch=32),
    'miassr': dict(crop_hw=(180, 144), batch=16),
}


def _rate(n: int, seconds: float) -> float:
  return n / seconds if seconds > 0 else float('inf')


def bench_data_prep(directory: str, workers: list[int]) -> None:
  """Prints data_prep.build slices/s on 8 copies of the sample volume (folder layout)."""
  from data_prep import build  # pylint: disable=import-outside-toplevel
  src = os.path.join(directory, 'volumes')
  os.makedirs(src)
  for i in range(8):
    for name, suffix in ((sample.T1_FILE, ''), (sample.TISSUE_FILE, '_seg')):
      shutil.copy(sample.SAMPLE_DIR / name, os.path.join(src, f'sub-{i:02d}{suffix}.nii.gz'))
  print('\n| data_prep.build (8 volumes 181x217x181, folder layout, crop 160x128) | workers | '
        'slices/s |\n|---|---:|---:|')
  for n in workers:
    out = os.path.join(directory, f'prep{n}')
    t = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # its summary lines
      build.main(['--dataset=folder', f'--src={src}', f'--out={out}', '--split=random:0',
                  f'--workers={n}', '--crop=160x128', '--quiet'])
    seconds = time.perf_counter() - t
    total = sum(sp.num_records for sp in manifest_lib.read_manifest(out).splits.values())
    print(f'| {total} slices | {n} | {_rate(total, seconds):,.0f} |')


def bench_preprocessing(directory: str) -> None:
  """Prints records/s of each step of the record path: write, read + CRC, decode, source."""
  images = sample.load_sample((160, 128))['train'].images
  recs = [records.SliceRecord(image=np.ascontiguousarray(images[i % len(images)]),
                              subject='colin27', slice_index=i, spacing=(1.0, 1.0, 1.0),
                              affine=np.eye(4), orientation='RAS', modalities=['t1'],
                              intensity=(0.0, 1.0), dataset='oasis') for i in range(512)]
  path = os.path.join(directory, 'bench.tfrecord')
  t = time.perf_counter()
  with tfrecord.TFRecordWriter(path) as w:
    offsets = [w.write(records.encode_slice(r)) for r in recs]
  t_write = time.perf_counter() - t
  order = np.random.default_rng(0).permutation(len(offsets))
  with open(path, 'rb') as f:
    t = time.perf_counter()
    blobs = [tfrecord.read_record_at(f, offsets[i])[0] for i in order]
    t_read = time.perf_counter() - t
  t = time.perf_counter()
  for b in blobs:
    records.decode_slice(b)
  t_decode = time.perf_counter() - t
  src = shards.ShardSource(os.path.join(directory, 'rdst'))
  idx = np.random.default_rng(1).permutation(len(src))[:512]
  t = time.perf_counter()
  for i in idx:
    src[int(i)]  # pylint: disable=pointless-statement
  t_source = time.perf_counter() - t
  print('\n| preprocessing step (160x128 float32 slice records) | records/s |\n|---|---:|')
  print(f'| encode + frame + write | {_rate(len(recs), t_write):,.0f} |')
  print(f'| read by offset + both CRCs (random order) | {_rate(len(blobs), t_read):,.0f} |')
  print(f'| decode tf.train.Example -> SliceRecord | {_rate(len(blobs), t_decode):,.0f} |')
  print('| ShardSource[i] (read + CRC + decode), random order | '
        f'{_rate(len(idx), t_source):,.0f} |')


def _dataset(setting: str, directory: str):
  src = shards.ShardSource(os.path.join(directory, setting))
  b = SETTINGS[setting]['batch']
  if setting == 'rdst':
    return pipeline.make_train_dataset(src, global_batch_size=b, lr_patch=24, scale=4, seed=0)
  return arbitrary_scale.make_train_dataset(src, global_batch_size=b, seed=0)


def _iterator(ds, mode: str, n: int):
  if mode == 'threads':
    return pipeline.train_iterator(ds, num_threads=n, prefetch_buffer_size=2 * n)
  options = grain.MultiprocessingOptions(num_workers=n, per_worker_buffer_size=2)
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0)).mp_prefetch(options))


def bench_pipeline(setting: str, directory: str, mode: str, n: int) -> tuple[float, float]:
  """(batches/s, seconds to the first batch)."""
  ds = _dataset(setting, directory)
  t0 = time.perf_counter()
  it = _iterator(ds, mode, n)
  next(it)
  first = time.perf_counter() - t0
  for _ in range(_WARMUP.value):
    next(it)
  t = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(it)
  rate = _rate(_BATCHES.value, time.perf_counter() - t)
  if hasattr(it, 'close'):
    it.close()
  return rate, first


def main(argv):
  del argv
  with tempfile.TemporaryDirectory(dir=_DIR.value or None) as directory:
    for setting, spec in SETTINGS.items():
      if setting in _SETTINGS.value or setting == 'rdst':
        reps = -(-_RECORDS.value // len(sample.load_sample(spec['crop_hw'])['train']))
        shard_fixtures.write_shards(
            os.path.join(directory, setting), crop_hw=spec['crop_hw'],
            num_shards={'train': 8}, repeat=reps, max_slices={'train': _RECORDS.value})
    print(f'{os.cpu_count()} CPU cores, OPENBLAS_NUM_THREADS={os.environ["OPENBLAS_NUM_THREADS"]}; '
          f'{_RECORDS.value} training records per fixture')
    if importlib.util.find_spec('data_prep.build') is not None:
      bench_data_prep(directory, [int(v) for v in _WORKERS.value])
    else:
      print('data_prep.build not found: timing the record path only')
    bench_preprocessing(directory)
    print('\n| pipeline | batch | mode | workers | batches/s | slices/s | first batch (s) |')
    print('|---|---:|---|---:|---:|---:|---:|')
    for setting in _SETTINGS.value:
      for mode in _MODES.value:
        for n in (int(v) for v in _WORKERS.value):
          rate, first = bench_pipeline(setting, directory, mode, n)
          b = SETTINGS[setting]['batch']
          print(f'| {setting} | {b} | {mode} | {n} | {rate:.1f} | {rate * b:,.0f} | '
                f'{first:.2f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
