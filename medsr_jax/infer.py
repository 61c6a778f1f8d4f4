"""Super-resolves one image or volume with an exported model.

  python -m medsr_jax.infer --model_dir=runs/rdst/export --input=sub01.nii.gz \\
      --output=sub01_x4.nii.gz [--axis=2] [--batch_size=8]

  # an arbitrary-scale (meta) model such as MIASSR (thesis ch. 4) at any scale s > 1:
  python -m medsr_jax.infer --model_dir=runs/miassr/export --scale=2.5 --input=sub01.nii.gz \\
      --output=sub01_x2.5.nii.gz

Inputs: .png (8/16-bit grayscale), .npy, NIfTI (.nii, .nii.gz) and Analyze (.hdr/.img); the output
must have the same format (same extension) and goes into an existing directory.

`--scale` (default: the model's own scale from the export's config.json):
  * arbitrary-scale meta models ('miassr', 'meta_rdn', ...): any finite s > 1. The thesis trains
    them on (1, 4]; above that a `note:` line on stderr says so and the run goes on. Meta-MDSR
    also needs ceil(s) among its MDSR heads (2, 3, 4).
  * MDSR: one of its scales (2, 3 or 4).
  * fixed-scale models: only their own scale; any other is an error (use a meta model, or the
    up-and-down evaluation of `python -m medsr_jax.evaluate`).
  The scale is checked against the model's config before the image or the parameters are read.

2-D images are min-max normalised to [0, 1], super-resolved and mapped back to the input's range
(v * (max - min) + min). 3-D volumes are cut into slices along `--axis` the way the author's data
loaders do (reference spec §4.1): for axis 2 slice k is `vol[:, :, k].T`; min-max normalisation
is over the whole volume. Slices run through one jitted function in batches of `--batch_size`
(the last batch is padded, so nothing recompiles), are transposed back and stacked. Each h x w
slice becomes int(s h) x int(s w) (the meta-upscale size rule; exactly s h x s w for integer s);
the number of slices is unchanged. NIfTI/Analyze 2-D data follows the same convention as a
one-slice volume (transposed).

NIfTI / Analyze output: the voxel size of each in-plane axis is multiplied by the exact ratio
input size / output size of that axis (45 voxels -> 112 at s = 2.5: zoom * 45 / 112; the slice
axis keeps its voxel size), and sform / qform are moved to match, so that the output grid spans
the same field of view as the input and overlays it in world space
(`medsr_jax.io.images.write_image`). PNG and .npy outputs are just the array.

The network output is clipped to [0, 1] before it is mapped back, so the result stays in the
input's intensity range. Bad input (missing or corrupt files, unsupported formats, NaN/Inf or
constant data, a broken model directory, a scale the model cannot run) gives `error: ...` on
stderr, exit code 2, and no output.
"""

from __future__ import annotations

import math
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
_SCALE = flags.DEFINE_float(
    'scale', None, 'Super-resolution scale (default: the model\'s own). Any s > 1 for '
    'arbitrary-scale (meta) models such as miassr; 2, 3 or 4 for mdsr; fixed-scale models run '
    'only at their own scale.')
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


def check_scale_flag(scale: float | None) -> float | None:
  """`--scale` as a float (None: not given); InputError unless it is a finite number > 1."""
  if scale is None:
    return None
  try:
    s = float(scale)
  except (TypeError, ValueError):
    raise InputError(f'--scale must be a number > 1, got {scale!r}') from None
  if not math.isfinite(s) or s <= 1:
    raise InputError(f'--scale must be a finite number > 1, got {scale}')
  return s


def _frozen(value):
  """JSON lists as tuples (hashable module fields), like `export.load_export` builds them."""
  if isinstance(value, list):
    return tuple(_frozen(v) for v in value)
  if isinstance(value, dict):
    return {k: _frozen(v) for k, v in value.items()}
  return value


def _config_module(config: dict):
  """The (unbound, parameter-free) module that config.json describes, or None if it cannot be
  built (then `export.load_export` reports why)."""
  from medsr_jax import models  # pylint: disable=g-import-not-at-top
  try:
    return models.build(config['model'], scale=config['scale'],
                        in_channels=config['in_channels'], **_frozen(config['model_kwargs']))
  except (ValueError, TypeError):
    return None


def _scales_text(scales) -> str:
  items = [f'{float(k):g}' for k in scales]
  return ', '.join(items[:-1]) + f' or {items[-1]}' if len(items) > 1 else ''.join(items)


def resolve_scale(config: dict, module, requested: float | None,
                  note: Callable[[str], None] | None = None) -> float | int:
  """The scale to run the model of `config` at, given `--scale` (None: the model's own).

  Arbitrary-scale (meta) models take any s > 1 (`note` is told when s is above the largest
  training scale; Meta-MDSR needs ceil(s) among its heads); MDSR one of its `scales`;
  fixed-scale models only their own (integer) scale. Returns an int for MDSR and fixed-scale
  models, a float for meta models. InputError for a scale the model cannot run.
  """
  name, own = config['model'], config['scale']
  if module is None:  # unbuildable config: load_export will say why
    return own if requested is None else requested
  from medsr_jax.models import registry  # pylint: disable=g-import-not-at-top
  kind = registry.convention_of(module).scale_arg
  if kind == 'required':  # arbitrary-scale meta model
    s = float(own) if requested is None else requested
    feature = module.feature_model() if hasattr(module, 'feature_model') else None
    heads = getattr(feature, 'scales', None)
    if heads is not None and registry.convention_of(feature).takes_scale:
      if math.ceil(s) not in {int(k) for k in heads}:  # Meta-MDSR: head ceil(s)
        raise InputError(f'model {name!r} cannot super-resolve x{s:g}: its MDSR feature '
                         f'extractor needs ceil(scale) to be {_scales_text(sorted(heads))}')
    from medsr_jax.models import meta_sr  # pylint: disable=g-import-not-at-top
    top = max(meta_sr.TRAINING_SCALES)
    if s > top and note is not None:
      note(f'note: {name} was trained on scales up to x{top:g} (thesis ch. 4); x{s:g} is '
           'beyond that range, the result may be less reliable')
    return s
  if kind == 'optional':  # MDSR: one of its per-scale branches
    heads = tuple(getattr(module, 'scales', ()) or (own,))
    s = float(own) if requested is None else requested
    if s not in {float(k) for k in heads}:
      raise InputError(f'model {name!r} (MDSR) super-resolves x{_scales_text(heads)} only, not '
                       f'x{s:g}')
    return int(s)
  # Fixed-scale model.
  if float(own) != int(own):
    raise InputError(f'{name}: infer needs an integer scale for a fixed-scale model, the model '
                     f'has {own}')
  if requested is not None and requested != float(own):
    raise InputError(f'model {name!r} is a fixed-scale x{int(own)} model; it cannot '
                     f'super-resolve x{requested:g} (use an arbitrary-scale model such as '
                     'miassr, or evaluate it with the up-and-down protocol: '
                     'python -m medsr_jax.evaluate)')
  return int(own)


def make_sr_fn(module, variables, batch_size: int, log: Callable[[str], None] | None = None,
               scale: float | int | None = None):
  """Returns `sr(slices)`: (N, H, W) float32 in [0, 1] -> (N, H', W'), in fixed-size batches.

  H' x W' is int(s H) x int(s W) at scale s. The batching, padding and jit are
  `evaluate.Predictor`'s (outputs clipped to [0, 1]); `scale` goes to it (None: the model's own;
  a fixed-scale model accepts only its own, see `resolve_scale`).
  """
  from medsr_jax import evaluate  # pylint: disable=g-import-not-at-top  (jax import is slow)

  def sr(slices: np.ndarray) -> np.ndarray:
    global trace_count
    predictor = evaluate.Predictor(module, max(1, min(batch_size, slices.shape[0])), clip=True,
                                   scale=scale)
    progress = None if log is None else (lambda msg: log(f'infer: {msg}'))
    out = predictor(variables, slices[..., None].astype(np.float32), log=progress)[..., 0]
    trace_count += predictor.traces
    return out

  return sr


def super_resolve(data: np.ndarray, sr, *, axis: int, transpose_2d: bool) -> np.ndarray:
  """Min-max normalises `data`, runs `sr` on its slices, maps the result back.

  Args:
    data: 2-D image (H, W) or 3-D volume.
    sr: (N, H, W) in [0, 1] -> (N, H', W') of any size (int(s H) x int(s W) at scale s), see
      `make_sr_fn`.
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
    y = sr(np.ascontiguousarray(slices, dtype=np.float32)).astype(np.float64)  # (N, B', A')
    y = np.moveaxis(np.transpose(y, (2, 1, 0)), -1, a)
  return y * (hi - lo) + lo


def _to_stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def zoom_factors(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[float]:
  """Per axis, output size / input size: exactly the scale for integer scales, e.g. 112 / 45 for
  a 45-voxel axis at s = 2.5, and 1 for the slice axis. `images.write_image` divides the voxel
  sizes by these (so they become zoom * input / output) and moves the affine to match."""
  return [o / i for i, o in zip(in_shape, out_shape)]


def run(model_dir: str, input_path: str, output_path: str, axis: int = 2,
        batch_size: int = 8, scale: float | None = None) -> dict:
  """Reads, super-resolves and writes; returns a small summary dict.

  `scale`: None for the model's own scale, else see the module docstring (`--scale`). It is
  checked against the export's config.json before the input or the parameters are read.
  """
  if batch_size < 1:
    raise InputError(f'--batch_size must be >= 1, got {batch_size}')
  if axis not in (-3, -2, -1, 0, 1, 2):
    raise InputError(f'--axis must be 0, 1 or 2, got {axis}')
  requested = check_scale_flag(scale)
  images.image_kind(input_path)
  check_output_path(input_path, output_path)
  images.check_file(input_path)  # a mistyped name fails before the (slow) jax import

  from medsr_jax import export  # pylint: disable=g-import-not-at-top  (jax import is slow)
  config = export.read_config(model_dir)
  run_scale = resolve_scale(config, _config_module(config), requested, note=_to_stderr)
  if int(config['in_channels']) != 1:
    raise InputError(f'{model_dir}: the model takes {config["in_channels"]} channels; infer '
                     'handles single-channel (grayscale) images only')

  image = images.read_image(input_path, axis=axis)
  module, variables, _ = export.load_export(model_dir)
  is_volume = image.data.ndim == 3
  sr = make_sr_fn(module, variables, batch_size, log=_to_stderr if is_volume else None,
                  scale=run_scale)
  out = super_resolve(image.data, sr, axis=axis,
                      transpose_2d=image.kind in ('nifti', 'analyze'))
  images.write_image(output_path, out, like=image,
                     zoom_factors=zoom_factors(image.data.shape, out.shape))
  return {'input_shape': image.data.shape, 'output_shape': out.shape, 'scale': run_scale}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def go():
    summary = run(_MODEL_DIR.value, _INPUT.value, _OUTPUT.value, axis=_AXIS.value,
                  batch_size=_BATCH_SIZE.value, scale=_SCALE.value)
    print(f'{_INPUT.value} {summary["input_shape"]} -> {_OUTPUT.value} '
          f'{summary["output_shape"]} (x{summary["scale"]:g})', flush=True)

  errors.cli_main(go)


if __name__ == '__main__':
  sys.exit(app.run(main))
