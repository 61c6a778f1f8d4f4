"""Command line of `python -m medsr_jax.export`: PyTorch state dict <-> medsr_jax export directory.

  # the author's PyTorch weights -> an export directory (config.json + params.npz)
  python -m medsr_jax.export --model=rdst --scale=4 --in_channels=1 \\
      --from_torch=rdst_x4.safetensors --out=exports/rdst_x4
  # an export directory (e.g. runs/rdst/export) -> a PyTorch state dict with the reference keys
  python -m medsr_jax.export --model_dir=runs/rdst/export --to_torch=rdst_x4.npz

State-dict files: .npz (read with allow_pickle=False) and .safetensors are read and written without
PyTorch. A .pt / .pth file is read only through `torch.load(..., weights_only=True)` when PyTorch
happens to be installed (nothing is ever unpickled otherwise) and written with `torch.save` the
same way. A checkpoint that wraps the weights ({'state_dict': ...}, {'model': ...}, ...) or whose
keys carry DataParallel's 'module.' prefix is unwrapped. `--model_kwargs` is a JSON object of
architecture options for `models.build` (e.g. '{"reference_tail_scale": 2.0}').

  # torchvision's VGG-19 for the perceptual losses (its classifier.* tensors are left out, with
  # one line saying so; nothing is ever downloaded)
  python -m medsr_jax.export --model=vgg19 --from_torch=vgg19-dcbb9e9d.pth --out=weights/vgg19
  # pytorch-fid's FID Inception-v3 for the FID metric (`medsr_jax.metrics.fid`)
  python -m medsr_jax.export --model=fid_inception \\
      --from_torch=pt_inception-2015-12-05-6726825d.pth --out=weights/fid_inception

Every key is checked (`medsr_jax.export_torch`): a missing, extra or mis-shaped key is a one-line
error naming it, exit code 2, and nothing is written; so are an unknown `--model` and a tensor
holding NaN or infinite values. Outputs are written atomically.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Mapping

from absl import app, flags
import jax
import numpy as np

from medsr_jax import errors
from medsr_jax import export
from medsr_jax import export_torch
from medsr_jax import models
from medsr_jax import torch_layouts
from medsr_jax.errors import InputError
from medsr_jax.io import images


STATE_DICT_SUFFIXES = ('.npz', '.safetensors', '.pt', '.pth')
WRAPPER_KEYS = ('state_dict', 'model_state_dict', 'model', 'generator', 'net', 'params')


def _suffix(path: str) -> str:
  lower = path.lower()
  for s in STATE_DICT_SUFFIXES:
    if lower.endswith(s):
      return s
  raise InputError(f'{path}: unsupported state-dict file (use {", ".join(STATE_DICT_SUFFIXES)})')


def _torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise InputError('reading or writing .pt/.pth needs PyTorch, which is not installed; '
                     'convert the file to .safetensors or .npz first') from e
  return torch


def _unwrap(obj: Any, path: str) -> Mapping[str, Any]:
  """The flat {key: tensor} inside a checkpoint, without a DataParallel 'module.' prefix."""
  for _ in range(3):
    if isinstance(obj, Mapping) and obj and all(hasattr(v, 'shape') for v in obj.values()):
      break
    inner = [k for k in WRAPPER_KEYS if isinstance(obj, Mapping) and k in obj]
    if not inner:
      raise InputError(f'{path}: not a state dict (a mapping from names to tensors)')
    obj = obj[inner[0]]
  else:
    raise InputError(f'{path}: not a state dict (a mapping from names to tensors)')
  keys = list(obj)
  if keys and all(k.startswith('module.') for k in keys):
    obj = {k[len('module.'):]: v for k, v in obj.items()}
  return obj


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """{key: numpy array} from a .npz, .safetensors or (with PyTorch installed) .pt/.pth file."""
  suffix = _suffix(path)
  if not os.path.isfile(path):
    raise InputError(f'{path}: file not found')
  try:
    if suffix == '.npz':
      with np.load(path, allow_pickle=False) as z:
        raw = {k: np.asarray(z[k]) for k in z.files}
    elif suffix == '.safetensors':
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
      raw = dict(load_file(path))
    else:
      raw = _torch().load(path, map_location='cpu', weights_only=True)
  except InputError:
    raise
  except Exception as e:  # corrupt zip / header / pickle-free loader refusal
    raise InputError(f'{path}: cannot read state dict ({" ".join(str(e).split())})') from e
  sd = _unwrap(raw, path)
  return {str(k): (v.detach().cpu().numpy() if hasattr(v, 'detach') else np.asarray(v))
          for k, v in sd.items()}


def check_finite(sd: Mapping[str, np.ndarray], path: str) -> None:
  """InputError naming the first floating-point tensor of `sd` with a NaN or infinite value."""
  for key, value in sd.items():
    value = np.asarray(value)
    if value.dtype.kind not in 'fc' and 'float' not in value.dtype.name:
      continue
    if not np.all(np.isfinite(value.astype(np.complex128 if value.dtype.kind == 'c'
                                           else np.float64))):
      raise InputError(f'{path}: tensor {key!r} contains NaN or infinite values')


def check_model_name(model: str) -> None:
  """InputError unless `model` is a registered model name."""
  if model not in models.available():
    raise InputError(f'unknown model {model!r}; available: {", ".join(models.available())}')


def write_state_dict(path: str, sd: Mapping[str, np.ndarray]) -> None:
  """Writes `sd` atomically as .npz, .safetensors or (with PyTorch) .pt/.pth."""
  suffix = _suffix(path)
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise InputError(f'{path}: directory {directory} does not exist')
  with images.temp_path(path, suffix) as tmp:
    if suffix == '.npz':
      with open(tmp, 'xb') as f:
        np.savez(f, **sd)
    elif suffix == '.safetensors':
      from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
      save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, tmp)
    else:
      torch = _torch()
      torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, tmp)
    os.replace(tmp, path)


def _model_kwargs(text: str) -> dict[str, Any]:
  try:
    kwargs = json.loads(text)
  except ValueError as e:
    raise InputError(f'--model_kwargs is not valid JSON: {e}') from e
  if not isinstance(kwargs, dict):
    raise InputError('--model_kwargs must be a JSON object')
  return kwargs


def import_torch(model: str, state_dict_path: str, out_dir: str, *, scale: float,
                 in_channels: int, model_kwargs: Mapping[str, Any], fmt: str = 'npz',
                 log: Callable[[str], None] = print) -> dict:
  """PyTorch state-dict file -> export directory; returns the export's config.

  Keys that the model's layout leaves out on purpose (torchvision VGG's classifier) are reported
  in one `log` line; an error is followed by the layout's hint on what file to pass, if it has one.
  """
  check_model_name(model)
  has_layout = model in torch_layouts.names()
  hint = torch_layouts.source_hint(model) if has_layout else ''
  try:
    sd = read_state_dict(state_dict_path)
    check_finite(sd, state_dict_path)
    note = torch_layouts.ignored_note(model, sd) if has_layout else ''
    if note:
      log(note)
    variables = export_torch.variables_from_torch(model, sd, scale=scale,
                                                  in_channels=in_channels, **model_kwargs)
  except InputError as e:
    if hint and hint not in str(e):
      raise InputError(f'{e}; {hint}') from e
    raise
  return export.save_export(out_dir, model_name=model, model_kwargs=model_kwargs, scale=scale,
                            in_channels=in_channels, params=variables, fmt=fmt,
                            extra={'imported_from': os.path.abspath(state_dict_path)})


def export_torch_file(model_dir: str, out_path: str) -> dict[str, np.ndarray]:
  """Export directory -> PyTorch state-dict file with the reference keys; returns the dict."""
  _suffix(out_path)
  module, variables, config = export.load_export(model_dir)
  sd = torch_layouts.get(config['model']).to_torch(module, jax.device_get(variables))
  write_state_dict(out_path, sd)
  return sd


def define_flags() -> None:
  """Defines the converter's flags when it runs (`run_main`), not on import, so that its flag
  names (`scale`, `model_dir`, ...) can also be used by the other commands."""
  flags.DEFINE_string('model', None, 'Model name (with --from_torch).')
  flags.DEFINE_float('scale', 4.0, 'SR scale the weights were trained for.')
  flags.DEFINE_integer('in_channels', 1, 'Image channels.')
  flags.DEFINE_string('model_kwargs', '{}', 'JSON object of model options.')
  flags.DEFINE_string('from_torch', None, 'PyTorch state dict to import.')
  flags.DEFINE_string('out', None, 'Export directory to write (with --from_torch).')
  flags.DEFINE_enum('format', 'npz', sorted(export.PARAM_FILES), 'Parameter file format.')
  flags.DEFINE_string('model_dir', None, 'Export directory to convert (--to_torch).')
  flags.DEFINE_string('to_torch', None, 'PyTorch state dict file to write.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def go():
    f = flags.FLAGS
    if f.from_torch and not f.to_torch:
      if not f.model or not f.out:
        raise InputError('--from_torch needs --model and --out')
      config = import_torch(f.model, f.from_torch, f.out, scale=f.scale,
                            in_channels=f.in_channels, model_kwargs=_model_kwargs(f.model_kwargs),
                            fmt=f.format)
      print(f'{f.from_torch} -> {f.out} ({config["model"]} x{config["scale"]}, '
            f'{config["param_count"]:,} params)')
    elif f.to_torch and not f.from_torch:
      if not f.model_dir:
        raise InputError('--to_torch needs --model_dir')
      sd = export_torch_file(f.model_dir, f.to_torch)
      print(f'{f.model_dir} -> {f.to_torch} ({len(sd)} keys)')
    else:
      raise InputError('give either --from_torch (with --model, --out) or --to_torch '
                       '(with --model_dir)')

  errors.cli_main(go)


def run_main() -> None:
  define_flags()
  app.run(main)


if __name__ == '__main__':
  define_flags()
  sys.exit(app.run(main))
