"""Writes planned volumes into TFRecord shards: parallel, deterministic, resumable, atomic.

Layout of --out (the contract of `medsr_jax.data.manifest`):

  manifest.json                                 written first (complete: false), updated per shard
  train-00000-of-00004.tfrecord                 framed slice records (medsr_jax.io.tfrecord)
  train-00000-of-00004.tfrecord.index.npy       int64 byte offset of every record (np.save)
  train-00000-of-00004.tfrecord.volumes.json    per volume: source files, slice indices, record
                                                range in the shard, every channel's intensity
                                                range, crop offset, uncropped slice size

Shard assignment needs no slice counts: the volumes of a split (sorted by subject, volume) are cut
into `n` contiguous, equally long runs, one per shard (`plan_shards`), so a shard's bytes depend
only on its own volumes. Volumes are processed by `workers` processes (spawned, so nothing of the
parent, e.g. JAX threads, is forked), at most 2 x workers volumes ahead of the writer, and written
in plan order: the shards are byte-identical for any `workers`, and at most a few volumes are in
memory at once. The worker processes die with the build: each watches its parent from a daemon
thread and exits when the parent is gone (killed, even by SIGKILL), and multiprocessing's resource
tracker exits once they have. A slice-level split (protocol msgan) gives each (split, volume) the slice indices
it keeps (`ShardPlan.slices`): a volume is then in the plan of every split that holds one of its
slices, and is read once per such split (plus once by the build's first pass).

A shard is written to a temporary name beside its final one (with its index and sidecar), synced
and renamed; only then is it listed in manifest.json (itself replaced atomically). After any
interruption, every listed shard is complete; temporaries are deleted by the next run, which
keeps the listed shards (after checking their sha256) and writes the others. A run whose
settings differ from the manifest's is refused unless --out is empty. Bad input stops the build
(the shard in progress is discarded) unless `skip_bad`: then the volume is left out and listed in
the manifest's `skipped` (and its shard's sidecar).

Tests: `.venv/bin/python -m pytest -q tests/test_data_prep.py tests/test_data_prep_msgan.py`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence, TextIO

import numpy as np

from data_prep.protocols import VolumeResult, VolumeTask
from data_prep.readers import VolumeSpec
from medsr_jax.data import manifest as manifest_lib
from medsr_jax.errors import InputError
from medsr_jax.io import images
from medsr_jax.io import tfrecord
from medsr_jax.logging.progress import format_duration

VOLUMES_SUFFIX = '.volumes.json'
_TEMP_RE = re.compile(r'^\.((train|val|test)-\d{5}-of-\d{5}\.tfrecord.*|manifest\.json)\.'
                      r'[0-9a-f]{12}\.tmp.*$')
_OUR_FILE_RE = re.compile(r'^(train|val|test)-\d{5}-of-\d{5}\.tfrecord(\.index\.npy|'
                          r'\.volumes\.json)?$')

# Test hook: called with the shard file name after each shard is listed in the manifest.
_after_shard_hook: Optional[Callable[[str], None]] = None


@dataclasses.dataclass
class ShardPlan:
  """The volumes of one shard; `slices` (parallel to `volumes`): the slice indices each keeps
  (a slice-level split), None: every selected slice."""
  split: str
  index: int
  count: int
  volumes: list[VolumeSpec]
  slices: Optional[list[tuple[int, ...]]] = None

  @property
  def file(self) -> str:
    return manifest_lib.shard_name(self.split, self.index, self.count)

  def tasks(self) -> list[VolumeTask]:
    """What the process function gets, one per volume."""
    if self.slices is None:
      return [VolumeTask(v, self.split) for v in self.volumes]
    return [VolumeTask(v, self.split, tuple(k)) for v, k in zip(self.volumes, self.slices)]


def plan_shards(split_volumes: dict[str, list[VolumeSpec]], shards: dict[str, int],
                split_slices: Optional[dict[str, list[tuple[int, ...]]]] = None
                ) -> list[ShardPlan]:
  """Cuts each split's volumes into min(shards[split], #volumes) contiguous runs.

  `split_slices[split]` (optional, parallel to `split_volumes[split]`): the slice indices each
  volume keeps in that split.
  """
  plans = []
  for split in manifest_lib.SPLITS:
    vols = split_volumes.get(split, [])
    keep = None if split_slices is None else list(split_slices[split])
    if keep is not None and len(keep) != len(vols):
      raise ValueError(f'split {split}: {len(keep)} slice lists for {len(vols)} volumes')
    n = min(int(shards.get(split, 1)), len(vols))
    for i in range(n):
      lo, hi = i * len(vols) // n, (i + 1) * len(vols) // n
      plans.append(ShardPlan(split, i, n, vols[lo:hi],
                             None if keep is None else [tuple(k) for k in keep[lo:hi]]))
  return plans


def plan_digest(plans: Sequence[ShardPlan]) -> str:
  """sha256 of the plan: every shard's volumes and their files (relative names and sizes), and
  for a slice-level split each volume's slice indices."""
  h = hashlib.sha256()
  for p in plans:
    for j, v in enumerate(p.volumes):
      if p.slices is not None:
        h.update(json.dumps([p.file, v.volume, [int(k) for k in p.slices[j]]]).encode('utf-8'))
      files = []
      for f in v.files():
        try:
          size = os.path.getsize(f)
        except OSError:
          size = -1
        files.append([os.path.basename(f), size])
      h.update(json.dumps([p.file, v.subject, v.volume, v.stratum, files]).encode('utf-8'))
  return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Progress.


class Progress:
  """'volumes i/N, slices, slices/s' lines on stderr, at most once a second and per shard;
  `what` names the pass (e.g. 'first pass')."""

  def __init__(self, total: int, stream: Optional[TextIO] = sys.stderr, what: str = ''):
    self.total, self.stream = total, stream
    self.prefix = f'data_prep: {what}: ' if what else 'data_prep: '
    self.volumes = self.slices = 0
    self.start = self._last = time.monotonic()

  def rate(self) -> float:
    return self.slices / max(time.monotonic() - self.start, 1e-9)

  def update(self, slices: int, note: str = '') -> None:
    self.volumes += 1
    self.slices += slices
    now = time.monotonic()
    if self.stream is None or (not note and now - self._last < 1.0 and self.volumes < self.total):
      return
    self._last = now
    pct = 100.0 * self.volumes / max(self.total, 1)
    line = (f'{self.prefix}volumes {self.volumes}/{self.total} ({pct:.0f}%)  slices {self.slices}'
            f'  {self.rate():.1f} slices/s  {format_duration(now - self.start)}')
    print(line + (f'  {note}' if note else ''), file=self.stream, flush=True)


# ----------------------------------------------------------------------------------------------
# The output directory.


def _identity(m: manifest_lib.Manifest) -> dict[str, Any]:
  return {'dataset': m.dataset, 'protocol': m.protocol, 'settings': m.settings,
          'channels': m.channels, 'modalities': m.modalities, 'has_labels': m.has_labels,
          'sources': m.sources,
          'subjects': {k: v.subjects for k, v in sorted(m.splits.items())}}


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = '') -> list[str]:
  out = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key), b.get(key)
    if isinstance(va, dict) and isinstance(vb, dict):
      out += _differences(va, vb, f'{prefix}{key}.')
    elif json.dumps(va, sort_keys=True) != json.dumps(vb, sort_keys=True):
      out.append(prefix + key)
  return out


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def _shard_ok(out: str, shard: manifest_lib.Shard) -> bool:
  files = [shard.file, shard.index, shard.file + VOLUMES_SUFFIX]
  if not all(os.path.isfile(os.path.join(out, f)) for f in files):
    return False
  return _sha256(os.path.join(out, shard.file)) == shard.sha256


def _remove(out: str, names: Sequence[str]) -> None:
  for name in names:
    os.remove(os.path.join(out, name))


def prepare(out: str, fresh: manifest_lib.Manifest,
            log: Optional[TextIO] = sys.stderr) -> manifest_lib.Manifest:
  """Creates or resumes --out; returns the manifest to continue from (its listed shards are OK).

  Raises:
    InputError: --out is a file, holds other files and no manifest, or holds shards built with
      other settings (the message names the settings that differ).
  """
  if os.path.exists(out) and not os.path.isdir(out):
    raise InputError(f'{out}: --out exists and is not a directory')
  os.makedirs(out, exist_ok=True)
  temps = [e for e in os.listdir(out) if _TEMP_RE.match(e)]  # left by an interrupted run
  entries = [e for e in os.listdir(out) if not _TEMP_RE.match(e)]
  if not entries:
    _remove(out, temps)
    manifest_lib.write_manifest(out, fresh)
    return fresh
  if manifest_lib.MANIFEST not in entries:
    raise InputError(f'{out}: --out is not empty and holds no {manifest_lib.MANIFEST}; use an '
                     'empty or new directory')
  old = manifest_lib.read_manifest(out)
  diff = _differences(_identity(old), _identity(fresh))
  if diff:
    hint = ''
    if 'settings.plan_sha256' in diff:
      hint = ' (settings.plan_sha256: the source files differ from those the build began with)'
    raise InputError(f'{out}: holds shards built with other settings (differs in: '
                     f'{", ".join(diff[:8])}){hint}; use an empty or new --out')
  _remove(out, temps)
  kept = dropped = 0
  for split in old.splits.values():
    good = []
    for shard in split.shards:
      if _shard_ok(out, shard):
        good.append(shard)
      else:
        dropped += 1
        if log is not None:
          print(f'data_prep: {shard.file} is damaged or incomplete; writing it again', file=log)
    split.shards = good
    split.num_records = sum(s.num_records for s in good)
    kept += len(good)
  listed = {s.file for sp in old.splits.values() for s in sp.shards}
  old.skipped = [s for s in old.skipped if s.get('shard') in listed]
  _remove(out, stray_files(out, old))  # complete but unlisted (a crash before listing), damaged
  if dropped:
    old.complete, old.slice_shape = False, None
    manifest_lib.write_manifest(out, old)
  if log is not None and not old.complete and kept:
    print(f'data_prep: resuming in {out}: {kept} shard(s) already written', file=log)
  return old


def _write_json(path: str, obj: Any) -> None:
  with images.temp_path(path, '.json') as tmp:
    with open(tmp, 'x', encoding='utf-8') as f:
      f.write(json.dumps(obj, indent=1, sort_keys=True) + '\n')
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)


class _ShardFile:
  """One shard being written under temporary names; `commit` renames it into place."""

  def __init__(self, out: str, plan: ShardPlan):
    self.out, self.plan = out, plan
    self.path = os.path.join(out, plan.file)
    self.tmp = images.temp_name(self.path, '.tfrecord')
    self._f = open(self.tmp, 'xb')
    self._sha = hashlib.sha256()
    self.offsets: list[int] = []
    self.volumes: list[dict[str, Any]] = []
    self.skipped: list[dict[str, str]] = []
    self._pos = 0

  def add(self, result: VolumeResult) -> None:
    info = dict(result.info, first_record=len(self.offsets))
    for rec in result.records:
      framed = tfrecord.frame_record(rec)
      self._f.write(framed)
      self._sha.update(framed)
      self.offsets.append(self._pos)
      self._pos += len(framed)
    self.volumes.append(info)

  def skip(self, result: VolumeResult) -> None:
    self.skipped.append({'volume': result.info['volume'], 'path': result.info['sources'][0],
                         'reason': result.error or '', 'shard': self.plan.file})

  def commit(self) -> manifest_lib.Shard:
    self._f.flush()
    os.fsync(self._f.fileno())
    self._f.close()
    index_path = self.path + manifest_lib.INDEX_SUFFIX
    with images.temp_path(index_path, '.npy') as tmp:
      with open(tmp, 'xb') as f:
        np.save(f, np.asarray(self.offsets, dtype=np.int64), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, index_path)
    _write_json(self.path + VOLUMES_SUFFIX, {'shard': self.plan.file, 'volumes': self.volumes,
                                             'skipped': self.skipped})
    os.replace(self.tmp, self.path)
    return manifest_lib.Shard(file=self.plan.file, index=os.path.basename(index_path),
                              num_records=len(self.offsets), sha256=self._sha.hexdigest())

  def discard(self) -> None:
    if not self._f.closed:
      self._f.close()
    if os.path.exists(self.tmp):
      os.remove(self.tmp)


PARENT_POLL_SECONDS = 0.5


def _exit_with_parent(parent_pid: int) -> None:
  """Pool-worker initializer: a daemon thread ends this process once `parent_pid` is no longer
  its parent (the build was killed: an orphan is re-parented), so no worker outlives it."""
  def watch():
    while os.getppid() == parent_pid:
      time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, name='exit-with-parent', daemon=True).start()


def map_ordered(tasks: Sequence[Any], process: Callable[[Any], Any],
                workers: int) -> Iterator[Any]:
  """process(task) for every task, in order; `workers` > 1 runs them in spawned processes (at
  most 2 x workers ahead of the consumer). Also the build's first pass over the volumes."""
  if workers <= 1:
    for t in tasks:
      yield process(t)
    return
  ctx = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                              initializer=_exit_with_parent,
                                              initargs=(os.getpid(),)) as pool:
    pending: collections.deque = collections.deque()
    it = iter(tasks)
    try:
      for t in it:
        pending.append(pool.submit(process, t))
        if len(pending) >= 2 * workers:
          break
      while pending:
        result = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
          pending.append(pool.submit(process, nxt))
        yield result
    finally:
      for f in pending:
        f.cancel()


def slice_shape_of(out: str, m: manifest_lib.Manifest) -> Optional[list[int]]:
  """[H, W, C] if every written slice has that shape (from the shards' sidecars), else None."""
  shapes = set()
  for split in m.splits.values():
    for shard in split.shards:
      with open(os.path.join(out, shard.file + VOLUMES_SUFFIX), encoding='utf-8') as f:
        for v in json.load(f)['volumes']:
          if v.get('num_records'):
            shapes.add(tuple(v['slice_shape']))
  return list(shapes.pop()) if len(shapes) == 1 else None


def write(out: str, fresh: manifest_lib.Manifest, plans: Sequence[ShardPlan],
          process: Callable[[VolumeTask], VolumeResult], *, workers: int = 1,
          skip_bad: bool = False, log: Optional[TextIO] = sys.stderr) -> manifest_lib.Manifest:
  """Writes every planned shard not yet in --out and returns the final manifest.

  Args:
    out: the output directory.
    fresh: the manifest of this build, without shards (splits with their subjects).
    plans: every shard of the build (`plan_shards`).
    process: VolumeTask -> VolumeResult (picklable when workers > 1).
    workers: processes (1: in this process).
    skip_bad: leave out volumes with bad input (listed in the manifest) instead of stopping.
    log: progress stream (None: quiet).

  Raises:
    InputError: bad input in a volume (unless skip_bad), or an unusable --out.
  """
  m = prepare(out, fresh, log)
  done = {s.file for sp in m.splits.values() for s in sp.shards}
  todo = [p for p in plans if p.file not in done]
  tasks = [t for p in todo for t in p.tasks()]
  progress = Progress(len(tasks), log)
  results = map_ordered(tasks, process, min(workers, len(tasks)))
  current: Optional[_ShardFile] = None
  try:
    for plan in todo:
      current = _ShardFile(out, plan)
      for i, _ in enumerate(plan.volumes):
        result = next(results)
        if result.error is not None:
          if not skip_bad:
            raise InputError(result.error)
          current.skip(result)
          if log is not None:
            print(f'data_prep: skipped {result.info["volume"]}: {result.error}', file=log)
        else:
          current.add(result)
        last = i == len(plan.volumes) - 1
        progress.update(len(result.records), f'{plan.file} written' if last else '')
      shard = current.commit()
      split = m.splits[plan.split]
      split.shards = sorted(split.shards + [shard], key=lambda s: s.file)
      split.num_records = sum(s.num_records for s in split.shards)
      m.skipped = sorted(m.skipped + current.skipped, key=lambda s: (s['shard'], s['volume']))
      current = None
      manifest_lib.write_manifest(out, m)
      if _after_shard_hook is not None:
        _after_shard_hook(plan.file)
  finally:
    if current is not None:
      current.discard()
    results.close()
  listed = {s.file for sp in m.splits.values() for s in sp.shards}
  m.complete = all(p.file in listed for p in plans)
  m.slice_shape = slice_shape_of(out, m) if m.complete else None
  manifest_lib.write_manifest(out, m)
  return m


def stray_files(out: str, m: manifest_lib.Manifest) -> list[str]:
  """Shard-like files in --out that the manifest does not list (e.g. a crash before listing)."""
  listed = set()
  for sp in m.splits.values():
    for s in sp.shards:
      listed |= {s.file, s.index, s.file + VOLUMES_SUFFIX}
  return sorted(e for e in os.listdir(out) if _OUR_FILE_RE.match(e) and e not in listed)
