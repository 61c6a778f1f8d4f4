"""Checks a run's config and its surroundings before anything is built, compiled or written.

`main` calls `check_run(config, workdir)` first: every problem found (a bad stage, an interval of
0, an unknown model option, a mesh larger than the machine, a batch the mesh cannot split, a
workdir that cannot be written or has no room for two checkpoints, a resume with another config)
becomes part of one `InputError` line, so the command prints `error: ...` and exits with 2 before
the workdir is even created.

  from medsr_jax import config_checks
  config_checks.check_run(config, "runs/rdst")     # InputError, or None when the run may start

Run `python -m pytest tests/test_fail_early.py`.
"""

from __future__ import annotations

import difflib
import json
import math
import pathlib
import shutil
import tempfile
from typing import Any, Iterable

from medsr_jax.errors import InputError

# Fields that may change when a run is resumed (they do not change what is trained); the last
# stage's `steps` may change too (to extend a run).
RESUMABLE_FIELDS = frozenset({
    "train.max_steps", "train.log_every", "train.param_overview", "train.eval_every",
    "train.checkpoint_every", "train.keep_checkpoints", "data.num_workers", "data.num_threads",
    "data.prefetch_buffer_size", "train.remat"})
# Fields added after runs were first written: a saved config.json without one resumes when the
# new config keeps the default (what those runs did).
ADDED_FIELD_DEFAULTS = {"train.precision": "fp32", "train.remat": "none"}
PRECISIONS = ("fp32", "bf16")      # trainers.step.PRECISIONS (not imported: no jax here)
REMAT_MODES = ("none", "blocks", "full")  # layers.remat.MODES
CHECKPOINTS_KEPT_FREE = 2        # room needed for this many checkpoints
CHECKPOINT_COPIES = 4            # params + two Adam moments + EMA
MAX_LISTED = 6                   # differences named in the resume error


def resolved_json(config) -> dict:
  """The config as `WORKDIR/config.json` holds it (the JSON of `main.write_config`)."""
  return json.loads(config.to_json_best_effort())


def check_run(config, workdir) -> None:
  """InputError (one line, every problem joined by '; ') unless `config` may run in `workdir`."""
  problems = config_problems(config)
  problems += environment_problems(config, pathlib.Path(workdir), config_ok=not problems)
  if problems:
    raise InputError("; ".join(problems))


def check_config(config) -> None:
  """The config's own checks alone (no devices, no files)."""
  problems = config_problems(config)
  if problems:
    raise InputError("; ".join(problems))


# -- the config ----------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def config_problems(config) -> list[str]:
  """One line per problem of `config` itself."""
  problems = _stage_problems(config) + _interval_problems(config) + _compute_problems(config)
  problems += _model_problems(config.model, "model")
  gan = config.get("gan", None)
  if gan is not None and gan.get("discriminator", None) is not None:
    problems += _model_problems(gan.discriminator, "gan.discriminator")
  from medsr_jax import trainers  # pylint: disable=import-outside-toplevel
  if config.trainer not in trainers.available():
    problems.append(f"unknown trainer {config.trainer!r}; known: {', '.join(trainers.available())}")
  return problems


def _stage_problems(config) -> list[str]:
  stages = config.train.get("stages", None)
  if not stages:
    return ["train.stages is empty: give at least one stage"]
  problems = []
  for i, s in enumerate(stages):
    where = f"train.stages[{i}]"
    if not _is_int(s.get("steps", None)) or s.steps < 1:
      problems.append(f"{where}.steps must be a positive integer, got {s.get('steps', None)}")
    lr = s.get("learning_rate", None)
    if not _is_number(lr) or lr <= 0:
      problems.append(f"{where}.learning_rate must be a finite number > 0, got {lr}")
    milestones = s.get("milestones", ())
    if not all(_is_int(m) and m >= 0 for m in milestones or ()):
      problems.append(f"{where}.milestones must be integers >= 0, got {tuple(milestones)}")
    gamma = s.get("gamma", 1.0)
    if not _is_number(gamma) or gamma <= 0:
      problems.append(f"{where}.gamma must be a finite number > 0, got {gamma}")
    warmup = s.get("warmup_steps", 0)
    if not _is_int(warmup) or warmup < 0:
      problems.append(f"{where}.warmup_steps must be an integer >= 0, got {warmup}")
  return problems


def _interval_problems(config) -> list[str]:
  problems = []
  for name in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    v = config.train.get(name, 1)
    if not _is_int(v) or v < 1:
      problems.append(f"train.{name} must be an integer >= 1, got {v}")
  v = config.train.get("max_steps", -1)
  if v is not None and (not _is_int(v) or (v != -1 and v < 1)):
    problems.append(f"train.max_steps must be -1 (every stage) or >= 1, got {v}")
  return problems


def _compute_problems(config) -> list[str]:
  """train.precision and train.remat (the accelerator options, trainers/step.py)."""
  problems = []
  for name, allowed, default in (("precision", PRECISIONS, "fp32"),
                                 ("remat", REMAT_MODES, "none")):
    v = config.train.get(name, default)
    if v not in allowed:
      problems.append(f"train.{name} must be one of {', '.join(allowed)}, got {v!r}")
  return problems


def _model_problems(model_config, where: str) -> list[str]:
  from medsr_jax import models  # pylint: disable=import-outside-toplevel
  name = model_config.get("name", None)
  if name not in models.available():
    return [f"unknown {where}.name {name!r}; available: {', '.join(models.available())}"]
  try:
    known = models.default_options(name)
  except (InputError, ValueError, TypeError):
    return []                      # a model that needs options: `build` says what is wrong
  problems = []
  for key in sorted(model_config.get("kwargs", {}) or {}):
    if key not in known:
      close = difflib.get_close_matches(key, list(known), n=1)
      hint = f" (did you mean {close[0]}?)" if close else ""
      problems.append(f"{where}.kwargs.{key} is not an option of {name!r}{hint}")
  return problems


# -- devices, files, resume ----------------------------------------------------------------------

def environment_problems(config, workdir: pathlib.Path, config_ok: bool = True) -> list[str]:
  """One line per problem of the machine or the workdir (imports jax)."""
  problems = _mesh_problems(config)
  written = _workdir_problems(workdir)
  problems += written
  if not written:
    problems += _resume_problems(config, workdir)
    if config_ok:
      problems += _space_problems(config, workdir)
  return problems


def _mesh_problems(config) -> list[str]:
  import jax  # pylint: disable=import-outside-toplevel
  devices, processes = jax.device_count(), jax.process_count()
  shape = list(config.mesh.get("shape", (-1, 1)))
  names = list(config.mesh.get("axis_names", ("data", "fsdp")))
  if len(shape) != len(names):
    return [f"mesh.shape {tuple(shape)} and mesh.axis_names {tuple(names)} differ in length"]
  if not all(_is_int(s) and (s >= 1 or s == -1) for s in shape) or shape.count(-1) > 1:
    return [f"mesh.shape {tuple(shape)} must be positive integers with at most one -1"]
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if devices % known:
      return [f"mesh.shape {tuple(shape)}: {devices} device(s) are not a multiple of {known}"]
    shape[shape.index(-1)] = devices // known
  size = math.prod(shape)
  if size > devices:
    return [f"mesh.shape {tuple(shape)} needs {size} devices but {devices} are present "
            f"(set --config.mesh.shape, e.g. '(-1, 1)')"]
  batch = config.data.get("global_batch_size", None)
  if not _is_int(batch) or batch < 1:
    return [f"data.global_batch_size must be a positive integer, got {batch}"]
  for parts, what in ((size, f"the {size} devices of mesh {tuple(shape)}"),
                      (processes, f"the {processes} processes")):
    if batch % parts:
      return [f"data.global_batch_size {batch} is not divisible by {what} (each batch is split "
              f"evenly over them)"]
  return []


def _existing_ancestor(path: pathlib.Path) -> pathlib.Path:
  path = path.absolute()
  while not path.exists() and path != path.parent:
    path = path.parent
  return path


def _workdir_problems(workdir: pathlib.Path) -> list[str]:
  if workdir.exists() and not workdir.is_dir():
    return [f"workdir {workdir} exists and is not a directory"]
  base = _existing_ancestor(workdir)
  if not base.is_dir():
    return [f"cannot create workdir {workdir}: {base} is not a directory"]
  try:
    with tempfile.TemporaryFile(dir=base):
      pass
  except OSError as e:
    what = "write to workdir" if base == workdir.absolute() else f"create workdir {workdir} in"
    return [f"cannot {what} {base}: {e.strerror or e}"]
  return []


def checkpoint_bytes(config) -> int:
  """Rough size of one checkpoint: every model variable, CHECKPOINT_COPIES times."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from medsr_jax import models  # pylint: disable=import-outside-toplevel
  total = 0
  specs = [config.model]
  gan = config.get("gan", None)
  if gan is not None and gan.get("discriminator", None) is not None:
    specs.append(gan.discriminator)
  for spec in specs:
    module = models.build(spec.name, scale=spec.scale, in_channels=spec.in_channels,
                          **spec.kwargs.to_dict())
    leaves = jax.tree.leaves(models.abstract_variables(module))
    total += sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves)
  return total * CHECKPOINT_COPIES


def _mib(n: int) -> str:
  return f"{n / 2 ** 20:.1f} MiB"


def _space_problems(config, workdir: pathlib.Path) -> list[str]:
  try:
    needed = CHECKPOINTS_KEPT_FREE * checkpoint_bytes(config)
  except InputError as e:
    return [str(e)]
  except Exception:  # pylint: disable=broad-except
    return []                      # no estimate (a model with special inputs): the run will tell
  free = shutil.disk_usage(_existing_ancestor(workdir)).free
  if free < needed:
    return [f"not enough free space for {workdir}: {_mib(free)} free, {CHECKPOINTS_KEPT_FREE} "
            f"checkpoints need about {_mib(needed)}"]
  return []


def _has_checkpoint(workdir: pathlib.Path) -> bool:
  ckpts = workdir / "checkpoints"
  return ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())


def _with_prerequisite_slots(new: dict, config, workdir: pathlib.Path) -> dict:
  """`new` with the slots that `prerequisites.run_prerequisites` fills before the config is
  written (so that a resumed run compares like with like)."""
  from medsr_jax.trainers import prerequisites  # pylint: disable=import-outside-toplevel
  for name in (config.get("prerequisites", None) or {}):
    target = str(prerequisites.export_dir(workdir, name))
    frozen = new.get("train", {}).get("frozen", {})
    if name == prerequisites.INIT and not new.get("init_from"):
      new["init_from"] = target
    elif name in frozen and not frozen[name]:
      frozen[name] = target
  return new


def _flatten(value: Any, prefix: str, out: dict) -> dict:
  """{'a.b[1].c': leaf}; an empty mapping adds nothing (its keys, once given, are named)."""
  if isinstance(value, dict):
    for k, v in value.items():
      _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
  elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
    out[f"{prefix}#"] = len(value)
    for i, v in enumerate(value):
      _flatten(v, f"{prefix}[{i}]", out)
  else:
    out[prefix] = value
  return out


def config_differences(saved: dict, new: dict) -> list[tuple[str, Any, Any]]:
  """(field, saved value, new value) for the fields that may not change on resume."""
  a, b = _flatten(saved, "", {}), _flatten(new, "", {})
  last_steps = None
  if a.get("train.stages#") == b.get("train.stages#") and b.get("train.stages#"):
    last_steps = f"train.stages[{b['train.stages#'] - 1}].steps"
  missing = object()
  diffs = []
  for key in sorted(set(a) | set(b)):
    old, now = a.get(key, missing), b.get(key, missing)
    if old is missing and key in ADDED_FIELD_DEFAULTS:
      old = ADDED_FIELD_DEFAULTS[key]
    if old == now or key in RESUMABLE_FIELDS or key == last_steps:
      continue
    diffs.append((key.replace("#", " (count)"), old, now))
  return [(k, "(absent)" if o is missing else o, "(absent)" if n is missing else n)
          for k, o, n in diffs]


def _show(v: Any) -> str:
  return v if isinstance(v, str) and v == "(absent)" else json.dumps(v)


def _resume_problems(config, workdir: pathlib.Path) -> list[str]:
  saved_path = workdir / "config.json"
  if not saved_path.is_file() or not _has_checkpoint(workdir):
    return []
  try:
    saved = json.loads(saved_path.read_text())
  except (OSError, ValueError) as e:
    return [f"{saved_path}: cannot read the config of the run to resume ({e})"]
  new = _with_prerequisite_slots(resolved_json(config), config, workdir)
  diffs = config_differences(saved, new)
  if not diffs:
    return []
  shown = ", ".join(f"{k} {_show(o)} -> {_show(n)}" for k, o, n in diffs[:MAX_LISTED])
  if len(diffs) > MAX_LISTED:
    shown += f" and {len(diffs) - MAX_LISTED} more"
  return [f"{workdir} was trained with another config: {shown}; use a new --workdir (or "
          f"--config.init_from={workdir} to branch from its weights)"]


# -- command-line overrides ----------------------------------------------------------------------

def override_problem(argv: Iterable[str], flag: str = "config") -> str | None:
  """The first `--config.a.b[i]=v` of `argv` whose field does not exist, as one line (None if
  every override names a field); used when flag parsing fails on one."""
  from ml_collections.config_flags import config_path  # pylint: disable=import-outside-toplevel
  from medsr_jax import config_lib  # pylint: disable=import-outside-toplevel
  argv = list(argv)
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), None)
  if spec is None:
    return None
  config = config_lib.load_config(spec)
  for arg in argv:
    if not arg.startswith(f"--{flag}."):
      continue
    path = arg[len(f"--{flag}."):].split("=", 1)[0]
    node, where = config, flag
    for part in config_path.split(path):
      if isinstance(part, int):
        if not isinstance(node, (list, tuple)) or not -len(node) <= part < len(node):
          size = len(node) if isinstance(node, (list, tuple)) else 0
          return f"--{flag}.{path}: {where} has {size} entries, no [{part}]"
        node, where = node[part], f"{where}[{part}]"
      else:
        keys = list(node.keys()) if hasattr(node, "keys") else []
        if part not in keys:
          close = difflib.get_close_matches(str(part), [str(k) for k in keys], n=1)
          hint = f" (did you mean {where}.{close[0]}?)" if close else ""
          return f"--{flag}.{path}: {where} has no field {part!r}{hint}"
        node, where = node[part], f"{where}.{part}"
  return None
