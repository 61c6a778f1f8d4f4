"""XLA:CPU compile options per model: which library runs the convolutions (issue 13, point 2).

XLA:CPU (jax 0.10.2) hands convolutions to YNNPACK fusions by default. On the 2-core
development CPU those run a 3x3, 64 -> 64 convolution's kernel gradient at ~33 GFLOP/s and its
forward at ~80, where XLA's Eigen path (`--xla_cpu_experimental_ynn_fusion_type=` empty: no
YNNPACK fusions) runs the same three convolutions at 110-150 GFLOP/s; the 48x48, 64 -> 256
upsampler convolution's kernel gradient takes 1.13 s with YNNPACK and ~0.3 s without. A whole
EDSR-lite train step (batch 32, 24 -> 96) goes from 4.6 s to 1.8 s and its inference from 16 to
29 slices/s (docs/BENCHMARKS.md, "XLA:CPU convolution library").

The Swin models keep YNNPACK's other fusions (dots, elementwise, reductions): without them
the stacked-residual updates of their scanned step run on XLA's slow dynamic-update-slice loops
and SwinIR-light's step takes twice as long. Their convolutions go to Eigen too: RDST-E's x4
upsampler (48x48, 60 -> 240) had a kernel gradient of 1.6 s under YNNPACK, 0.2 s on Eigen, and its
train step went from 15.3 to 12.0 s (SwinIR-light, whose convolutions are small, unchanged within
noise). So models whose class sets `xla_cpu_ynn_fusions = True` (SwinIR, RDST) compile with
`SWIN_FUSIONS`, the others with `EIGEN_CONVOLUTIONS`.

`compiler_options(model)` gives the options for one jitted program of `model` (the train step,
inference), per program, so that one process can hold both kinds; `None` off CPU, or when the
environment variable `MEDSR_XLA_CPU_DEFAULTS=1` asks for XLA's defaults everywhere (e.g. to
compare). Options a user puts in `XLA_FLAGS` for this flag win: then this returns None as well.

Run `python -m pytest tests/test_convolution.py -k compiler_options`.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax

YNN_FLAG = 'xla_cpu_experimental_ynn_fusion_type'
# No YNNPACK fusions: convolutions and dots on XLA's own (Eigen) path.
EIGEN_CONVOLUTIONS = {YNN_FLAG: ''}
# YNNPACK for dots, elementwise fusions and reductions, Eigen for convolutions (the Swin models).
SWIN_FUSIONS = {YNN_FLAG: ','.join(f'LIBRARY_FUSION_TYPE_{kind}'
                                   for kind in ('DOT', 'ELTWISE', 'REDUCE'))}
DEFAULTS_ENV = 'MEDSR_XLA_CPU_DEFAULTS'


def scan_unroll(length: int, backend: Optional[str] = None) -> int:
  """`nn.scan(..., unroll=)` for SwinIR's RSTB stack: the whole stack unrolled on CPU (same
  stacked parameters, no while loop), 1 elsewhere. (RDST keeps its loop: with 8 blocks the
  unrolled program's compile time would be ~3x the scanned one's, models/rdst.py.)

  Inside XLA:CPU's while loop the scan's stacked residuals are written and read back with
  dynamic-update-slice / dynamic-slice fusions that ran 20-40x slower than the same copies
  alone; unrolled, their indices are constants. SwinIR-light's train step: 6.85 -> 4.97 s,
  compile 22 -> 29 s (docs/BENCHMARKS.md, "Swin attention formulation"). The body is still traced
  once.
  """
  backend = jax.default_backend() if backend is None else backend
  return length if backend == 'cpu' else 1


def keeps_ynn_fusions(model: Any) -> bool:
  """Whether `model`'s class asks for XLA:CPU's default YNNPACK fusions (the Swin models)."""
  return bool(getattr(type(model), 'xla_cpu_ynn_fusions', False))


def compiler_options(model: Any, backend: Optional[str] = None) -> Optional[dict]:
  """`jax.jit(..., compiler_options=)` for a program of `model` on `backend` (default: JAX's
  default backend): on CPU Eigen convolutions, with YNNPACK's dot / elementwise / reduce fusions
  for the Swin models; None elsewhere."""
  backend = jax.default_backend() if backend is None else backend
  if backend != 'cpu':
    return None
  if os.environ.get(DEFAULTS_ENV, '') == '1' or YNN_FLAG in os.environ.get('XLA_FLAGS', ''):
    return None
  return dict(SWIN_FUSIONS if keeps_ynn_fusions(model) else EIGEN_CONVOLUTIONS)
