"""PyTorch layout of pytorch-fid's `fid_inception_v3()` <-> `models.inception.FIDInceptionV3`.

Key map (`tests/data/state_dicts/fid_inception.json` lists every key, reference spec §8.4):

  {conv}.conv.weight          (out, in, kh, kw)  -> params/{path}/conv/kernel (kh, kw, in, out)
  {conv}.bn.weight / .bias                       -> params/{path}/bn/scale / bias
  {conv}.bn.running_mean / .running_var          -> batch_stats/{path}/bn/mean / var
  {conv}.bn.num_batches_tracked                  structural (any integer scalar, 0 exported)

  fc.weight (1008, 2048) / fc.bias               -> params/fc/kernel (2048, 1008) / bias

where {conv} is a stem conv (`Conv2d_1a_3x3`, ..., `Conv2d_4a_3x3`) or `Mixed_{5b..7c}.branch*`
and {path} the same names split at the dot. The 1008-way `fc` (ImageNet logits) is not used by
FID but is part of pytorch-fid's file and of the reference layout, so it is kept and round-trips.
pytorch-fid's file was saved by an old PyTorch and has no `num_batches_tracked` buffers; that is
accepted (they are structural).

  python -m medsr_jax.export --model=fid_inception \\
      --from_torch=pt_inception-2015-12-05-6726825d.pth --out=weights/fid_inception

Run `python -m pytest tests/test_fid.py`.
"""

from __future__ import annotations

from typing import Any, Mapping

from medsr_jax import torch_layouts as tl
from medsr_jax.errors import InputError
from medsr_jax.models import inception
from medsr_jax.torch_layouts import blocks as tb

SOURCE_HINT = ("pass pytorch-fid's pt_inception-2015-12-05-6726825d.pth (from "
               "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth) or its tensors as .npz/.safetensors")


def _conv_entries(path: tuple[str, ...], spec: inception.ConvSpec) -> list[tl.Entry]:
  key = '.'.join(path)
  kh, kw = spec.kernel
  out = [tl.Entry(f'{key}.conv.weight', (spec.dout, spec.din, kh, kw),
                  path=path + ('conv', 'kernel'), transform='conv')]
  return out + tb.batch_norm(f'{key}.bn', path + ('bn',), spec.dout)


def entries(model: Any) -> list[tl.Entry]:
  """The ordered pytorch-fid state-dict layout (every model has the same one)."""
  del model
  out = []
  for path, spec in inception.all_convs():
    out += _conv_entries(path, spec)
  return out + tb.linear('fc', ('fc',), inception.FEATURES, inception.NUM_CLASSES)


_from_torch, to_torch = tb.converters(entries)


def from_torch(model: Any, state_dict: Mapping[str, Any]) -> dict:
  """{'params', 'batch_stats'} from pytorch-fid's FID Inception state dict."""
  if not any(str(k).startswith('Mixed_7c.') for k in state_dict):
    found = ', '.join(repr(str(k)) for k in list(state_dict)[:3]) or 'nothing'
    raise InputError(f'not a pytorch-fid Inception-v3 state dict: no Mixed_7c.* tensors (found '
                     f'{found}); {SOURCE_HINT}')
  return _from_torch(model, state_dict)
