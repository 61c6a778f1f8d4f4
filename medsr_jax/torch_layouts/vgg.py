"""PyTorch layout of torchvision's `vgg19().features` <-> `models.vgg.VGG19Features`.

Key map (`tests/data/state_dicts/vgg19.json` lists every key):

  features.{N}.weight / .bias  -> conv{b}_{i}/kernel / bias   (N = 0, 2, 5, 7, 10, ..., 34)

torchvision's whole file (`vgg19-dcbb9e9d.pth`) also holds `classifier.{0,3,6}.weight/bias`, the
fully connected head, which no perceptual loss uses: `from_torch` leaves every key under
`IGNORED_PREFIXES` out (the converter prints one line saying how many), so both the whole file
and a features-only state dict import. A state dict without any `features.*` key is an
InputError that says what to pass (`SOURCE_HINT`). A module built with fewer taps (e.g.
layers=('vgg22',)) has only the convs up to its deepest tap, and so has its layout.

Run `python -m pytest tests/test_vgg.py`.
"""

from __future__ import annotations

from typing import Any, Mapping

from medsr_jax import torch_layouts as tl
from medsr_jax.errors import InputError
from medsr_jax.models import vgg
from medsr_jax.torch_layouts import blocks as tb

IGNORED_PREFIXES = ('classifier.',)
IGNORED_NOTE = 'not needed for VGG features'
SOURCE_HINT = ("pass torchvision's vgg19-dcbb9e9d.pth (or its features.* tensors as "
               ".npz/.safetensors)")


def entries(model: Any) -> list[tl.Entry]:
  """The ordered `features.N` layout of the convs `model` builds."""
  out = []
  c = vgg.IN_CHANNELS
  for name, index, width in vgg.conv_names()[:model.num_convs()]:
    out += tb.conv(f'features.{index}', (name,), c, width, 3)
    c = width
  return out


_from_torch, to_torch = tb.converters(entries)


def ignored_keys(state_dict: Mapping[str, Any]) -> list[str]:
  """The keys of `state_dict` that `from_torch` leaves out (torchvision's classifier)."""
  return [k for k in state_dict if str(k).startswith(IGNORED_PREFIXES)]


def from_torch(model: Any, state_dict: Mapping[str, Any]) -> dict:
  """{'params': ...} from torchvision's vgg19 state dict (whole, or only its `features.*`)."""
  if not any(str(k).startswith('features.') for k in state_dict):
    found = ', '.join(repr(str(k)) for k in list(state_dict)[:3]) or 'nothing'
    raise InputError(f'not a VGG-19 state dict: no features.* tensors (found {found}); '
                     f'{SOURCE_HINT}')
  dropped = set(ignored_keys(state_dict))
  kept = {k: v for k, v in state_dict.items() if k not in dropped}
  return _from_torch(model, kept)

