"""Train, evaluate and export a super-resolution model from a config file.

  python -m medsr_jax.main --config=configs/rdst.py --workdir=runs/rdst
  python -m medsr_jax.main --config=configs/rdst.py:demo --workdir=runs/demo
  python -m medsr_jax.main --config=configs/rdst.py --config.data.global_batch_size=64 --workdir=...

`--config` takes `FILE[:ARGS]`; ARGS is passed to the file's `get_config(arg)`. Any field can be
overridden with `--config.a.b=value`. The resolved config is written to `WORKDIR/config.json`.
Running the same command again on the same workdir resumes from its latest checkpoint; only
intervals, `train.max_steps`, the data-loading workers and the last stage's `steps` may differ
from the saved config then (`config_checks.RESUMABLE_FIELDS`).

Before anything is built or written, `config_checks.check_run` checks the whole config, the
devices (mesh, batch split) and the workdir (writable, room for checkpoints, same config on
resume): each problem, like a misspelt `--config.` field, is one `error: ...` line and exit code 2.

On several hosts (TPU pods, GPU clusters) set `--config.distributed=True`: every process runs the
same command, `jax.distributed.initialize()` joins them (the coordinator is detected on TPU pods
and SLURM; elsewhere give `--config.coordinator_address=HOST:PORT --config.num_processes=N
--config.process_id=I`), and each process reads its own share of every batch.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
  # Before anything else: glibc reads this tunable only at process start (medsr_jax/hugepages.py).
  from medsr_jax import hugepages
  hugepages.reexec_with_hugepages()

# The input pipeline runs many small numpy matrix products (the exact bicubic) in grain threads;
# OpenBLAS's own thread pool on top of them oversubscribes the host (10x slower under load,
# experiments/bench_data.py). XLA does not use OpenBLAS. Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402  (after the environment default above)
import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from medsr_jax import config_checks
from medsr_jax import errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, FILE[:ARGS].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])

def write_config(config, workdir: pathlib.Path) -> None:
  """The resolved config, as JSON (for tools) next to the run's outputs; written atomically (a
  kill or a full disk leaves the old config.json or the new one, never a partial one)."""
  from medsr_jax.io import text_files  # pylint: disable=import-outside-toplevel
  text = json.dumps(config_checks.resolved_json(config), indent=2, sort_keys=True)
  text_files.write_text_atomic(workdir / "config.json", text + "\n", what="config")


def run(config, workdir: str) -> dict:
  """Dispatches `config.trainer`; returns the trainer's summary."""
  import jax  # imported here so that `--help` is instant

  if config.distributed:
    # CPU processes exchange data through gloo; accelerators use their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    explicit = dict(coordinator_address=config.coordinator_address or None,
                    num_processes=config.num_processes if config.num_processes > 0 else None,
                    process_id=config.process_id if config.process_id >= 0 else None)
    jax.distributed.initialize(**{k: v for k, v in explicit.items() if v is not None})
  return _train(config, pathlib.Path(workdir))


def _train(config, path: pathlib.Path) -> dict:
  """Runs `config`'s prerequisites (trainers/prerequisites.py), then its trainer, in `path`."""
  import jax  # pylint: disable=import-outside-toplevel
  from medsr_jax import trainers  # pylint: disable=import-outside-toplevel
  from medsr_jax.trainers import loop, prerequisites  # pylint: disable=import-outside-toplevel
  config_checks.check_run(config, path)   # before anything is created or written
  trainer_class = trainers.get(config.trainer)
  path.mkdir(parents=True, exist_ok=True)
  prerequisites.run_prerequisites(config, path, _train)
  if jax.process_index() == 0:
    write_config(config, path)
  logging.info("devices: %s", jax.devices())
  print(f"JAX {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{jax.process_count()} process(es); workdir {path}", flush=True)
  return loop.train_and_evaluate(trainer_class, config, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # library INFO chatter off; --verbosity=0 brings it back
    from medsr_jax import checkpoint  # pylint: disable=import-outside-toplevel
    checkpoint.quiet_orbax_logs()     # checkpoint problems are reported in one line each
  errors.cli_main(lambda: run(_CONFIG.value, _WORKDIR.value))


def check_config_argument(argv: list[str]) -> None:
  """Fails early, with one line, on a config file that does not exist (before absl's traceback)."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1].split(":", 1)[0]
      if not pathlib.Path(path).is_file():
        print(f"error: config file not found: {path}", file=sys.stderr)
        sys.exit(errors.EXIT_BAD_INPUT)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or `--config.` override as one line and exit 2 (absl
  alone prints a traceback for a misspelt field or an index out of range, and exits with 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
  except (AttributeError, KeyError, IndexError) as e:
    try:
      message = config_checks.override_problem(argv)
    except Exception:  # pylint: disable=broad-except
      message = None
    if message is None:
      raise
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(errors.EXIT_BAD_INPUT)


if __name__ == "__main__":
  check_config_argument(sys.argv)
  sys.exit(app.run(main, flags_parser=parse_flags))
