"""Fault campaign (issue 14): kill, damage and starve tiny training runs, resume them, and count.

  python -m experiments.fault_campaign --trials=20                  # every case, 20 trials each
  python -m experiments.fault_campaign --trials=3 --cases=kill,bitflip --workdir=/tmp/fc --seed=1

Every trial is a real `python -m medsr_jax.main` process on a tiny config (this file's
`get_config`: EDSR-lite, 8 features, 2 residual blocks, x2, 6 steps of batch 4 on the embedded
sample, validation and a checkpoint at every step, every checkpoint kept), compared with one
uninterrupted run of the same config (the reference, run once and cached in WORKDIR/reference).

Cases (each trial draws its own random choices from `--seed`, the case and the trial number):
  kill          SIGKILL (to the whole process group) at a random moment: one trial in six
                during start-up (up to 0.5 s after the reference's first checkpoint), the others
                0 to 1.2 x (the reference's time from its first checkpoint to its end) after the
                first checkpoint appeared (training, a checkpoint save, the final evaluation, the
                export); then the same command again.
  kill_in_save  SIGKILL during the save of a random checkpoint k: either while orbax's temporary
                directory `k.orbax-checkpoint-tmp-*` exists (plus 0-20 ms), or once `k/` exists
                but its sha256 manifest does not yet (written when the next save starts); then
                the same command again.
  bitflip       the reference run cut back to a random checkpoint k >= 2 (later checkpoints,
                the export and the results removed: a run stopped after checkpoint k), then 1-8
                random bytes of a random file of checkpoint k flipped; then resumed.
  truncate      the same, a random file of checkpoint k truncated to a random length.
  delete        the same, a random file (or, one time in five, a whole item folder: state/,
                data/, meta/, metrics/) of checkpoint k deleted.
  damage_all    cut back to a random k >= 1 and every checkpoint damaged one of the three ways;
                then resumed: one `error:` line and exit 2 is expected, and no file may change.
  disk_full     the workdir (empty, or cut back to a random checkpoint) on a tmpfs of a random
                size between what it holds and what the whole run needs, mounted in a private
                mount namespace (`unshare -rm`, skipped where that is not allowed); then resumed
                on the real disk.

A trial survives when each of its runs that was not killed either finished (exit 0 with an
export) or failed with exit code 2, exactly one stderr line `error: ...`, no half-written output
(no empty results.md, no export without its parameters) and no good file changed (config.json and
the files of the checkpoints that were not damaged; for damage_all every file). After a kill or a
full disk, the same command is run again (on the real disk) and must survive too. "finished"
counts the trials that ended with a finished run (damage_all: expected never), "bitwise equal"
those of them whose exported parameters equal the reference's byte for byte.
"max stderr lines" is the most stderr lines of any run of the case that was not killed, progress
lines (`step 3/6 ...`) left out (a fallback to an older checkpoint prints one `warning:` line).

Output: one line per trial on stderr, then the markdown table on stdout (also written to
WORKDIR/campaign.md, the trials to WORKDIR/campaign.json, with the last stderr lines of each).
Trials that did not survive, did not finish (but for damage_all) or were not bitwise equal keep
their folder under WORKDIR/trials (`--keep`: all of them). Every run uses a copy of medsr_jax
taken at the start (WORKDIR/src/<digest>; `--no_snapshot`: the working tree), so that edits
made meanwhile do not mix versions; the reference is made again when that copy changes. The
children share a JAX compilation cache in WORKDIR/jax_cache (a run takes ~9 s instead of ~25 s
on 2 CPU cores) and run on the CPU unless JAX_PLATFORMS is set. Exit code 0 when every trial
survived and every finished trial was bitwise equal, 1 otherwise.

Its damage helpers (`damage`, `flip_bytes`, ...) are tested without training in
tests/test_fault_campaign.py. Results: docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Optional

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_NAME = pathlib.Path(__file__).name
CASES = ('kill', 'kill_in_save', 'bitflip', 'truncate', 'delete', 'damage_all', 'disk_full')
DAMAGE_KINDS = ('bitflip', 'truncate', 'delete')
ITEM_DIRS = ('state', 'data', 'meta', 'metrics')
MANIFEST = 'sha256.json'
PAGE = 4096
RUN_TIMEOUT_S = 600
_PROGRESS = re.compile(r'^step \d+/\d+\s')


# ----------------------------------------------------------------------------------------------
# The tiny config (`--config=experiments/fault_campaign.py:steps=6`).


def get_config(arg=None):
  from medsr_jax import config_lib  # pylint: disable=import-outside-toplevel
  opts = config_lib.parse_arg(arg, steps=6)
  c = config_lib.base_sr_config()
  c.model = config_lib.model_config('edsr_lite', scale=2, n_feats=8, n_resblocks=2)
  c.data.global_batch_size = 4
  c.data.lr_patch = 8
  c.data.crop_hw = (32, 32)
  c.data.eval_batch_size = 16
  c.train.stages = [config_lib.stage('l1', steps=int(opts.steps), learning_rate=1e-3)]
  c.train.log_every = 1
  c.train.eval_every = 1          # every checkpoint has its metric (no orbax warning lines)
  c.train.checkpoint_every = 1
  c.train.keep_checkpoints = int(opts.steps) + 1
  c.eval.num_panels = 1
  c.mesh.shape = (1, 1)
  return c


# ----------------------------------------------------------------------------------------------
# Damage (pure file operations; tested in tests/test_fault_campaign.py).


def files_under(folder: pathlib.Path) -> list[pathlib.Path]:
  """Every file under `folder`, sorted (so that a seeded choice is reproducible)."""
  return sorted(p for p in folder.rglob('*') if p.is_file())


def flip_bytes(path: pathlib.Path, rng: random.Random, count: Optional[int] = None) -> str:
  """XORs `count` (default 1-8) random bytes of `path` with random non-zero values."""
  data = bytearray(path.read_bytes())
  if not data:
    raise ValueError(f'{path}: empty, no byte to flip')
  count = count or rng.randint(1, 8)
  offsets = sorted(rng.randrange(len(data)) for _ in range(count))
  for i in offsets:
    data[i] ^= rng.randint(1, 255)
  path.write_bytes(bytes(data))
  return f'flipped {count} byte(s) at {offsets[:3]}{"..." if count > 3 else ""}'


def truncate_file(path: pathlib.Path, rng: random.Random) -> str:
  """Cuts `path` to a random shorter length (0 included)."""
  size = path.stat().st_size
  if not size:
    raise ValueError(f'{path}: empty, cannot be truncated')
  new = rng.randrange(size)
  with open(path, 'r+b') as f:
    f.truncate(new)
  return f'truncated {size} -> {new} bytes'


def damage(step_dir: pathlib.Path, kind: str, rng: random.Random) -> str:
  """Damages checkpoint `step_dir` one way (`DAMAGE_KINDS`); returns what was done."""
  if kind == 'delete' and rng.random() < 0.2:
    items = [step_dir / d for d in ITEM_DIRS if (step_dir / d).is_dir()]
    if items:
      item = rng.choice(items)
      shutil.rmtree(item)
      return f'deleted {item.name}/'
  files = [p for p in files_under(step_dir) if kind == 'delete' or p.stat().st_size]
  if not files:
    raise ValueError(f'{step_dir}: no file to damage')
  path = rng.choice(files)
  where = path.relative_to(step_dir).as_posix()
  if kind == 'bitflip':
    return f'{where}: {flip_bytes(path, rng)}'
  if kind == 'truncate':
    return f'{where}: {truncate_file(path, rng)}'
  if kind == 'delete':
    path.unlink()
    return f'deleted {where}'
  raise ValueError(f'unknown damage {kind!r} (one of {DAMAGE_KINDS})')


def digests(root: pathlib.Path) -> dict[str, str]:
  """{path relative to root: sha256} of every file under `root`."""
  out = {}
  for p in files_under(root):
    out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
  return out


def footprint(root: pathlib.Path) -> int:
  """Bytes `root`'s files take on a tmpfs (each file rounded up to whole pages)."""
  return sum(math.ceil(p.stat().st_size / PAGE) * PAGE for p in files_under(root))


def cut_back(reference: pathlib.Path, dest: pathlib.Path, k: int) -> None:
  """`dest` = the reference run as a run stopped after checkpoint k (0: an empty workdir):
  later checkpoints, the export, results and panels removed (metrics.jsonl and TensorBoard keep
  their later rows: a resumed run rewinds them)."""
  if k == 0:
    dest.mkdir(parents=True)
    return
  shutil.copytree(reference, dest, symlinks=True)
  for p in (dest / 'checkpoints').iterdir():
    if not p.name.isdigit() or int(p.name) > k:
      shutil.rmtree(p)
  shutil.rmtree(dest / 'export', ignore_errors=True)
  for p in dest.iterdir():
    if p.name.startswith(('results.', 'panel_')):
      p.unlink()


def stderr_lines(text: str) -> list[str]:
  """The stderr lines that count: all but empty and progress lines."""
  return [l for l in text.splitlines() if l.strip() and not _PROGRESS.match(l)]


# ----------------------------------------------------------------------------------------------
# Runs.


@dataclasses.dataclass
class Run:
  rc: Optional[int]        # None: timed out
  killed: bool
  lines: list[str]         # stderr lines that count
  seconds: float
  note: str = ''

  @property
  def finished(self) -> bool:
    return self.rc == 0 and not self.killed

  @property
  def one_line_error(self) -> bool:
    return (self.rc == 2 and not self.killed and len(self.lines) == 1
            and self.lines[0].startswith('error: '))


class Campaign:
  """Runs the trials of `cases` in `workdir`."""

  def __init__(self, workdir: pathlib.Path, steps: int, log: Callable[[str], None],
               source: pathlib.Path = REPO):
    self.workdir, self.steps, self.log, self.source = workdir, steps, log, source
    self.config_file = source / 'experiments' / CONFIG_NAME
    self.env = dict(os.environ)
    self.env.setdefault('JAX_PLATFORMS', 'cpu')
    self.env.update(JAX_COMPILATION_CACHE_DIR=str(workdir / 'jax_cache'),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    self.ref: dict = {}
    self._ref_params = None

  # -- processes ---------------------------------------------------------------------------

  def command(self, run_dir: pathlib.Path) -> list[str]:
    return [sys.executable, '-m', 'medsr_jax.main',
            f'--config={self.config_file}:steps={self.steps}', f'--workdir={run_dir}']

  def run(self, argv: list[str], logs: pathlib.Path, name: str,
          kill_when: Optional[Callable[[float], bool]] = None, poll_s: float = 0.005) -> Run:
    """Runs `argv` (in its own process group), killing it with SIGKILL once `kill_when(elapsed)`
    is true; stdout and stderr go to `logs`/`name`.{out,err}."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f'{name}.out', logs / f'{name}.err'
    start = time.monotonic()
    killed, rc = False, None
    with open(out_path, 'wb') as out, open(err_path, 'wb') as err:
      proc = subprocess.Popen(argv, cwd=self.source, env=self.env, stdout=out, stderr=err,
                              start_new_session=True)
      try:
        while True:
          rc = proc.poll()
          if rc is not None:
            break
          elapsed = time.monotonic() - start
          if elapsed > RUN_TIMEOUT_S:
            _kill_group(proc)
            rc = None
            break
          if kill_when is not None and kill_when(elapsed):
            _kill_group(proc)
            killed = True
            rc = proc.returncode
            break
          time.sleep(poll_s if kill_when is not None else 0.05)
      finally:
        if proc.poll() is None:
          _kill_group(proc)
    seconds = time.monotonic() - start
    text = err_path.read_text(errors='replace')
    return Run(rc=rc, killed=killed, lines=stderr_lines(text), seconds=seconds)

  def train(self, run_dir: pathlib.Path, logs: pathlib.Path, name: str, **kw) -> Run:
    return self.run(self.command(run_dir), logs, name, **kw)

  # -- the reference -----------------------------------------------------------------------

  def reference(self) -> dict:
    """The uninterrupted run (cached), and the moments of a hot run: first checkpoint, end."""
    folder = self.workdir / 'reference'
    info_path = folder / 'reference.json'
    run_dir = folder / 'run'
    if info_path.is_file():
      info = json.loads(info_path.read_text())
      if (info.get('steps') == self.steps and info.get('sources') == source_digest(self.source)
          and (run_dir / 'export' / 'params.npz').is_file()):
        self.ref = info
        self.log(f'reference: cached in {folder}')
        return info
    shutil.rmtree(folder, ignore_errors=True)
    self.log(f'reference: an uninterrupted run in {run_dir} (compiles: ~30 s)')
    first = self.train(run_dir, folder / 'logs', 'reference')
    if not first.finished:
      raise RuntimeError(f'the reference run failed (exit {first.rc}); see {folder / "logs"}')
    timing_dir = folder / 'timing'
    moments = {}

    def watch(elapsed):
      ckpts = timing_dir / 'checkpoints'
      if 'first_checkpoint' not in moments and ckpts.is_dir() and any(ckpts.iterdir()):
        moments['first_checkpoint'] = elapsed
      return False

    second = self.train(timing_dir, folder / 'logs', 'timing', kill_when=watch)
    if not second.finished:
      raise RuntimeError(f'the timing run failed (exit {second.rc}); see {folder / "logs"}')
    self.ref = {'steps': self.steps, 'sources': source_digest(self.source),
                'first_checkpoint_s': moments.get('first_checkpoint', 1.0),
                'end_s': second.seconds, 'footprint': footprint(run_dir)}
    if not self.bitwise_equal(timing_dir):
      raise RuntimeError('two uninterrupted runs of the tiny config differ here: bitwise '
                         'comparisons would mean nothing')
    shutil.rmtree(timing_dir)
    info_path.write_text(json.dumps(self.ref, indent=1) + '\n')
    return self.ref

  @property
  def ref_run(self) -> pathlib.Path:
    return self.workdir / 'reference' / 'run'

  def bitwise_equal(self, run_dir: pathlib.Path) -> bool:
    import numpy as np  # pylint: disable=import-outside-toplevel
    if self._ref_params is None:
      with np.load(self.ref_run / 'export' / 'params.npz', allow_pickle=False) as z:
        self._ref_params = {k: (z[k].dtype, z[k].shape, z[k].tobytes()) for k in z.files}
    try:
      with np.load(run_dir / 'export' / 'params.npz', allow_pickle=False) as z:
        got = {k: (z[k].dtype, z[k].shape, z[k].tobytes()) for k in z.files}
    except Exception:  # pylint: disable=broad-except
      return False
    return got == self._ref_params

  # -- outcomes ----------------------------------------------------------------------------

  def clean_failure(self, run: Run, run_dir: pathlib.Path, good: dict[str, str]) -> str:
    """'' when `run` failed cleanly (one error line, exit 2, nothing half-written, the good
    files unchanged); else what is wrong."""
    if not run.one_line_error:
      return f'exit {run.rc}, {len(run.lines)} stderr line(s)'
    now = digests(run_dir) if run_dir.is_dir() else {}
    changed = sorted(f for f, h in good.items() if now.get(f) != h)
    if changed:
      return f'good files changed: {", ".join(changed[:3])}'
    return self.half_written(run_dir)

  @staticmethod
  def half_written(run_dir: pathlib.Path) -> str:
    results = run_dir / 'results.md'
    if results.exists() and results.stat().st_size == 0:
      return 'an empty results.md'
    export_dir = run_dir / 'export'
    if export_dir.exists():
      names = set(os.listdir(export_dir))
      if names and not ({'config.json', 'params.npz'} <= names):
        return f'a partial export ({sorted(names)})'
    return ''

  def outcome(self, run: Run, run_dir: pathlib.Path,
              good: dict[str, str]) -> tuple[str, Optional[pathlib.Path]]:
    """(problem, run_dir if it finished): problem '' when the run finished or failed cleanly."""
    if run.finished and (run_dir / 'export' / 'params.npz').is_file():
      return '', run_dir
    return self.clean_failure(run, run_dir, good), None

  def finish(self, case, trial, runs, problem, final: Optional[pathlib.Path], detail,
             start) -> dict:
    """The trial record: survived, finished, bitwise equal (None when no run finished)."""
    bitwise = self.bitwise_equal(final) if final is not None else None
    counted = [r for r in runs if not r.killed]
    return {'case': case, 'trial': trial, 'survived': not problem,
            'finished': final is not None, 'bitwise': bitwise,
            'stderr_lines': max((len(r.lines) for r in counted), default=0),
            'detail': detail + (f'; NOT SURVIVED: {problem}' if problem else ''),
            'last_lines': [l[:300] for r in counted for l in r.lines][-3:],
            'seconds': round(time.monotonic() - start, 1)}

  def resume(self, run_dir, logs, runs) -> tuple[str, Optional[pathlib.Path]]:
    """The same command again: `outcome`; the good files are config.json and every checkpoint
    there now (a resume may add a manifest, never change a file)."""
    good = {f: h for f, h in digests(run_dir).items() if _is_good(f, -1)} \
        if run_dir.is_dir() else {}
    run = self.train(run_dir, logs, f'resume{len(runs)}')
    runs.append(run)
    problem, final = self.outcome(run, run_dir, good)
    return (f'resumed: {problem}' if problem else ''), final

  # -- cases -------------------------------------------------------------------------------

  def case_kill(self, trial_dir, rng, trial):
    start = time.monotonic()
    run_dir, logs = trial_dir / 'run', trial_dir / 'logs'
    ckpts = run_dir / 'checkpoints'
    first, end = self.ref['first_checkpoint_s'], self.ref['end_s']
    if rng.random() < 1 / 6:  # during start-up (nothing to resume from yet, or just one)
      after, delay = 'the start', rng.uniform(0.3, first + 0.5)
    else:  # training, checkpoints, the final evaluation, the export
      after, delay = 'the first checkpoint', rng.uniform(0.0, 1.2 * max(0.5, end - first))
    seen = {}

    def kill_when(elapsed):
      if after == 'the start':
        return elapsed >= delay
      if 'at' not in seen and ckpts.is_dir() and any(n.isdigit() for n in os.listdir(ckpts)):
        seen['at'] = elapsed
      return 'at' in seen and elapsed >= seen['at'] + delay

    runs = [self.train(run_dir, logs, 'faulted', kill_when=kill_when)]
    detail = f'SIGKILL {delay:.2f} s after {after} ({_state(run_dir)})'
    if not runs[0].killed:
      detail += '; the run ended before the kill'
    problem, final = self.resume(run_dir, logs, runs)
    return self.finish('kill', trial, runs, problem, final, detail, start)

  def case_kill_in_save(self, trial_dir, rng, trial):
    start = time.monotonic()
    run_dir, logs = trial_dir / 'run', trial_dir / 'logs'
    ckpts = run_dir / 'checkpoints'
    k = rng.randint(1, self.steps)
    mode = rng.choice(('tmp', 'unverified'))
    extra = rng.uniform(0.0, 0.02)
    seen = {}

    def kill_when(elapsed):
      if 'at' not in seen:
        try:
          names = os.listdir(ckpts)
        except OSError:
          return False
        if mode == 'tmp':
          hit = any(n.startswith(f'{k}.orbax-checkpoint-tmp') for n in names)
        else:
          hit = str(k) in names and not (ckpts / str(k) / MANIFEST).exists()
        if hit:
          seen['at'] = elapsed
          seen['state'] = ', '.join(sorted(n for n in names if n != 'damaged'))
      return 'at' in seen and elapsed >= seen['at'] + (extra if mode == 'tmp' else 0.0)

    runs = [self.train(run_dir, logs, 'faulted', kill_when=kill_when, poll_s=0.001)]
    if runs[0].killed:
      detail = (f'SIGKILL during the save of checkpoint {k} ({mode}'
                f'{f", +{extra * 1000:.0f} ms" if mode == "tmp" else ""}; '
                f'checkpoints/: {seen.get("state")})')
    else:
      detail = f'missed: the save of checkpoint {k} ({mode}) was never seen, no kill'
    problem, final = self.resume(run_dir, logs, runs)
    return self.finish('kill_in_save', trial, runs, problem, final, detail, start)

  def _damage_one(self, kind, trial_dir, rng, trial):
    start = time.monotonic()
    run_dir, logs = trial_dir / 'run', trial_dir / 'logs'
    k = rng.randint(2, self.steps)
    cut_back(self.ref_run, run_dir, k)
    step_dir = run_dir / 'checkpoints' / str(k)
    what = damage(step_dir, kind, rng)
    good = {f: h for f, h in digests(run_dir).items() if _is_good(f, k)}
    detail = f'checkpoint {k} of {k}: {what}'
    run = self.train(run_dir, logs, 'resume')
    problem, final = self.outcome(run, run_dir, good)
    return self.finish(kind, trial, [run], problem, final, detail, start)

  def case_bitflip(self, trial_dir, rng, trial):
    return self._damage_one('bitflip', trial_dir, rng, trial)

  def case_truncate(self, trial_dir, rng, trial):
    return self._damage_one('truncate', trial_dir, rng, trial)

  def case_delete(self, trial_dir, rng, trial):
    return self._damage_one('delete', trial_dir, rng, trial)

  def case_damage_all(self, trial_dir, rng, trial):
    start = time.monotonic()
    run_dir, logs = trial_dir / 'run', trial_dir / 'logs'
    k = rng.randint(1, self.steps)
    cut_back(self.ref_run, run_dir, k)
    whats = []
    for step in range(1, k + 1):
      kind = rng.choice(DAMAGE_KINDS)
      whats.append(f'{step}: {damage(run_dir / "checkpoints" / str(step), kind, rng)}')
    before = digests(run_dir)
    run = self.train(run_dir, logs, 'resume')
    detail = f'checkpoints 1-{k} all damaged ({"; ".join(whats)})'
    # Finished: a damage no check can see (the newest's manifest deleted, the rest intact).
    problem, final = self.outcome(run, run_dir, before)
    return self.finish('damage_all', trial, [run], problem, final, detail, start)

  def case_disk_full(self, trial_dir, rng, trial):
    start = time.monotonic()
    run_dir, logs = trial_dir / 'run', trial_dir / 'logs'
    initial, mnt = trial_dir / 'initial', trial_dir / 'mnt'
    k = rng.randint(0, self.steps - 1)
    cut_back(self.ref_run, initial, k)
    base = footprint(initial)
    room = rng.randint(PAGE, max(2 * PAGE, self.ref['footprint'] - base + 16 * PAGE))
    size = (base + 2 * PAGE + room) // PAGE * PAGE
    good = {f: h for f, h in digests(initial).items() if _is_good(f, k)}
    mnt.mkdir()
    run_dir.mkdir()
    script = ('set -u; mount -t tmpfs -o size="$1" tmpfs "$2" || exit 90; '
              'cp -a "$3"/. "$2"/ || exit 91; '
              '"$5" -m medsr_jax.main --config="$6" --workdir="$2"; rc=$?; '
              'cp -a "$2"/. "$4"/ || exit 92; exit $rc')
    argv = ['unshare', '-rm', 'sh', '-c', script, 'sh', str(size), str(mnt), str(initial),
            str(run_dir), sys.executable, f'{self.config_file}:steps={self.steps}']
    faulted = self.run(argv, logs, 'faulted')
    detail = (f'tmpfs of {size // 1024} KiB, {base // 1024} KiB used by the workdir '
              f'(checkpoint {k}), the whole run needs ~{self.ref["footprint"] // 1024} KiB')
    if faulted.rc in (90, 91, 92):
      return self.finish('disk_full', trial, [], f'set-up failed (exit {faulted.rc}): '
                         f'{faulted.lines[-1:]}', None, detail, start)
    runs = [faulted]
    problem, final = self.outcome(faulted, run_dir, good)
    if final is not None:
      detail += '; enough room, finished'
      return self.finish('disk_full', trial, runs, '', final, detail, start)
    error = [l for l in faulted.lines if l.startswith('error: ')]
    detail += f'; failed: {(error or faulted.lines or ["(no stderr)"])[-1][:200]}'
    # Resumed on the real disk even after an unclean failure (does the run recover?).
    resumed, final = self.resume(run_dir, logs, runs)
    problem = '; '.join(p for p in (problem, resumed) if p)
    return self.finish('disk_full', trial, runs, problem, final, detail, start)


def _is_good(relative: str, k: int) -> bool:
  """Files a failed run must leave as they were: config.json and checkpoints other than k."""
  parts = relative.split('/')
  if parts == ['config.json']:
    return True
  return len(parts) > 2 and parts[0] == 'checkpoints' and parts[1].isdigit() and \
      int(parts[1]) != k


def _state(run_dir: pathlib.Path) -> str:
  """What the killed run had written: its checkpoints and whether it exported."""
  ckpts = run_dir / 'checkpoints'
  steps = sorted(int(n) for n in os.listdir(ckpts) if n.isdigit()) if ckpts.is_dir() else []
  parts = [f'checkpoints {steps[0]}-{steps[-1]}' if steps else 'no checkpoint']
  if (run_dir / 'results.md').exists():
    parts.append('results.md')
  if (run_dir / 'export').exists():
    parts.append('export/')
  return ', '.join(parts)


def _interrupt(signum, frame):
  raise KeyboardInterrupt


def trial_rng(seed: int, case: str, trial: int) -> random.Random:
  """The random choices of one trial: independent of the other cases and trials (a hash, as
  `random.Random` seeded with similar strings gives similar first draws)."""
  key = hashlib.sha256(f'{seed}:{case}:{trial}'.encode()).digest()
  return random.Random(int.from_bytes(key[:8], 'big'))


def source_digest(root: pathlib.Path = REPO) -> str:
  """sha256 of medsr_jax's Python sources and this file under `root`: the cached reference is
  made again when they change."""
  h = hashlib.sha256()
  for p in sorted((root / 'medsr_jax').rglob('*.py')) + [root / 'experiments' / CONFIG_NAME]:
    h.update(p.relative_to(root).as_posix().encode() + b'\0' + p.read_bytes() + b'\0')
  return h.hexdigest()


def snapshot(workdir: pathlib.Path) -> pathlib.Path:
  """A copy of medsr_jax and this file in WORKDIR/src/<digest>, which every run of the campaign
  uses: edits to the working tree while the campaign runs do not mix versions."""
  digest = source_digest()
  root = workdir / 'src' / digest[:16]
  if not (root / 'DONE').is_file():
    shutil.rmtree(root, ignore_errors=True)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    shutil.copytree(REPO / 'medsr_jax', root / 'medsr_jax', ignore=ignore)
    (root / 'experiments').mkdir()
    for name in ('__init__.py', CONFIG_NAME):
      shutil.copy2(REPO / 'experiments' / name, root / 'experiments' / name)
    (root / 'DONE').write_text(digest + '\n')
  if source_digest(root) != digest:  # edited while being copied
    shutil.rmtree(root)
    return snapshot(workdir)
  return root


def _kill_group(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  proc.wait()


def can_mount_tmpfs(scratch: pathlib.Path) -> str:
  """'' when a private tmpfs can be mounted here (`unshare -rm`), else why not."""
  if shutil.which('unshare') is None:
    return 'no unshare command'
  scratch.mkdir(parents=True, exist_ok=True)
  try:
    r = subprocess.run(['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs "$1"',
                        'sh', str(scratch)], capture_output=True, text=True, timeout=30,
                       check=False)
  except (OSError, subprocess.SubprocessError) as e:
    return str(e)
  return '' if r.returncode == 0 else ' '.join(r.stderr.split()) or f'exit {r.returncode}'


def table(trials: list[dict], cases) -> str:
  rows = ['| case | trials | survived | finished | bitwise equal | max stderr lines |',
          '|---|---|---|---|---|---|']
  for case in cases:
    mine = [t for t in trials if t['case'] == case]
    if not mine:
      continue
    compared = [t for t in mine if t['bitwise'] is not None]
    bitwise = (f'{sum(t["bitwise"] for t in compared)}/{len(compared)}' if compared else 'n/a')
    rows.append(f'| {case} | {len(mine)} | {sum(t["survived"] for t in mine)}/{len(mine)} | '
                f'{len(compared)}/{len(mine)} | {bitwise} | '
                f'{max(t["stderr_lines"] for t in mine)} |')
  return '\n'.join(rows)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m experiments.fault_campaign',
                              description='Kill, damage and starve tiny training runs, resume '
                                          'them, and count the survivors.')
  p.add_argument('--trials', type=int, default=20, help='trials per case (default 20)')
  p.add_argument('--workdir', default='runs/fault_campaign',
                 help='where the reference, the trials and the table go')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--cases', default=','.join(CASES),
                 help=f'comma-separated, any of {",".join(CASES)} (default: all)')
  p.add_argument('--steps', type=int, default=6, help='training steps of the tiny run')
  p.add_argument('--keep', action='store_true', help='keep every trial folder')
  p.add_argument('--no_snapshot', dest='snapshot', action='store_false',
                 help='run the working tree\'s medsr_jax, not a copy taken at the start')
  return p


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  cases = [c.strip() for c in args.cases.split(',') if c.strip()]
  unknown = sorted(set(cases) - set(CASES))
  if unknown or not cases:
    print(f'error: unknown case(s) {unknown} (known: {", ".join(CASES)})', file=sys.stderr)
    return 2
  if args.trials < 1 or args.steps < 2:
    print('error: --trials must be >= 1 and --steps >= 2', file=sys.stderr)
    return 2
  workdir = pathlib.Path(args.workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)

  def log(line):
    print(line, file=sys.stderr, flush=True)

  source = snapshot(workdir) if args.snapshot else REPO
  if args.snapshot:
    log(f'runs use the copy of medsr_jax in {source}')
  campaign = Campaign(workdir, args.steps, log, source)
  skipped = {}
  if 'disk_full' in cases:
    why = can_mount_tmpfs(workdir / 'tmpfs_probe')
    shutil.rmtree(workdir / 'tmpfs_probe', ignore_errors=True)
    if why:
      skipped['disk_full'] = f'cannot mount a private tmpfs here ({why})'
      cases.remove('disk_full')
      log(f'disk_full: skipped, {skipped["disk_full"]}')
  begin = time.monotonic()
  signal.signal(signal.SIGTERM, _interrupt)  # a run in progress is killed on the way out
  campaign.reference()
  trials = []
  for t in range(args.trials):
    for case in cases:
      trial_dir = workdir / 'trials' / f'{case}-{t:03d}'
      shutil.rmtree(trial_dir, ignore_errors=True)
      trial_dir.mkdir(parents=True)
      rng = trial_rng(args.seed, case, t)
      record = getattr(campaign, f'case_{case}')(trial_dir, rng, t)
      trials.append(record)
      verdict = 'survived' if record['survived'] else 'NOT SURVIVED'
      same = {True: 'bitwise equal', False: 'NOT BITWISE EQUAL', None: 'no params'}
      log(f'{case} {t + 1}/{args.trials}: {verdict}, {same[record["bitwise"]]}, '
          f'{record["stderr_lines"]} stderr line(s), {record["seconds"]:.0f} s: '
          f'{record["detail"]}')
      expected = record['finished'] or case == 'damage_all'
      if record['survived'] and expected and record['bitwise'] is not False and not args.keep:
        shutil.rmtree(trial_dir)
  text = table(trials, cases)
  minutes = (time.monotonic() - begin) / 60
  footer = (f'\n\n{args.trials} trial(s) per case, seed {args.seed}, {args.steps} steps, '
            f'{minutes:.1f} min.')
  for case, why in skipped.items():
    footer += f'\n{case}: skipped, {why}.'
  if not args.snapshot and source_digest() != campaign.ref['sources']:
    footer += ('\nwarning: medsr_jax changed while the campaign ran; its results mix two '
               'versions.')
  print(text + footer, flush=True)
  (workdir / 'campaign.md').write_text(text + footer + '\n')
  (workdir / 'campaign.json').write_text(json.dumps(
      {'trials_per_case': args.trials, 'seed': args.seed, 'steps': args.steps,
       'skipped': skipped, 'minutes': round(minutes, 1), 'trials': trials}, indent=1) + '\n')
  ok = all(t['survived'] and t['bitwise'] is not False for t in trials)
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main())
