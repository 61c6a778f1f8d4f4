"""Rematerialisation of the repeated blocks: `--config.train.remat=none|blocks|full`.

  none    (default) the backward pass reads every activation the forward pass kept.
  blocks  each block of a model's repeated stack (RDSTB, RSTB, RCAN's residual group, RDB,
          RRDB, ResBlock, ConvNeXt block) runs under `nn.remat`: only the block inputs are kept
          across the forward pass, and one block's inner activations are recomputed at a time
          in the backward pass. Costs about one more forward pass of the stack.
  full    `blocks`, and the whole network's forward pass under `jax.checkpoint` as well
          (`trainers.step.model_forward`): nothing of the network is kept while the loss terms
          run (VGG-19, the U-Net, the discriminator of the G step), when the compiler schedules
          the recomputation after them. Costs about two more forward passes. On XLA:CPU it
          measured the same as 'blocks' (docs/BENCHMARKS.md): prefer 'blocks'.

Measured with XLA's memory analysis on the CPU (rdst_e, batch 8, 24 -> 96, float32): the train
step's temporaries are 1,418 MiB with 'none', 391 MiB with 'blocks'. Remat-ing the Swin layers
inside each block as well (a third level) measured no lower (404 MiB) and is not offered.

The switch is not a model option. The trainer's step runs under `use(mode)` while it is traced
(`trainers.step.jit_step` does this), and the models wrap their block class with `block(cls)`
when they build their stack, scanned (`nn.scan(block(ScannedX, scanned=True), ...)`) or unrolled
(`block(X)(..., name=f'body_{i}')`). `nn.remat` adds no scope of its own, so the parameter tree
(and checkpoints, exports, the PyTorch layouts) is the same in every mode; a model traced outside
`use` (inference, export, init) runs as before.

Run `python -m pytest tests/test_precision.py`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Iterator

import flax.linen as nn

MODES = ('none', 'blocks', 'full')

_MODE: contextvars.ContextVar[str] = contextvars.ContextVar('medsr_remat', default='none')


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f'remat must be one of {MODES}, got {mode!r}')
  return mode


def mode() -> str:
  """The rematerialisation mode of the program being traced ('none' outside `use`)."""
  return _MODE.get()


@contextlib.contextmanager
def use(remat_mode: str) -> Iterator[None]:
  """Models built (traced) inside this context rematerialise their blocks per `remat_mode`."""
  token = _MODE.set(check_mode(remat_mode))
  try:
    yield
  finally:
    _MODE.reset(token)


@functools.lru_cache(maxsize=None)
def _remat_class(cls, prevent_cse: bool):
  return nn.remat(cls, prevent_cse=prevent_cse)


def block(cls, *, scanned: bool = False):
  """`cls`, or `nn.remat(cls)` when the traced program rematerialises its blocks.

  `scanned`: the class is an `nn.scan` body; the scan already keeps XLA from merging the
  recomputation with the forward pass, so the CSE barrier (`prevent_cse`) is left out there.
  """
  if mode() == 'none':
    return cls
  return _remat_class(cls, not scanned)
