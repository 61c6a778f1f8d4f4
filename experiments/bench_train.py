"""Benchmark: training and inference throughput of RDST and RDST-E on whatever device JAX finds.

  python -m experiments.bench_train                       # thesis setting: batch 32, 24 -> 96, x4
  python -m experiments.bench_train --models=rdst_e --steps=5 --batch=8
  python -m experiments.bench_train --models=edsr_lite,rdst_e --scan_blocks=both   # scan vs loop
  python -m experiments.bench_train --models=rdst,rdst_e,swinir_light,miassr --precision=both \
      --remat=none,blocks                                  # an accelerator: bf16 and remat rows

Prints one markdown row per model (and precision / remat setting): train steps/s and images/s
(the jitted, sharded train step of `medsr_jax.trainers.step` with donated state, after
compilation), model GFLOP per step and MFU, compile time, the compiled step's peak memory
estimate (XLA's memory analysis: arguments + outputs - donated + temporaries), the measured peak
memory (allocator statistics on GPU/TPU; peak resident memory of the process on CPU, so with
several rows in one run it is the largest so far), and inference slices/s for a 40x32 -> 160x128
slice (an OASIS x4 test slice), batch 1. Timing is measured here, never asserted in tests.

Model FLOPs and MFU. `train_step_flops` takes the multiply-accumulates of one forward pass of the
whole batch from `medsr_jax.complexity`'s counter (every convolution and matmul, attention
products included; scan bodies times their length; elementwise ops, softmax and norms not
counted) and counts a train step as 3 forward passes' FLOPs = 6 x MACs: 2 FLOPs per MAC, and
the backward pass costs two forwards (the input gradient and the weight gradient of every
conv / matmul). Recomputation by `--remat` is not counted (model FLOPs, not hardware FLOPs), so
a remat row shows the MFU it costs. MFU = FLOPs per step x steps/s / the device's peak:
`--peak_tflops`, or by default the dense peak of the device kind at the row's precision
(`PEAK_TFLOPS`; H200 as H100 SXM; CPU: the ~0.45 TFLOP/s float32 matmul rate measured on the
2-core development machine, issue 13); unknown devices get no MFU. On GPUs XLA's default
precision lets float32 convolutions and matmuls run as TF32, so an fp32 row's MFU against the
float32 peak may exceed what plain float32 arithmetic could reach.

`time_train_step` and `time_inference` are the two measurements, also used by
`experiments.bench_vs_torch` (one measurement per subprocess there); each returns the time of
every timed call, each call waited for.
"""

from __future__ import annotations

if __name__ == "__main__":
  # Before jax is imported: the steps users get from `medsr_jax.main` (medsr_jax/hugepages.py).
  from medsr_jax import hugepages
  hugepages.reexec_with_hugepages()

import math  # noqa: E402  (after the re-exec above)
import resource
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from medsr_jax import complexity, config_lib, cpu_compile, models, sharding
from medsr_jax.trainers import state as state_lib, step as step_lib


def define_flags():
  """The command-line flags (defined only when run as a script, so that other modules can import
  the timing functions without clashing flag names)."""
  flags.DEFINE_list("models", ["rdst", "rdst_e"], "Registered model names.")
  flags.DEFINE_integer("batch", 32, "Global batch size (thesis: 32).")
  flags.DEFINE_integer("lr_patch", 24, "LR patch size (thesis: 24 at x4).")
  flags.DEFINE_integer("scale", 4, "Upscaling factor.")
  flags.DEFINE_integer("steps", 10, "Timed train steps (after one warm-up step).")
  flags.DEFINE_integer("infer_iters", 20, "Timed inference calls.")
  flags.DEFINE_enum("scan_blocks", "default", ["default", "true", "false", "both"],
                    "Stack identical blocks with nn.scan (models with a scan_blocks option): "
                    "the model's default, on, off, or one row each.")
  flags.DEFINE_enum("precision", "fp32", ["fp32", "bf16", "both"],
                    "Train-step compute precision (--config.train.precision), or one row each.")
  flags.DEFINE_list("remat", ["none"], "Rematerialisation modes (--config.train.remat), one row "
                    "each: none, blocks, full.")
  flags.DEFINE_float("peak_tflops", 0.0, "Device peak TFLOP/s for the MFU column; 0: the dense "
                     "peak of the device kind at the row's precision (PEAK_TFLOPS).")


# Dense peak TFLOP/s by device kind (a substring of `device_kind`, first match) and precision.
# GPUs: vendor data sheets, without sparsity. CPU: measured float32 matmul rate of the 2-core
# development machine (issue 13); its bf16 figure is the same number (no faster bf16 path).
PEAK_TFLOPS = (
    ("H200", {"bf16": 989.0, "fp32": 67.0}),           # as H100 SXM (same GH100 compute)
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "fp32": 67.0}),           # SXM
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
    ("cpu", {"bf16": 0.45, "fp32": 0.45}),
)


def peak_tflops(device_kind: str, precision: str, override: float = 0.0) -> Optional[float]:
  """The peak TFLOP/s MFU is measured against: `override` when > 0, else `PEAK_TFLOPS`' entry for
  `device_kind` (case-insensitive substring) at `precision`; None for an unknown device."""
  if override > 0:
    return float(override)
  kind = device_kind.lower()
  for key, peaks in PEAK_TFLOPS:
    if key.lower() in kind:
      return peaks[precision]
  return None


def train_step_flops(model, *, batch: int, lr_patch: int, scale: float) -> int:
  """Model FLOPs of one train step of `model` on `batch` LR `lr_patch`^2 patches: 6 x the MACs
  of the forward pass (`complexity.count_macs`; module docstring)."""
  args, kwargs = complexity.forward_inputs(model, scale, lr_patch, lr_patch, batch)
  apply = lambda v, *a: model.apply(v, *a, **kwargs)
  macs = complexity.count_macs(apply, models.abstract_variables(model), *args)
  return 6 * macs.total


def mfu(flops_per_step: float, steps_per_s: float, peak: Optional[float]) -> Optional[float]:
  """Model FLOPs utilisation: achieved FLOP/s over `peak` TFLOP/s (None without a peak)."""
  if not peak:
    return None
  return flops_per_step * steps_per_s / (peak * 1e12)


def _peak_memory_mb() -> float:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2 ** 20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _block(tree):
  return jax.tree.map(lambda x: x.block_until_ready(), tree)


def _build(name: str, scale: int, scan_blocks: bool | None):
  options = {} if scan_blocks is None else {"scan_blocks": scan_blocks}
  return models.build(name, scale=scale, in_channels=1, **options)


def time_train_step(name: str, *, batch: int = 32, lr_patch: int = 24, scale: int = 4,
                    steps: int = 10, warmup: int = 0, scan_blocks: bool | None = None,
                    precision: str = "fp32", remat: str = "none") -> dict:
  """Times the real train step of `name`: `make_train_step(pixel_objective(model, 'l1'))`, jitted
  with shardings and the state donated, on a random batch of `batch` LR `lr_patch`^2 -> HR
  (`lr_patch * scale`)^2 patches, under `ComputePolicy(precision, remat)`. The first call
  (compilation) and `warmup` more are untimed.

  Returns dict(params, compile_s, times: seconds of each timed step, variables: the trained
  generator's variables, memory: the compiled step's `step.memory_stats` or None).
  """
  mesh = sharding.make_mesh((-1, 1))
  model = _build(name, scale, scan_blocks)
  train_cfg = config_lib.base_sr_config().train
  stage = config_lib.stage("l1", steps=100_000, learning_rate=2e-4)
  tx = step_lib.make_optimizer(train_cfg, stage)
  lp, hp = lr_patch, lr_patch * scale

  def init():
    variables = model.init(jax.random.key(0), jnp.zeros((1, lp, lp, 1)))
    params, model_state = step_lib.split_variables(variables)
    player = state_lib.init_player(params, tx, ema=False, model_state=model_state)
    return state_lib.init_state({state_lib.GENERATOR: player}, jax.random.key(1))

  state_sh = sharding.tree_shardings(jax.eval_shape(init), mesh)
  state = jax.jit(init, out_shardings=state_sh)()
  n_params = models.count_params({"params": state["players"]["g"]["params"]})
  batch_sh = sharding.batch_sharding(mesh)
  step = step_lib.jit_train_step(
      step_lib.make_train_step(step_lib.pixel_objective(model, "l1"), tx, loss_threshold=1e8,
                               name=f"bench_{name}"),
      state_sh, {"lr": batch_sh, "hr": batch_sh}, sharding.replicated(mesh),
      policy=step_lib.ComputePolicy(precision, remat), report_memory=False,
      compiler_options=cpu_compile.compiler_options(model))
  rng = np.random.default_rng(0)
  data = sharding.global_batch({"lr": rng.random((batch, lp, lp, 1), np.float32),
                                "hr": rng.random((batch, hp, hp, 1), np.float32)}, mesh)
  t0 = time.perf_counter()
  state, metrics = step(state, data)
  _block(metrics)
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, metrics = step(state, data)
    _block(metrics)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = step(state, data)
    _block(metrics)
    times.append(time.perf_counter() - t0)
  g = state["players"]["g"]
  return dict(params=n_params, compile_s=compile_s, times=times,
              variables={"params": g["params"], **g["model_state"]}, memory=step.memory)


def time_inference(name: str, *, height: int = 40, width: int = 32, scale: int = 4,
                   iters: int = 20, warmup: int = 0, scan_blocks: bool | None = None,
                   variables: dict | None = None) -> dict:
  """Times the jitted forward pass of `name` on one `height` x `width` LR slice (batch 1), with
  `variables` (default: a fresh init). The first call (compilation) and `warmup` more are
  untimed. Returns dict(compile_s, times: seconds of each timed call)."""
  model = _build(name, scale, scan_blocks)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((1, height, width, 1), np.float32))
  if variables is None:
    variables = jax.jit(model.init)(jax.random.key(0), x)
  infer = jax.jit(model.apply, compiler_options=cpu_compile.compiler_options(model))
  t0 = time.perf_counter()
  _block(infer(variables, x))
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    _block(infer(variables, x))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    _block(infer(variables, x))
    times.append(time.perf_counter() - t0)
  return dict(compile_s=compile_s, times=times)


def bench_model(name: str, scan_blocks: bool | None = None, precision: str = "fp32",
                remat: str = "none") -> dict:
  f = flags.FLAGS
  train = time_train_step(name, batch=f.batch, lr_patch=f.lr_patch, scale=f.scale,
                          steps=f.steps, scan_blocks=scan_blocks, precision=precision,
                          remat=remat)
  train_s = sum(train["times"]) / len(train["times"])
  infer = time_inference(name, height=160 // f.scale, width=128 // f.scale, scale=f.scale,
                         iters=f.infer_iters, scan_blocks=scan_blocks,
                         variables=train["variables"])
  infer_s = sum(infer["times"]) / len(infer["times"])
  label = name if scan_blocks is None else f"{name} (scan_blocks={scan_blocks})"
  flops = train_step_flops(_build(name, f.scale, scan_blocks), batch=f.batch,
                           lr_patch=f.lr_patch, scale=f.scale)
  peak = peak_tflops(jax.devices()[0].device_kind, precision, f.peak_tflops)
  memory = train["memory"] or {}
  return dict(model=label, precision=precision, remat=remat, params=train["params"],
              compile_s=train["compile_s"], steps_per_s=1 / train_s,
              images_per_s=f.batch / train_s, gflop_per_step=flops / 1e9,
              mfu=mfu(flops, 1 / train_s, peak), compiled_peak_mb=memory.get("peak", math.nan)
              / 2 ** 20, peak_mb=_peak_memory_mb(), slices_per_s=1 / infer_s)


HEADER = ("| model | precision | remat | params | compile (s) | train steps/s | images/s "
          "| GFLOP/step | MFU | compiled peak (MiB) | measured peak (MiB) "
          "| inference 40x32->160x128 slices/s |\n"
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def format_row(r: dict) -> str:
  """One markdown row of `bench_model`'s result."""
  mfu_text = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
  return (f"| {r['model']} | {r['precision']} | {r['remat']} | {r['params']:,} "
          f"| {r['compile_s']:.1f} | {r['steps_per_s']:.3f} | {r['images_per_s']:.1f} "
          f"| {r['gflop_per_step']:.1f} | {mfu_text} | {r['compiled_peak_mb']:.0f} "
          f"| {r['peak_mb']:.0f} | {r['slices_per_s']:.1f} |")


def main(argv):
  del argv
  f = flags.FLAGS
  dev = jax.devices()[0]
  precisions = ["fp32", "bf16"] if f.precision == "both" else [f.precision]
  for mode in f.remat:
    step_lib.ComputePolicy(remat=mode)  # ValueError for an unknown mode, before any work
  peaks = ", ".join(f"{p} {peak_tflops(dev.device_kind, p, f.peak_tflops) or '?'}"
                    for p in precisions)
  print(f"# bench_train: {jax.device_count()} x {dev.platform} ({dev.device_kind}), "
        f"batch {f.batch}, LR {f.lr_patch} -> HR {f.lr_patch * f.scale}, x{f.scale}; "
        f"MFU against peak TFLOP/s: {peaks}\n")
  print(HEADER)
  for name in f.models:
    scans = {"default": [None], "true": [True], "false": [False], "both": [True, False]}
    for scan in scans[f.scan_blocks]:
      if scan is not None and "scan_blocks" not in models.default_options(name):
        scan = None
      for precision in precisions:
        for mode in f.remat:
          print(format_row(bench_model(name, scan, precision, mode)), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
