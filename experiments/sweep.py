"""Expand a config file's ablation grid into one `medsr_jax.main` command per grid point.

  python -m experiments.sweep --config=configs/rdst.py --workdir=runs/rdst_grid          # print
  python -m experiments.sweep --config=configs/miassr.py:demo --workdir=runs/grid/miassr \\
      --launcher=local --parallel=2                      # run here, two points at a time
  python -m experiments.sweep --config=configs/miassr.py --workdir=runs/grid/miassr \\
      --launcher=slurm --parallel=8 --slurm_args="--partition=gpu --gres=gpu:1 --time=48:00:00"
  python -m experiments.sweep --config=configs/rdst.py --workdir=runs/grid -- \\
      --config.train.frozen.unet=runs/unet/export      # flags after `--` go to every point

The grid. A config file declares it with `sweep(add)`, calling `add(**{"a.b": value, ...})` once
per point (see `configs/rdst.py`); a point may also give `config_arg="..."`, the ARGS after the
file's colon for that point (e.g. `model=rdst_e` in configs/baseline.py, where the model name
decides every architecture field). Each point becomes `--config.a.b=value` overrides and its own
workdir under `--workdir`. Every override is checked against the config before anything is
printed, written or run, so a typo in a grid fails at once.

Point names (the workdir of a point is `WORKDIR/NAME`). NAME is the point's entries sorted by key,
`config_arg` as its bare value and every other entry as `key=value`, joined by ',', with every
character other than ASCII letters, digits and `_ . = , -` dropped: `add(config_arg='w=64,b=16')`
is `w=64,b=16`, `add(**{'model.kwargs.num_blocks': 4})` is `model.kwargs.num_blocks=4`. Values
that hold `{grid}` are not part of the name. The rule depends only on the point, so a rerun (or a
grid that gained points) finds the same directories. Two points with one name, an empty name, a
name of dots only or one longer than 255 bytes are errors.

Branches. A value may name another point's workdir through `{grid}` (the grid's directory):
`add(config_arg='stage=gan', init_from='{grid}/stage=warmup')` branches from the grid's warm-up
point. The first path component after `{grid}/` must be a point's name; that point is a
dependency, and no launcher starts a point before its dependencies have finished (cycles are
errors).

Finished points. A point is finished when its workdir holds `results.json` and
`export/config.json` (the last file a completed `medsr_jax.main` run writes: final evaluation,
then the export, config.json last). Every launcher but `print` skips finished points; an
unfinished point simply runs `main` again, which resumes from its latest checkpoint.

Launchers (`--launcher=`):
  print (default)  one command per line, nothing run (a scheduler may run one job per line).
  local            runs the points here as subprocesses, at most `--parallel=N` (default 1) at a
                   time, in grid order as their dependencies allow; each point's stdout and
                   stderr go to `POINT_WORKDIR/sweep.log`; one progress line per start and finish,
                   then a table (point, status, seconds); the exit code is 1 if a point failed
                   (or was not started because a dependency failed). Ctrl-C or SIGTERM stops every
                   running point (SIGTERM, then SIGKILL after 10 s) and exits 130 / 143. With
                   N > 1 the children get XLA_PYTHON_CLIENT_PREALLOCATE=false unless the
                   environment sets XLA_PYTHON_CLIENT_PREALLOCATE or _MEM_FRACTION, so points can
                   share a GPU (each JAX process would otherwise take 75% of its memory); to give
                   each point its own GPUs, run several sweeps with CUDA_VISIBLE_DEVICES instead.
                   `--run` is `--launcher=local --parallel=1`.
  slurm            writes one sbatch array script (`--script=PATH`, default WORKDIR/sweep.sbatch,
                   written atomically, mode 0755) and prints the command that submits it. Array
                   index i runs point i (`case "$SLURM_ARRAY_TASK_ID"`); `--parallel=K` throttles
                   the array (`--array=0-(N-1)%K`); each `--slurm_args=` value (shell-split, may
                   repeat) adds `#SBATCH` lines, e.g. `--slurm_args="--partition=gpu --gres=gpu:1"`.
                   Slurm output goes to WORKDIR/slurm-%A_%a.out (unless --output is given) and
                   each point's output also to its sweep.log. Dependencies: the points are split
                   into levels (level 0: no dependency; level k: depends on a point of level k-1
                   and none above), and the printed command submits the same script once per
                   level, `sbatch --array=<that level's indices>%K
                   --dependency=afterany:<job>_<task>:...`, after exactly the array tasks its
                   points branch from (so K is per level: two levels may run 2K points at once).
                   A task first checks its own dependencies: one that has not finished (it failed,
                   or the script was submitted with plain `sbatch`) makes the task exit 3 at once
                   with a message, so a failed warm-up fails only its own branches, quickly.
                   Resubmitting the same command after a failure reruns only the unfinished
                   points. `--python=CMD` (shell-split) replaces the Python that runs
                   `-m medsr_jax.main` (default: this one, `sys.executable`); the script runs in
                   the directory it was written from, as relative paths in the commands need.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time

from medsr_jax import config_lib


def _load(path: str):
  return config_lib.load_module(path)


CONFIG_ARG = "config_arg"


def grid_points(config_arg: str) -> list[dict]:
  """The override dicts of the grid, each checked against the config."""
  path, _, arg = config_arg.partition(":")
  module = _load(path)
  if not hasattr(module, "sweep"):
    raise ValueError(f"{path} has no sweep(add) function")
  points: list[dict] = []
  module.sweep(lambda **overrides: points.append(overrides))
  for point in points:
    config = module.get_config(point.get(CONFIG_ARG, arg) or None)
    for key, value in point.items():
      if key == CONFIG_ARG:
        continue
      parent = config
      *parents, leaf = key.split(".")
      for name in parents:
        parent = parent[name]
      if leaf not in parent:
        raise ValueError(f"grid override {key!r} is not a field of {path}")
      parent[leaf] = value  # type-checked by ml_collections
  return points


GRID = "{grid}"  # placeholder for the grid's directory in a point's values
_GRID_REF = re.compile(re.escape(GRID) + r"/([^/]+)")


def _derived(value) -> bool:
  return isinstance(value, str) and GRID in value


def point_name(point: dict) -> str:
  """A directory name for a grid point, e.g. 'model.kwargs.num_blocks=4' (module docstring)."""
  parts = [str(v) if k == CONFIG_ARG else f"{k}={v}" for k, v in sorted(point.items())
           if not _derived(v)]
  return ",".join(re.sub(r"[^\w.=,-]", "", part, flags=re.ASCII) for part in parts)


def _config_flag(config_arg: str, point: dict) -> str:
  path, _, arg = config_arg.partition(":")
  arg = point.get(CONFIG_ARG, arg)
  return f"--config={path}:{arg}" if arg else f"--config={path}"


@dataclasses.dataclass(frozen=True)
class Point:
  """One grid point: its index in the grid, name, workdir, command and dependencies."""
  index: int
  name: str
  workdir: pathlib.Path
  command: list[str]
  depends: tuple[int, ...]  # indices of the points whose workdirs this one uses via {grid}


def _check_names(names: list[str]) -> None:
  seen: dict[str, int] = {}
  for i, name in enumerate(names):
    if not name.strip("."):
      raise ValueError(f"grid point {i} has the name {name!r}, which is not a directory name; "
                       "give it a config_arg or an override that is not derived from {grid}")
    if len(name.encode()) > 255:
      raise ValueError(f"grid point {i}: its name is longer than 255 bytes: {name[:60]}...")
    if name in seen:
      raise ValueError(f"grid points {seen[name]} and {i} have the same name {name!r} (and "
                       "would share a workdir)")
    seen[name] = i


def _dependencies(points: list[dict], names: list[str]) -> list[tuple[int, ...]]:
  index = {name: i for i, name in enumerate(names)}
  result = []
  for i, point in enumerate(points):
    deps: list[int] = []
    for key, value in sorted(point.items()):
      if not _derived(value):
        continue
      for ref in _GRID_REF.findall(value):
        if ref not in index:
          raise ValueError(f"grid point {names[i]!r}: {key}={value!r} names {GRID}/{ref}, which "
                           f"is not a point of the grid")
        if index[ref] == i:
          raise ValueError(f"grid point {names[i]!r} depends on itself ({key}={value!r})")
        if index[ref] not in deps:
          deps.append(index[ref])
    result.append(tuple(deps))
  return result


def levels(plan_: list[Point]) -> list[int]:
  """Each point's dependency level: 0 without dependencies, else 1 + its dependencies' highest."""
  by_index = {p.index: p for p in plan_}
  level: dict[int, int] = {}

  def visit(i: int, path: tuple[int, ...]) -> int:
    if i in path:
      cycle = " -> ".join(by_index[j].name for j in path[path.index(i):] + (i,))
      raise ValueError(f"the grid's {GRID} dependencies form a cycle: {cycle}")
    if i not in level:
      level[i] = 1 + max((visit(d, path + (i,)) for d in by_index[i].depends), default=-1)
    return level[i]

  return [visit(p.index, ()) for p in plan_]


def plan(config_arg: str, workdir: str, extra=(), python=None) -> list[Point]:
  """The grid's points, checked: overrides, names and dependencies (no cycle)."""
  python = list(python) if python else [sys.executable]
  points = grid_points(config_arg)
  names = [point_name(p) for p in points]
  _check_names(names)
  depends = _dependencies(points, names)
  result = []
  for i, (p, name) in enumerate(zip(points, names)):
    point_dir = pathlib.Path(workdir) / name
    cmd = python + ["-m", "medsr_jax.main", _config_flag(config_arg, p), f"--workdir={point_dir}"]
    cmd += [f"--config.{k}={str(v).replace(GRID, str(workdir))}" for k, v in sorted(p.items())
            if k != CONFIG_ARG]
    result.append(Point(i, name, point_dir, cmd + list(extra), depends[i]))
  levels(result)  # raises on a cycle
  return result


def commands(config_arg: str, workdir: str, python=None) -> list[list[str]]:
  """One `python -m medsr_jax.main ...` argument list per grid point, in grid order."""
  return [p.command for p in plan(config_arg, workdir, python=python)]


def finished(workdir) -> bool:
  """Whether a run in `workdir` completed: its results and its export (config.json, written
  last by `export.save_export`) are there."""
  workdir = pathlib.Path(workdir)
  return (workdir / "results.json").is_file() and (workdir / "export" / "config.json").is_file()


# ----- slurm ---------------------------------------------------------------------------------

def _ranges(indices) -> str:
  """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (Slurm's --array syntax)."""
  out, indices = [], sorted(indices)
  start = prev = indices[0]
  for i in indices[1:] + [None]:
    if i is not None and i == prev + 1:
      prev = i
      continue
    out.append(str(start) if start == prev else f"{start}-{prev}")
    if i is not None:
      start = prev = i
  return ",".join(out)


def _slurm_lines(values) -> list[list[str]]:
  """`--slurm_args` values -> one option (with its separate value, if any) per #SBATCH line."""
  lines: list[list[str]] = []
  for value in values:
    for token in shlex.split(value):
      if "\n" in token:
        raise ValueError(f"--slurm_args: a newline in {token!r}")
      if token.startswith("-") or not lines:
        if not token.startswith("-"):
          raise ValueError(f"--slurm_args: {token!r} is not an sbatch option (--name=value)")
        lines.append([token])
      else:
        lines[-1].append(token)
  for line in lines:
    option = line[0].split("=", 1)[0]
    if option in ("--array", "-a") or (option.startswith("-a") and not option.startswith("--")):
      raise ValueError("--slurm_args: the array is the sweep's (use --parallel=K to throttle it)")
  return lines


def _given(lines, long: str, short: str) -> bool:
  return any(l[0].split("=", 1)[0] == long or l[0].startswith(short) and not l[0].startswith("--")
             for l in lines)


def submit_command(script, plan_: list[Point], parallel=None) -> str:
  """The shell command that submits `script`: plain `sbatch` for a grid without dependencies,
  else one `sbatch --array=<level k> --dependency=afterany:<job>_<task>:...` per level k, after
  exactly the array tasks (of the levels below) that level's points depend on."""
  level_of = levels(plan_)
  script = shlex.quote(os.path.abspath(script))
  throttle = f"%{parallel}" if parallel else ""
  top = max(level_of)
  if top == 0:
    return f"sbatch {script}"
  parts = []
  for k in range(top + 1):
    members = [p for p in plan_ if level_of[p.index] == k]
    array = _ranges([p.index for p in members]) + throttle
    needs = sorted({d for p in members for d in p.depends})
    dependency = (" --dependency=afterany:" + ":".join(
        f"${{j{level_of[d]}%%;*}}_{d}" for d in needs)) if needs else ""
    parts.append(f"j{k}=$(sbatch --parsable --array={array}{dependency} {script})")
  jobs = " ".join(f"${{j{k}%%;*}}" for k in range(top + 1))
  return " && ".join(parts) + f' && echo "submitted jobs {jobs}"'


def slurm_script(plan_: list[Point], grid, *, script, parallel=None, slurm_args=(),
                 cwd=None, config="") -> str:
  """The text of the sbatch array script (module docstring)."""
  lines = _slurm_lines(slurm_args)
  grid_abs = os.path.abspath(grid)
  cwd = os.path.abspath(cwd or os.getcwd())
  level_of = levels(plan_)
  n = len(plan_)
  sbatch = []
  if not _given(lines, "--job-name", "-J"):
    job = re.sub(r"[^\w.=,-]", "", pathlib.Path(grid_abs).name, flags=re.ASCII) or "grid"
    sbatch.append(f"--job-name=sweep-{job}")
  sbatch.append(f"--array=0-{n - 1}" + (f"%{parallel}" if parallel else ""))
  if not _given(lines, "--output", "-o"):
    sbatch.append("--output=" + shlex.quote(os.path.join(grid_abs, "slurm-%A_%a.out")))
  sbatch += [" ".join(line) for line in lines]
  submit = submit_command(script, plan_, parallel)
  q = shlex.quote
  out = ["#!/bin/bash"] + [f"#SBATCH {s}" for s in sbatch] + [
      f"# The grid of {config}: {n} points, array index i runs point i; written by",
      "# `python -m experiments.sweep --launcher=slurm` (regenerate rather than edit).",
      f"# Submit from anywhere with ({max(level_of) + 1} dependency level(s), each array after the"
      " tasks its points branch from):",
      f"#   {submit}",
      "# A point whose workdir holds results.json and export/config.json is finished and skipped;",
      "# an unfinished one resumes from its checkpoints. A point whose dependency has not",
      "# finished exits 3 without running.",
      "set -u -o pipefail",
      f"cd {q(cwd)} || exit 1",
      'task="${SLURM_ARRAY_TASK_ID:?run this script as a Slurm array job (see its header)}"',
      "deps=()",
      'case "$task" in']
  for p, level in zip(plan_, level_of):
    out += [f"  {p.index})  # level {level}",
            f"    name={q(p.name)}",
            f"    workdir={q(str(p.workdir))}",
            "    cmd=(" + " ".join(q(a) for a in p.command) + ")"]
    if p.depends:
      out.append("    deps=(" + " ".join(q(str(plan_[d].workdir)) for d in p.depends) + ")")
    out.append("    ;;")
  out += [
      f'  *) echo "sweep: array index $task is not a grid point (0-{n - 1})" >&2; exit 2 ;;',
      "esac",
      'finished() { [[ -f "$1/results.json" && -f "$1/export/config.json" ]]; }',
      'if finished "$workdir"; then',
      '  echo "sweep: $name is finished ($workdir has results.json and export/); skipped"',
      "  exit 0",
      "fi",
      'for dep in ${deps[@]+"${deps[@]}"}; do',
      '  if ! finished "$dep"; then',
      '    echo "sweep: $name branches from $dep, which has not finished; not started" >&2',
      "    exit 3",
      "  fi",
      "done",
      'mkdir -p "$workdir" || exit 1',
      'echo "sweep: array task $task: $name on $(hostname)"',
      'echo "sweep: ${cmd[*]}"',
      '"${cmd[@]}" 2>&1 | tee -a "$workdir/sweep.log"',
      'exit "${PIPESTATUS[0]}"',
      ""]
  return "\n".join(out)


def write_atomic(path, text: str, mode: int = 0o755) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


# ----- local ---------------------------------------------------------------------------------

class _Terminated(Exception):
  pass


def _on_sigterm(signum, frame):
  del signum, frame
  raise _Terminated()


def _stop(running: dict, grace: float = 10.0) -> None:
  """SIGTERM to every running point's process group, then SIGKILL after `grace` seconds."""
  for proc, *_ in running.values():
    try:
      os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
      pass
  deadline = time.monotonic() + grace
  for proc, *_ in running.values():
    try:
      proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      proc.wait()


def summary_table(plan_: list[Point], status: dict, seconds: dict) -> str:
  width = max([len("point")] + [len(p.name) for p in plan_])
  rows = [f"{'point':<{width}}  {'status':<8}  {'seconds':>8}"]
  for p in plan_:
    s = seconds.get(p.index)
    rows.append(f"{p.name:<{width}}  {status.get(p.index, 'not run'):<8}  "
                f"{'-' if s is None else f'{s:.1f}':>8}")
  return "\n".join(rows)


def run_local(plan_: list[Point], parallel: int = 1, poll: float = 0.05) -> int:
  """Runs the points here, at most `parallel` at a time (module docstring); the exit code."""
  def say(text):
    print(f"[sweep {time.strftime('%H:%M:%S')}] {text}", flush=True)

  status: dict[int, str] = {}
  seconds: dict[int, float] = {}
  for p in plan_:
    if finished(p.workdir):
      status[p.index] = "skipped"
      say(f"skipped {p.name}: finished ({p.workdir} has results.json and export/)")
  pending = [p for p in plan_ if p.index not in status]
  running: dict[int, tuple] = {}
  env = dict(os.environ)
  if parallel > 1 and not {"XLA_PYTHON_CLIENT_PREALLOCATE",
                           "XLA_PYTHON_CLIENT_MEM_FRACTION"} & set(env):
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    say("XLA_PYTHON_CLIENT_PREALLOCATE=false for the points (they may share a GPU)")
  total, started = len(pending), 0
  old = signal.signal(signal.SIGTERM, _on_sigterm)
  code = 0
  try:
    while pending or running:
      changed = True
      while changed:  # a failed dependency blocks its branches, and theirs
        changed = False
        for p in list(pending):
          bad = [plan_[d].name for d in p.depends if status.get(d) in ("failed", "blocked")]
          if bad:
            pending.remove(p)
            status[p.index] = "blocked"
            changed = True
            say(f"blocked {p.name}: its dependency {bad[0]} did not finish")
      for p in list(pending):
        if len(running) >= parallel:
          break
        if all(status.get(d) in ("ok", "skipped") for d in p.depends):
          pending.remove(p)
          p.workdir.mkdir(parents=True, exist_ok=True)
          log = p.workdir / "sweep.log"
          with open(log, "a") as f:
            f.write(f"# sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(p.command)}\n")
            f.flush()
            proc = subprocess.Popen(p.command, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
          running[p.index] = (proc, time.monotonic(), log)
          status[p.index] = "running"
          started += 1
          say(f"start {p.name} ({started}/{total}, {len(running)} running; log {log})")
      if not running:
        break
      time.sleep(poll)
      for index, (proc, t0, log) in list(running.items()):
        rc = proc.poll()
        if rc is None:
          continue
        del running[index]
        seconds[index] = time.monotonic() - t0
        name = plan_[index].name
        if rc == 0:
          status[index] = "ok"
          say(f"ok {name} in {seconds[index]:.1f} s")
        else:
          status[index] = "failed"
          say(f"FAILED {name}: exit {rc} after {seconds[index]:.1f} s; see {log}")
    code = 1 if any(s in ("failed", "blocked") for s in status.values()) else 0
  except (KeyboardInterrupt, _Terminated) as e:
    code = 143 if isinstance(e, _Terminated) else 130
    say(f"interrupted: stopping {len(running)} running point(s)")
    now = time.monotonic()
    for index, (_, t0, _) in running.items():
      status[index] = "killed"
      seconds[index] = now - t0
    # A second Ctrl-C or SIGTERM does not cut the stopping short (and orphan children).
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
      _stop(running)
    finally:
      signal.signal(signal.SIGINT, old_int)
  finally:
    signal.signal(signal.SIGTERM, old)
  print(summary_table(plan_, status, seconds), flush=True)
  return code


# ----- command line ---------------------------------------------------------------------------

def main(argv=None):
  # argparse, not absl flags: medsr_jax.main already defines --config/--workdir as absl flags.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  parser.add_argument("--config", required=True, help="config file with sweep(add), FILE[:ARGS]")
  parser.add_argument("--workdir", required=True, help="parent of the grid points' workdirs")
  parser.add_argument("--launcher", choices=("print", "local", "slurm"), default=None,
                      help="print the commands (default), run them here, or write a Slurm array")
  parser.add_argument("--run", action="store_true", help="= --launcher=local --parallel=1")
  parser.add_argument("--parallel", type=int, default=None,
                      help="local: points at once (default 1); slurm: the array's %%K throttle")
  parser.add_argument("--script", default=None, help="slurm: the script (WORKDIR/sweep.sbatch)")
  parser.add_argument("--slurm_args", action="append", default=[],
                      help="slurm: sbatch options for #SBATCH lines, e.g. "
                           "--slurm_args='--partition=gpu --gres=gpu:1' (may repeat)")
  parser.add_argument("--python", default=None,
                      help="the command that runs `-m medsr_jax.main` (default: this Python)")
  argv = list(sys.argv[1:] if argv is None else argv)
  extra: list[str] = []
  if "--" in argv:
    cut = argv.index("--")
    argv, extra = argv[:cut], argv[cut + 1:]
  args, unknown = parser.parse_known_args(argv)
  stray = [a for a in unknown if not a.startswith("--config.")]
  if stray:
    parser.error(f"unrecognized arguments: {' '.join(stray)} (flags for every point go after --)")
  extra = unknown + extra
  if args.run:
    if args.launcher not in (None, "local") or args.parallel not in (None, 1):
      parser.error("--run is --launcher=local --parallel=1")
    args.launcher, args.parallel = "local", 1
  launcher = args.launcher or "print"
  if args.parallel is not None and (launcher == "print" or args.parallel < 1):
    parser.error("--parallel=N (N >= 1) goes with --launcher=local or --launcher=slurm")
  if launcher != "slurm" and (args.script or args.slurm_args):
    parser.error("--script and --slurm_args go with --launcher=slurm")
  python = shlex.split(args.python) if args.python else None
  try:
    points = plan(args.config, args.workdir, extra, python)
  except ValueError as e:  # a grid problem is one line, not a traceback
    parser.error(str(e))

  if launcher == "print":
    for p in points:
      print(shlex.join(p.command), flush=True)
    return 0
  if launcher == "local":
    code = run_local(points, args.parallel or 1)
    if code:
      sys.exit(code)
    return 0
  script = pathlib.Path(args.script or pathlib.Path(args.workdir) / "sweep.sbatch")
  try:
    text = slurm_script(points, args.workdir, script=script, parallel=args.parallel,
                        slurm_args=args.slurm_args, config=args.config)
  except ValueError as e:
    parser.error(str(e))
  pathlib.Path(args.workdir).mkdir(parents=True, exist_ok=True)  # for the Slurm output files
  write_atomic(script, text)
  print(f"wrote {script}: {len(points)} grid points (array 0-{len(points) - 1}), "
        f"{max(levels(points)) + 1} dependency level(s); submit with:", flush=True)
  print(submit_command(script, points, args.parallel), flush=True)
  return 0


if __name__ == "__main__":
  main()
