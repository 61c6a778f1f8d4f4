"""Super-resolves one image or volume with an exported model.

  python -m medsr_jax.infer --model_dir=runs/rdst/export --input=sub01.nii.gz \\
      --output=sub01_x4.nii.gz [--axis=2] [--batch_size=8]

Inputs: .png (8/16-bit grayscale), .npy, NIfTI (.nii, .nii.gz) and Analyze (.hdr/.img); the output
must have the same format (same extension) and goes into an existing directory.

2-D images are min-max normalised to [0, 1], super-resolved and mapped back to the input's range
(v * (max - min) + min). 3-D volumes are cut into slices along `--axis` the way the author's data
loaders do (reference spec §4.1): for axis 2 slice k is `vol[:, :, k].T`; min-max normalisation
is over the whole volume. Slices run through one jitted function in batches of `--batch_size`
(the last batch is padded, so nothing recompiles), are transposed back and stacked: the output
has `scale` times the in-plane size and the same number of slices. Its voxel size and affine are
adjusted so that it overlays the input (`medsr_jax.io.images.write_image`). NIfTI/Analyze 2-D
data follows the same convention as a one-slice volume (transposed).

The network output is clipped to [0, 1] before it is mapped back, so the result stays in the
input's intensity range. Bad input (missing or corrupt files, unsupported formats, NaN/Inf or
constant data, a broken model directory) gives `error: ...` on stderr, exit code 2, and no output.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import app, flags
import numpy as np

from medsr_jax import errors
from medsr_jax.errors import InputError
from medsr_jax.io import images

_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'Export directory (config.json + params).')
_INPUT = flags.DEFINE_string('input', None, 'Image or volume to super-resolve.')
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write the result (same format).')
_AXIS = flags.DEFINE_integer('axis', 2, 'Slice axis of a 3-D volume (0, 1 or 2).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Slices per forward pass.')
flags.mark_flags_as_required(['model_dir', 'input', 'output'])


def check_output_path(input_path: str, output_path: str) -> None:
  """InputError unless `output_path` has the input's extension, a directory, and is new."""
  in_ext, out_ext = images.extension(input_path), None
  try:
    out_ext = images.extension(output_path)
  except InputError:
    pass
  same = out_ext == in_ext or (in_ext in ('.hdr', '.img') and out_ext in ('.hdr', '.img'))
  if not same:
    raise InputError(f'{output_path}: output must have the same format as the input '
                     f'({in_ext} file expected)')
  directory = os.path.dirname(os.path.abspath(output_path))
  if not os.path.isdir(directory):
    raise InputError(f'{output_path}: output directory {directory} does not exist')

  def files(path):
    if images.image_kind(path) == 'analyze':
      return {os.path.abspath(p) for p in images.analyze_pair(path)}
    return {os.path.abspath(path)}

  if files(input_path) & files(output_path):
    raise InputError(f'{output_path}: output would overwrite the input')


# Compilations of the forward pass so far (tests check that a volume compiles once).
trace_count = 0


def make_sr_fn(module, variables, batch_size: int, log: Callable[[str], None] | None = None):
  """Returns `sr(slices)`: (N, H, W) float32 in [0, 1] -> (N, sH, sW), in fixed-size batches.

  The batching, padding and jit are `evaluate.Predictor`'s (outputs clipped to [0, 1]).
  """
  from medsr_jax import evaluate  # pylint: disable=g-import-not-at-top  (jax import is slow)

  def sr(slices: np.ndarray) -> np.ndarray:
    global trace_count
    predictor = evaluate.Predictor(module, max(1, min(batch_size, slices.shape[0])), clip=True)
    progress = None if log is None else (lambda msg: log(f'infer: {msg}'))
    out = predictor(variables, slices[..., None].astype(np.float32), log=progress)[..., 0]
    trace_count += predictor.traces
    return out

  return sr


def super_resolve(data: np.ndarray, sr, *, axis: int, transpose_2d: bool) -> np.ndarray:
  """Min-max normalises `data`, runs `sr` on its slices, maps the result back.

  Args:
    data: 2-D image (H, W) or 3-D volume.
    sr: (N, H, W) in [0, 1] -> (N, sH, sW), see `make_sr_fn`.
    axis: slice axis of a volume.
    transpose_2d: whether a 2-D input is a volume slice in (X, Y) order (NIfTI / Analyze), which
      the thesis' loaders transpose to (Y, X) first.
  """
  lo, hi = float(data.min()), float(data.max())
  x = (data - lo) / (hi - lo)
  if data.ndim == 2:
    plane = x.T if transpose_2d else x
    y = sr(plane[None].astype(np.float32))[0].astype(np.float64)
    y = y.T if transpose_2d else y
  else:
    a = axis % 3
    moved = np.moveaxis(x, a, -1)                      # (A, B, N); slice k = moved[:, :, k].T
    slices = np.transpose(moved, (2, 1, 0))            # (N, B, A)
    y = sr(np.ascontiguousarray(slices, dtype=np.float32)).astype(np.float64)  # (N, sB, sA)
    y = np.moveaxis(np.transpose(y, (2, 1, 0)), -1, a)
  return y * (hi - lo) + lo


def run(model_dir: str, input_path: str, output_path: str, axis: int = 2,
        batch_size: int = 8) -> dict:
  """Reads, super-resolves and writes; returns a small summary dict."""
  if batch_size < 1:
    raise InputError(f'--batch_size must be >= 1, got {batch_size}')
  if axis not in (-3, -2, -1, 0, 1, 2):
    raise InputError(f'--axis must be 0, 1 or 2, got {axis}')
  images.image_kind(input_path)
  check_output_path(input_path, output_path)
  image = images.read_image(input_path, axis=axis)

  from medsr_jax import export  # pylint: disable=g-import-not-at-top  (jax import is slow)
  module, variables, config = export.load_export(model_dir)
  scale = config['scale']
  if float(scale) != int(scale):
    raise InputError(f'{model_dir}: infer needs an integer scale, the model has {scale}')
  scale = int(scale)
  if int(config['in_channels']) != 1:
    raise InputError(f'{model_dir}: the model takes {config["in_channels"]} channels; infer '
                     'handles single-channel (grayscale) images only')

  is_volume = image.data.ndim == 3
  log = (lambda s: print(s, file=sys.stderr, flush=True)) if is_volume else None
  sr = make_sr_fn(module, variables, batch_size, log=log)
  out = super_resolve(image.data, sr, axis=axis,
                      transpose_2d=image.kind in ('nifti', 'analyze'))
  if is_volume:
    zoom = [scale] * 3
    zoom[axis % 3] = 1
  else:
    zoom = [scale, scale]
  images.write_image(output_path, out, like=image, zoom_factors=zoom)
  return {'input_shape': image.data.shape, 'output_shape': out.shape, 'scale': scale}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def go():
    summary = run(_MODEL_DIR.value, _INPUT.value, _OUTPUT.value, axis=_AXIS.value,
                  batch_size=_BATCH_SIZE.value)
    print(f'{_INPUT.value} {summary["input_shape"]} -> {_OUTPUT.value} '
          f'{summary["output_shape"]} (x{summary["scale"]})', flush=True)

  errors.cli_main(go)


if __name__ == '__main__':
  sys.exit(app.run(main))
