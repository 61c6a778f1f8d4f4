"""XLA:CPU compile options per model: which library runs the convolutions (issue 13, point 2).

XLA:CPU (jax 0.10.2) hands convolutions to YNNPACK fusions by default. On the 2-core
development CPU those run a 3x3, 64 -> 64 convolution's kernel gradient at ~33 GFLOP/s and its
forward at ~80, where XLA's Eigen path (`--xla_cpu_experimental_ynn_fusion_type=` empty: no
YNNPACK fusions) runs the same three convolutions at 110-150 GFLOP/s; the 48x48, 64 -> 256
upsampler convolution's kernel gradient takes 1.13 s with YNNPACK and ~0.3 s without. A whole
EDSR-lite train step (batch 32, 24 -> 96) goes from 4.6 s to 1.8 s and its inference from 16 to
29 slices/s (docs/BENCHMARKS.md, "XLA:CPU convolution library").

The Swin models (SwinIR, RDST) keep two of YNNPACK's fusion kinds, dots and reductions
(`SWIN_FUSIONS`), and run convolutions on Eigen:
  * XLA's own reductions (LayerNorm statistics, softmax sums, bias gradients) are slow: without
    YNNPACK's, RDST-E's train step took twice as long (8.5 -> 18.0 s), SwinIR-light's too.
  * YNNPACK's elementwise fusions run multi-op elementwise work 2-3x slower than XLA's loop
    fusions (GELU over 18432 x 240: 7.3 vs 2.8 ms; `a * b + 1`: 9.2 vs 3.4 ms); leaving them out
    took RDST-E's step from 11.0 to 8.5 s, RDST's (a scanned loop) from 25.1 to 22.7 s and
    SwinIR-light's from 5.55 to 5.20 s.
  * RDST-E's x4 up-sampler (48x48, 60 -> 240) had a kernel gradient of 1.6 s under YNNPACK's
    convolutions, 0.2 s on Eigen.
So models whose class sets `xla_cpu_ynn_fusions = True` compile with `SWIN_FUSIONS`, the others
with `EIGEN_CONVOLUTIONS`.

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
# YNNPACK for dots and reductions, XLA's loops for elementwise work, Eigen for convolutions.
SWIN_FUSIONS = {YNN_FLAG: 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'}
# The longest block stack unrolled on CPU (`scan_unroll`).
MAX_UNROLLED_BLOCKS = 6
DEFAULTS_ENV = 'MEDSR_XLA_CPU_DEFAULTS'


def scan_unroll(length: int, backend: Optional[str] = None, *, initializing: bool = False) -> int:
  """`nn.scan(..., unroll=)` for a model's block stack: on CPU the whole stack unrolled when it has
  at most `MAX_UNROLLED_BLOCKS` blocks (same stacked parameters, no while loop), else 1; 1 also
  while the model initialises (`initializing`: the parameters do not depend on it, and a rolled
  `init` compiled 5x faster for RDST).

  Inside XLA:CPU's while loop the scan's stacked residuals are written and read back with
  dynamic-update-slice / dynamic-slice fusions that ran 20-40x slower than the same copies
  alone (a quarter of RDST-E's step); unrolled, their indices are constants. The body is still
  traced once. Train steps (docs/BENCHMARKS.md, "Unrolled Swin stacks on CPU" and "Unrolled
  RDST-E, YNNPACK without its elementwise fusions, page faults"): SwinIR-light
  6.85 -> 4.97 s, compile 22 -> 29 s; RDST-E 13.0 -> 10.0 s, compile 40 -> 43 s. RDST's 8
  blocks stay a loop: unrolled, its gradient compiled 2.1x longer (13 -> 28 s on a 40x32 input),
  beyond the 2x the scan may cost.
  """
  backend = jax.default_backend() if backend is None else backend
  unrolls = backend == 'cpu' and length <= MAX_UNROLLED_BLOCKS and not initializing
  return length if unrolls else 1


def keeps_ynn_fusions(model: Any) -> bool:
  """Whether `model`'s class asks for YNNPACK's dot and reduce fusions (the Swin models)."""
  return bool(getattr(type(model), 'xla_cpu_ynn_fusions', False))


def compiler_options(model: Any, backend: Optional[str] = None) -> Optional[dict]:
  """`jax.jit(..., compiler_options=)` for a program of `model` on `backend` (default: JAX's
  default backend): on CPU Eigen convolutions, with YNNPACK's dot and reduce fusions for the
  Swin models; None elsewhere."""
  backend = jax.default_backend() if backend is None else backend
  if backend != 'cpu':
    return None
  if os.environ.get(DEFAULTS_ENV, '') == '1' or YNN_FLAG in os.environ.get('XLA_FLAGS', ''):
    return None
  return dict(SWIN_FUSIONS if keeps_ynn_fusions(model) else EIGEN_CONVOLUTIONS)
