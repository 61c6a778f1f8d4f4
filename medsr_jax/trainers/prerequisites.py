"""Prerequisite runs: other configs a run trains first, whose exports it then uses.

A config lists them as `config.prerequisites = {name: 'FILE[:ARGS]'}`. Before the main run,
each one runs (with every trainer's usual resume) into `WORKDIR/prerequisites/<name>/`, and is
skipped when its `export/` already exists. Its export then becomes
  * the frozen network `name` of the main run (`config.train.frozen.<name>`) when the config has
    such a slot (e.g. 'vgg'; later the segmentation U-Net of chapter 5, the lesion detector of
    chapter 3), or
  * the generator's starting weights (`config.init_from`) when `name` is 'init' (a shared
    warm-up that ablation variants continue from).
So one command trains, e.g., the segmentation U-Net and then RDST with it. A prerequisite whose
slot the config already fills by hand (or 'init' with `init_from` set) is not run.

Run `python -m pytest tests/test_prerequisites.py`.
"""

from __future__ import annotations

import pathlib
from typing import Callable

from medsr_jax import config_lib, export
from medsr_jax.errors import InputError

INIT = "init"
DIRECTORY = "prerequisites"


def export_dir(workdir: pathlib.Path, name: str) -> pathlib.Path:
  return workdir / DIRECTORY / name / "export"


def run_prerequisites(config, workdir: pathlib.Path,
                      run_one: Callable[[object, pathlib.Path], object]) -> None:
  """Runs the missing prerequisites of `config` with `run_one(config, workdir)` and points
  `config` at their exports."""
  prerequisites = config.get("prerequisites", None)
  if not prerequisites:
    return
  for name, spec in prerequisites.items():
    frozen = config.train.get("frozen", {})
    if name != INIT and name not in frozen:
      raise InputError(f"prerequisite {name!r} has no use: it must be {INIT!r} or one of the "
                       f"frozen networks {sorted(frozen)}")
    if name != INIT and frozen[name]:
      print(f"prerequisite {name!r}: skipped, train.frozen.{name} is given ({frozen[name]})",
            flush=True)
      continue
    if name == INIT and config.get("init_from", ""):
      print(f"prerequisite {name!r}: skipped, init_from is given ({config.init_from})", flush=True)
      continue
    target = export_dir(workdir, name)
    if not (target / export.CONFIG_FILE).is_file():
      print(f"prerequisite {name!r}: running {spec} in {target.parent}", flush=True)
      run_one(config_lib.load_config(spec), target.parent)
    else:
      print(f"prerequisite {name!r}: using {target}", flush=True)
    if name == INIT:
      if not config.get("init_from", ""):
        config.init_from = str(target)
    elif not frozen[name]:
      config.train.frozen[name] = str(target)
