"""Expand a config file's ablation grid into one `medsr_jax.main` command per grid point.

  python -m experiments.sweep --config=configs/rdst.py --workdir=runs/rdst_grid          # print
  python -m experiments.sweep --config=configs/rdst.py:demo --workdir=runs/grid --run    # run all
  python -m experiments.sweep --config=configs/rdst.py --workdir=runs/grid -- \
      --config.train.frozen.unet=runs/unet/export      # flags after `--` go to every point

A config file declares its grid with `sweep(add)`, calling `add(**{"a.b": value, ...})` once per
point (see `configs/rdst.py`); a point may also give `config_arg="..."`, the ARGS after the file's
colon for that point (e.g. `model=rdst_e` in configs/baseline.py, where the model name decides
every architecture field). Each point becomes `--config.a.b=value` overrides and its own
workdir under `--workdir`, named after the overrides. A value may name another point's
workdir through `{grid}` (the grid's directory): `add(config_arg='stage=gan',
init_from='{grid}/stage=warmup')` branches from the grid's warm-up point (list that point
first); such derived values are not part of the point's name. Every override is checked against the
config before anything is printed or run, so a typo in a grid fails at once. Printing the
commands lets a cluster scheduler (one job per line) run the grid; `--run` runs them here, one
after another; a rerun resumes each point from its checkpoints.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import subprocess
import sys

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


def _derived(value) -> bool:
  return isinstance(value, str) and GRID in value


def point_name(point: dict) -> str:
  """A directory name for a grid point, e.g. 'model.kwargs.num_blocks=4'."""
  parts = [str(v) if k == CONFIG_ARG else f"{k}={v}" for k, v in sorted(point.items())
           if not _derived(v)]
  return ",".join(re.sub(r"[^\w.=,-]", "", part) for part in parts)


def _config_flag(config_arg: str, point: dict) -> str:
  path, _, arg = config_arg.partition(":")
  arg = point.get(CONFIG_ARG, arg)
  return f"--config={path}:{arg}" if arg else f"--config={path}"


def commands(config_arg: str, workdir: str) -> list[list[str]]:
  return [[sys.executable, "-m", "medsr_jax.main", _config_flag(config_arg, p),
           f"--workdir={pathlib.Path(workdir) / point_name(p)}"] +
          [f"--config.{k}={str(v).replace(GRID, str(workdir))}" for k, v in sorted(p.items())
           if k != CONFIG_ARG]
          for p in grid_points(config_arg)]


def main(argv=None):
  # argparse, not absl flags: medsr_jax.main already defines --config/--workdir as absl flags.
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="config file with sweep(add), FILE[:ARGS]")
  parser.add_argument("--workdir", required=True, help="parent of the grid points' workdirs")
  parser.add_argument("--run", action="store_true", help="run the commands here, in turn")
  args, extra = parser.parse_known_args(argv)
  extra = [a for a in extra if a != "--"]
  for cmd in commands(args.config, args.workdir):
    cmd = cmd + extra
    print(shlex.join(cmd), flush=True)
    if args.run:
      subprocess.run(cmd, check=True)


if __name__ == "__main__":
  main()
