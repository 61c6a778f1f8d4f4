"""Benchmark: training and inference throughput of RDST and RDST-E on whatever device JAX finds.

  python -m experiments.bench_train                       # thesis setting: batch 32, 24 -> 96, x4
  python -m experiments.bench_train --models=rdst_e --steps=5 --batch=8

Prints one markdown row per model: train steps/s and images/s (the jitted, sharded train step of
`medsr_jax.trainers.step` with donated state, after compilation), compile time, peak device memory
(allocator statistics on GPU/TPU; peak resident memory of the process on CPU), and inference
slices/s for a 40x32 -> 160x128 slice (an OASIS x4 test slice), batch 1.
Timing is measured here, never asserted in tests.
"""

from __future__ import annotations

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from medsr_jax import config_lib, models, sharding
from medsr_jax.trainers import state as state_lib, step as step_lib

_MODELS = flags.DEFINE_list("models", ["rdst", "rdst_e"], "Registered model names.")
_BATCH = flags.DEFINE_integer("batch", 32, "Global batch size (thesis: 32).")
_LR_PATCH = flags.DEFINE_integer("lr_patch", 24, "LR patch size (thesis: 24 at x4).")
_SCALE = flags.DEFINE_integer("scale", 4, "Upscaling factor.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps (after one warm-up step).")
_INFER = flags.DEFINE_integer("infer_iters", 20, "Timed inference calls.")


def _peak_memory_mb() -> float:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2 ** 20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _block(tree):
  return jax.tree.map(lambda x: x.block_until_ready(), tree)


def bench_model(name: str) -> dict:
  mesh = sharding.make_mesh((-1, 1))
  model = models.build(name, scale=_SCALE.value, in_channels=1)
  train_cfg = config_lib.base_sr_config().train
  stage = config_lib.stage("l1", steps=100_000, learning_rate=2e-4)
  tx = step_lib.make_optimizer(train_cfg, stage)
  lp, hp = _LR_PATCH.value, _LR_PATCH.value * _SCALE.value

  def init():
    params = model.init(jax.random.key(0), jnp.zeros((1, lp, lp, 1)))["params"]
    return state_lib.init_state({"g": state_lib.init_player(params, tx, ema=False)},
                                jax.random.key(1))

  state_sh = sharding.tree_shardings(jax.eval_shape(init), mesh)
  state = jax.jit(init, out_shardings=state_sh)()
  n_params = models.count_params({"params": state["players"]["g"]["params"]})
  batch_sh = sharding.batch_sharding(mesh)
  step = step_lib.jit_train_step(
      step_lib.make_train_step(step_lib.pixel_objective(model, "l1"), tx, loss_threshold=1e8,
                               name=f"bench_{name}"),
      state_sh, {"lr": batch_sh, "hr": batch_sh}, sharding.replicated(mesh))
  rng = np.random.default_rng(0)
  batch = sharding.global_batch({"lr": rng.random((_BATCH.value, lp, lp, 1), np.float32),
                                 "hr": rng.random((_BATCH.value, hp, hp, 1), np.float32)}, mesh)
  t0 = time.perf_counter()
  state, metrics = step(state, batch)
  _block(metrics)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = step(state, batch)
  _block(metrics)
  train_s = (time.perf_counter() - t0) / _STEPS.value

  infer = jax.jit(lambda p, x: model.apply({"params": p}, x))
  x = jnp.asarray(rng.random((1, 160 // _SCALE.value, 128 // _SCALE.value, 1), np.float32))
  _block(infer(state["players"]["g"]["params"], x))
  t0 = time.perf_counter()
  for _ in range(_INFER.value):
    y = infer(state["players"]["g"]["params"], x)
  _block(y)
  infer_s = (time.perf_counter() - t0) / _INFER.value
  return dict(model=name, params=n_params, compile_s=compile_s, steps_per_s=1 / train_s,
              images_per_s=_BATCH.value / train_s, peak_mb=_peak_memory_mb(),
              slices_per_s=1 / infer_s)


def main(argv):
  del argv
  dev = jax.devices()[0]
  print(f"# bench_train: {jax.device_count()} x {dev.platform} ({dev.device_kind}), "
        f"batch {_BATCH.value}, LR {_LR_PATCH.value} -> HR {_LR_PATCH.value * _SCALE.value}, "
        f"x{_SCALE.value}\n")
  print("| model | params | compile (s) | train steps/s | images/s | process peak memory (MiB) "
        "| inference 40x32->160x128 slices/s |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for name in _MODELS.value:
    r = bench_model(name)
    print(f"| {r['model']} | {r['params']:,} | {r['compile_s']:.1f} | {r['steps_per_s']:.3f} | "
          f"{r['images_per_s']:.1f} | {r['peak_mb']:.0f} | {r['slices_per_s']:.1f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
