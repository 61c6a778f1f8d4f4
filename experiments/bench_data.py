"""Benchmark: shard preprocessing / decoding speed and grain pipeline batches/s from shards.

  python -m experiments.bench_data                          # RDST and MIASSR, 1/2/4 workers
  python -m experiments.bench_data --workers=1,2 --modes=threads --batches=40
  python -m experiments.bench_data --workers= --rounds=5    # the per-core comparison only

Writes fixture shard directories from the embedded sample (tests/shard_fixtures.py, the sample's
slices repeated to `--num_records` training records) in a temporary directory, then prints:

  * preprocessing: `data_prep.build` slices/s (read NIfTI, select, normalise, crop, encode,
    write) on 8 copies of the sample volume at 1/2/4 workers, when data_prep is present; and
    the record path piece by piece, records/s: encode + frame + write, read one record by
    offset with both CRCs, decode the tf.train.Example (general parser = the decoder before
    issue 13, then the fast path), a whole `ShardSource[i]` (random order), general and fast;
  * per core: batches/s of one core (the main thread, no reader threads, one OpenBLAS thread),
    wall clock and per CPU-second (`time.process_time`, steadier on a busy machine), medians of
    `--rounds` rounds that alternate the general paths (the code before issue 13 point 5: the
    general record parser, buffered reads, `degradation.degrade` / `resize_bicubic` through
    `np.tensordot`, grain's metered `MapDataset.source`) with the fast paths of today; both
    give the same batches, bit for bit (tests/test_shards.py);
  * pipeline batches/s (and slices/s), one OpenBLAS thread unless OPENBLAS_NUM_THREADS says
    otherwise, for
      rdst    160x128 slices, batch 32, random 96x96 HR patch -> 24x24 LR (bicubic, no blur);
      miassr  180x144 slices, batch 16, 96x96 patch, one scale per batch from the 30 thesis
              scales, LR int(96/s) bicubic + 3x3 blur, HR int(int(96/s)*s);
    with grain reader threads (`pipeline.train_iterator(num_threads=n)`) and with `mp_prefetch`
    worker processes (n workers), after `--warmup` batches.

docs/BENCHMARKS.md: RDST-E trains at 35.6 steps/s (batch 32) on an H100, so one core feeding
three times that needs ~110 batches/s, and a pipeline that keeps up with a 10x margin ~360.
Timing is measured here, never asserted in tests. With 1024 records, grain's `index_shuffle`
walks a 2^16 cycle (~30 us a slice, about a tenth of the fast RDST batch); from ~33k slices
(OASIS-size) it costs a few us.
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
import statistics
import tempfile
import time

import grain
import numpy as np
from absl import app, flags

from medsr_jax.data import arbitrary_scale, degradation
from medsr_jax.data import manifest as manifest_lib
from medsr_jax.data import pipeline, records, sample, shards, transforms
from medsr_jax.io import tfrecord
from tests import shard_fixtures

_SETTINGS = flags.DEFINE_list('settings', ['rdst', 'miassr'], 'Pipelines to time.')
_WORKERS = flags.DEFINE_list('workers', ['1', '2', '4'], 'Thread / worker counts.')
_MODES = flags.DEFINE_list('modes', ['threads', 'processes'], 'threads and/or processes.')
_BATCHES = flags.DEFINE_integer('batches', 60, 'Timed batches per measurement.')
_WARMUP = flags.DEFINE_integer('warmup', 8, 'Untimed batches first (worker start-up).')
_RECORDS = flags.DEFINE_integer('num_records', 1024, 'Training records in each fixture.')
_DIR = flags.DEFINE_string('dir', '', 'Where to write the fixtures (default: a temp dir).')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating general / fast rounds per core (0: no '
                               'per-core table).')

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


def _timed(fn, items) -> tuple[float, float]:
  """(items/s, items per CPU-second) of fn over items."""
  t, c = time.perf_counter(), time.process_time()
  for x in items:
    fn(x)
  return _rate(len(items), time.perf_counter() - t), _rate(len(items), time.process_time() - c)


def bench_preprocessing(directory: str) -> None:
  """Prints records/s of each step of the record path: write, read + CRC, decode, source.

  The read, decode and source rows are medians of 3 rounds, general and fast paths alternating.
  """
  images = sample.load_sample((160, 128))['train'].images
  recs = [records.SliceRecord(image=np.ascontiguousarray(images[i % len(images)]),
                              subject='colin27', slice_index=i, spacing=(1.0, 1.0, 1.0),
                              affine=np.eye(4), orientation='RAS', modalities=['t1'],
                              intensity=(0.0, 1.0), dataset='oasis') for i in range(512)]
  path = os.path.join(directory, 'bench.tfrecord')
  t, c = time.perf_counter(), time.process_time()
  with tfrecord.TFRecordWriter(path) as w:
    offsets = [w.write(records.encode_slice(r)) for r in recs]
  rows = {'encode + frame + write': [(_rate(len(recs), time.perf_counter() - t),
                                      _rate(len(recs), time.process_time() - c))]}
  order = [offsets[i] for i in np.random.default_rng(0).permutation(len(offsets))]
  with open(path, 'rb') as f:
    blobs = [tfrecord.read_record_at(f, o)[0] for o in order]
  src = shards.ShardSource(os.path.join(directory, 'rdst'))
  idx = [int(i) for i in np.random.default_rng(1).permutation(len(src))[:512]]
  general = records._decode_slice_general  # pylint: disable=protected-access
  for _ in range(3):
    with open(path, 'rb') as f:
      rows.setdefault('read by offset + both CRCs, random order (`read_record_at`)', []).append(
          _timed(lambda o, f=f: tfrecord.read_record_at(f, o), order))
    for name, fn in (('decode -> SliceRecord, general parser (before)', general),
                     ('decode -> SliceRecord, fast path (`decode_slice`)', records.decode_slice),
                     ('decode -> image, fast path (`decode_slice_pixels`)',
                      records.decode_slice_pixels)):
      rows.setdefault(name, []).append(_timed(fn, blobs))
    with _general_paths():
      rows.setdefault('`ShardSource[i]` (read + CRCs + decode), random order, before',
                      []).append(_timed(src.__getitem__, idx))
    rows.setdefault('`ShardSource[i]` (read + CRCs + decode), random order, now', []).append(
        _timed(src.__getitem__, idx))
  print('\n| preprocessing step (160x128 float32 slice records) | records/s | records per CPU-s |'
        '\n|---|---:|---:|')
  for name, got in rows.items():
    print(f'| {name} | {statistics.median(r[0] for r in got):,.0f} | '
          f'{statistics.median(r[1] for r in got):,.0f} |')


@contextlib.contextmanager
def _general_paths():
  """The code paths of before issue 13 point 5 (module docstring), patched in for a comparison.

  The general paths are all still there (the fast ones fall back to them), so this swaps the
  entry points: the general record parser for the pixels decoder, buffered `read_record_at`
  for the positioned reads, `degradation`'s tensordot resizes for the per-element ones, and
  grain's metered `MapDataset.source` for the index-then-lookup stream.
  """
  def pixels(data, *, label=False):
    rec = records._decode_slice_general(data)  # pylint: disable=protected-access
    return rec.image, rec.label if label else None

  def degrade(hr, lr_hw, *, blur=False, noise_sigma=0.0, rng=None):
    return degradation.degrade(hr, 1.0, blur=blur, noise_sigma=noise_sigma, rng=rng,
                               lr_hw=tuple(lr_hw))

  def random_patch(image, size_hw, rng, *, include_last=True):
    image = transforms.pad_to_at_least(np.asarray(image, np.float32), size_hw)
    corner = transforms.random_crop_corner(image.shape, size_hw, rng, include_last=include_last)
    return transforms.crop(image, corner, size_hw)

  def shuffled_stream(source, seed):
    shuffle_seed, _ = pipeline.derive_seeds(seed)
    return grain.MapDataset.source(source).shuffle(seed=shuffle_seed).repeat()

  patches = [(records, 'decode_slice_pixels', pixels),
             (shards, '_pread_record', lambda *args: None),
             (transforms, 'degrade_hwc_float32', degrade),
             (transforms, 'resize_bicubic_hwc_float32', degradation.resize_bicubic),
             (transforms, 'random_patch', random_patch),
             (pipeline, 'shuffled_stream', shuffled_stream)]
  saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
  try:
    for module, name, fn in patches:
      setattr(module, name, fn)
    yield
  finally:
    for module, name, fn in saved:
      setattr(module, name, fn)


def _per_core_round(setting: str, directory: str) -> tuple[float, float]:
  """(batches/s wall, batches per CPU-second) in the main thread, after the warm-up."""
  it = pipeline.train_iterator(_dataset(setting, directory), num_threads=0)
  for _ in range(_WARMUP.value):
    next(it)
  t, c = time.perf_counter(), time.process_time()
  for _ in range(_BATCHES.value):
    next(it)
  return (_rate(_BATCHES.value, time.perf_counter() - t),
          _rate(_BATCHES.value, time.process_time() - c))


def bench_per_core(directory: str) -> None:
  """Prints batches/s of one core, general (before) vs fast paths, alternating rounds."""
  print(f'\n| pipeline (one core: main thread, {_BATCHES.value} batches, median of '
        f'{_ROUNDS.value} rounds) | batch | paths | batches/s | batches per CPU-s | '
        'CPU ms / batch |\n|---|---:|---|---:|---:|---:|')
  for setting in _SETTINGS.value:
    runs = {'general (before)': [], 'fast (now)': []}
    for _ in range(_ROUNDS.value):
      with _general_paths():
        runs['general (before)'].append(_per_core_round(setting, directory))
      runs['fast (now)'].append(_per_core_round(setting, directory))
    for paths, got in runs.items():
      wall = statistics.median(r[0] for r in got)
      cpu = statistics.median(r[1] for r in got)
      print(f'| {setting} | {SETTINGS[setting]["batch"]} | {paths} | {wall:.1f} | {cpu:.1f} | '
            f'{1e3 / cpu:.2f} |', flush=True)


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
          f'{_RECORDS.value} training records per fixture; load average '
          f'{" ".join(f"{v:.1f}" for v in os.getloadavg())}')
    workers = [int(v) for v in _WORKERS.value if v]
    if workers and importlib.util.find_spec('data_prep.build') is not None:
      bench_data_prep(directory, workers)
    elif workers:
      print('data_prep.build not found: timing the record path only')
    bench_preprocessing(directory)
    if _ROUNDS.value > 0:
      bench_per_core(directory)
    if not workers:
      return
    print('\n| pipeline | batch | mode | workers | batches/s | slices/s | first batch (s) |')
    print('|---|---:|---|---:|---:|---:|---:|')
    for setting in _SETTINGS.value:
      for mode in _MODES.value:
        for n in workers:
          rate, first = bench_pipeline(setting, directory, mode, n)
          b = SETTINGS[setting]['batch']
          print(f'| {setting} | {b} | {mode} | {n} | {rate:.1f} | {rate * b:,.0f} | '
                f'{first:.2f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
