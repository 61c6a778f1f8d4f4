"""PyTorch layout of the author's SRGAN-style `Discriminator` (`loss/wgan.py`) <-> Flax.

Key map (spec §5.15; `tests/data/state_dicts/{srgan_d,wgan_gp_d}.json` list every key):

  features.{i}.0          -> conv_{i}   (3x3, no bias in the reference; bias kept if conv_bias)
  features.{i}.1          -> bn_{i}     (BatchNorm2d, only without 'GP' in gan_type: srgan_d)
  classifier.0            -> fc1        (Linear(512 p^2, 1024); flattened in NCHW order)
  classifier.2            -> fc2        (Linear(1024, 1))
  *.num_batches_tracked   structural: any integer scalar accepted, 0 exported.

Used for 'srgan_d' and 'wgan_gp_d'; `miassr_d` (same network as wgan_gp_d) can call
`from_torch` / `to_torch` here directly. The fc1 input size follows the model's `input_size`.

Run `python -m pytest tests/test_discriminators.py`.
"""

from __future__ import annotations

from typing import Any

from medsr_jax import torch_layouts as tl
from medsr_jax.torch_layouts import blocks as tb


def entries(model: Any) -> list[tl.Entry]:
  """The ordered state-dict layout of the reference Discriminator matching `model`."""
  out = []
  c = model.in_channels
  for i, w in enumerate(model.widths):
    out += tb.conv(f'features.{i}.0', (f'conv_{i}',), c, w, 3, bias=model.conv_bias)
    if model.batch_norm:
      out += tb.batch_norm(f'features.{i}.1', (f'bn_{i}',), w)
    c = w
  p = model.feature_size()
  out += tb.linear('classifier.0', ('fc1',), c * p * p, model.fc_features)
  out += tb.linear('classifier.2', ('fc2',), model.fc_features, 1)
  return out


from_torch, to_torch = tb.converters(entries)
