"""Fréchet Inception Distance as the thesis computes it (thesis §4.3.2, ch. 5 tables; [175]).

  from medsr_jax.metrics import fid
  variables = fid.load_fid_inception('weights/fid_inception')     # converted once, see below
  fid.fid(hr, sr, variables)                                       # (N, H, W, C) in [0, 1]
  report = fid.fid_per_subject(hr, sr, variables, subjects)        # the thesis' number
  report['value'], report['per_subject']

Protocol (the author's `metrics/fid.py`, a copy of pytorch-fid 0.3.0; reference spec §8.4):
  * network: pytorch-fid's FID Inception-v3 (`models.inception`), 2048-d pool3 features;
  * preprocessing, per image: a grey channel is replicated to RGB; bilinear resize to 299 x 299
    exactly as `F.interpolate(mode='bilinear', align_corners=False)` (no antialiasing: half-pixel
    centres, source index clamped at 0, the right/bottom neighbour clamped at the edge); then
    x -> 2x - 1 (inputs in [0, 1], not clipped first, as the evaluation never clips SR outputs,
    spec §8.1);
  * statistics and distance: `metrics.frechet` (float64 mean and unbiased covariance, pytorch-fid's
    1e-6 shift for singular covariances, which per-subject sets of < 2048 slices always are);
  * images with C != 3 channels (1 for MR slices, 4 for BraTS' modalities): FID per channel, each
    replicated to RGB, then the mean over channels (spec §8.4); C = 3 is taken as RGB;
  * the set: all slices of ONE test subject (GT vs SR, per scale); the reported FID is the mean
    over test subjects (spec §8.4 and §11 item 8): `fid_per_subject`. It is not pooled over the
    whole test set; `fid` gives the pooled number for one set.
  The author's code crops ceil(scale) border pixels of both images before every metric (spec
  §8.1); that crop belongs to the caller (`evaluate`), as for PSNR / SSIM.

Weights: the thesis uses pytorch-fid's TF-ported Inception weights, which are not shipped and
never downloaded. Get `pt_inception-2015-12-05-6726825d.pth` from `WEIGHTS_URL` and convert it
once (PyTorch needed only for this step; the .pth is read with weights_only=True):

  python -m medsr_jax.export --model=fid_inception \\
      --from_torch=pt_inception-2015-12-05-6726825d.pth --out=weights/fid_inception

`load_fid_inception(path)` reads that export directory (or its params file), a state dict with
pytorch-fid's keys as .npz / .safetensors, or the .pth itself when PyTorch is installed.

Compilation: `inception_features` runs preprocessing + network under one `jax.jit`, compiled once
per (batch_size, H, W, C); the last batch is padded, so a whole evaluation compiles once per
slice shape. Convolutions run at 'highest' precision (see `models.inception`).

Run `python -m pytest tests/test_fid.py`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax.errors import InputError
from medsr_jax.metrics import frechet
from medsr_jax.models import inception

MODEL_NAME = 'fid_inception'
SIZE = inception.FID_SIZE          # 299
FEATURES = inception.FEATURES      # 2048
BATCH_SIZE = 16                    # the author's (spec §8.4); results do not depend on it
WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
               + WEIGHTS_FILE)
CONVERT_COMMAND = (f'python -m medsr_jax.export --model={MODEL_NAME} --from_torch={WEIGHTS_FILE} '
                   f'--out=weights/{MODEL_NAME}')
CONVERT_HINT = (f'download {WEIGHTS_URL} and convert it once with `{CONVERT_COMMAND}` (needs '
                f'PyTorch), then pass weights/{MODEL_NAME}')

_MODEL = inception.FIDInceptionV3()


# ----------------------------------------------------------------------------------------------
# Preprocessing.


def resize_matrix(n_in: int, n_out: int = SIZE) -> np.ndarray:
  """(n_out, n_in) float32 weights of PyTorch's 1-D bilinear resize, align_corners=False.

  As ATen's CPU kernel: scale = n_in / n_out and src = scale (dst + 0.5) - 0.5 in float32,
  clamped at 0; i0 = floor(src), i1 = min(i0 + 1, n_in - 1), weights (1 - l, l) with l = src - i0.
  Resizing rows then columns with these matrices is `F.interpolate(..., 'bilinear')`.
  """
  if n_in < 1 or n_out < 1:
    raise InputError(f'cannot resize {n_in} pixels to {n_out}')
  scale = np.float32(n_in) / np.float32(n_out)
  dst = np.arange(n_out, dtype=np.float32)
  src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
  i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  lam = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
  w = np.zeros((n_out, n_in), np.float32)
  rows = np.arange(n_out)
  np.add.at(w, (rows, i0), np.float32(1) - lam)
  np.add.at(w, (rows, i1), lam)
  return w


def resize_bilinear(images: jax.Array, size: int = SIZE) -> jax.Array:
  """(N, H, W, C) -> (N, size, size, C): `F.interpolate(mode='bilinear', align_corners=False)`."""
  h, w = images.shape[1:3]
  x = images.astype(jnp.float32)
  if h != size:
    x = jnp.einsum('oh,nhwc->nowc', jnp.asarray(resize_matrix(h, size)), x,
                   precision=jax.lax.Precision.HIGHEST)
  if w != size:
    x = jnp.einsum('pw,nowc->nopc', jnp.asarray(resize_matrix(w, size)), x,
                   precision=jax.lax.Precision.HIGHEST)
  return x


def preprocess(images: jax.Array) -> jax.Array:
  """(N, H, W, 1 or 3) in [0, 1] -> (N, 299, 299, 3) in [-1, 1] (pytorch-fid's input path)."""
  x = resize_bilinear(images)
  if x.shape[-1] == 1:
    x = jnp.broadcast_to(x, x.shape[:-1] + (3,))
  return 2.0 * x - 1.0


# Two programs: the resize compiles per input size (cheap), the network once per batch size, so
# evaluating at many scales (a GT size per scale) does not recompile the Inception each time.
_preprocess_batch = jax.jit(preprocess)


@jax.jit
def _network_batch(variables: Any, images299: jax.Array) -> jax.Array:
  return _MODEL.apply(variables, images299)


def _features_batch(variables: Any, images: jax.Array) -> jax.Array:
  return _network_batch(variables, _preprocess_batch(images))


# ----------------------------------------------------------------------------------------------
# Features and distances.


def _check_images(name: str, images: Any, channels: Optional[Sequence[int]] = None) -> np.ndarray:
  x = np.asarray(images)
  if x.ndim != 4:
    raise InputError(f'{name} must be images shaped (N, H, W, C), got {x.shape}')
  if channels is not None and x.shape[-1] not in channels:
    raise InputError(f'{name} has {x.shape[-1]} channels; inception_features takes 1 (grey) or 3 '
                     '(RGB): use fid() / fid_per_subject() for other channel counts')
  if x.shape[0] < 1 or min(x.shape[1:]) < 1:
    raise InputError(f'{name} is empty: {x.shape}')
  if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
    raise InputError(f'{name} must hold real numbers, got {x.dtype}')
  x = x.astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise InputError(f'{name} contains NaN or infinite values')
  return x


def inception_features(variables: Any, images: Any, batch_size: int = BATCH_SIZE) -> np.ndarray:
  """(N, 2048) float64 pool3 features of (N, H, W, 1 or 3) images in [0, 1].

  Runs `preprocess` + the network in batches of `batch_size` (the last one padded with zeros and
  dropped); the network compiles once per batch size, the resize once per (H, W, C).
  """
  x = _check_images('images', images, channels=(1, 3))
  if int(batch_size) < 1:
    raise InputError(f'batch_size must be positive, got {batch_size}')
  b = int(batch_size)
  n = x.shape[0]
  pad = (-n) % b
  if pad:
    x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
  variables = jax.device_put(variables)
  out = [np.asarray(_features_batch(variables, x[i:i + b])) for i in range(0, x.shape[0], b)]
  return np.concatenate(out)[:n].astype(np.float64)


def _channel_views(x: np.ndarray) -> list[np.ndarray]:
  """RGB as one view; otherwise one grey view per channel (spec §8.4)."""
  if x.shape[-1] == 3:
    return [x]
  return [x[..., c:c + 1] for c in range(x.shape[-1])]


def _check_pair(real: Any, fake: Any) -> tuple[np.ndarray, np.ndarray]:
  real = _check_images('real_images', real)
  fake = _check_images('fake_images', fake)
  if real.shape[-1] != fake.shape[-1]:
    raise InputError(f'real and fake images have {real.shape[-1]} and {fake.shape[-1]} channels')
  return real, fake


def fid_per_channel(real_images: Any, fake_images: Any, variables: Any, *,
                    batch_size: int = BATCH_SIZE) -> list[float]:
  """FID(fake, real) of each channel (one value for RGB), each set as a whole (>= 2 images)."""
  real, fake = _check_pair(real_images, fake_images)
  variables = jax.device_put(variables)  # once, not per inception_features call
  out = []
  for r, f in zip(_channel_views(real), _channel_views(fake)):
    feats_r = inception_features(variables, r, batch_size)
    feats_f = inception_features(variables, f, batch_size)
    out.append(frechet.frechet_distance(feats_f, feats_r))
  return out


def fid(real_images: Any, fake_images: Any, variables: Any, *,
        batch_size: int = BATCH_SIZE) -> float:
  """FID between two image sets (N, H, W, C) in [0, 1], N >= 2 each: the mean over channels of
  `fid_per_channel` (the author's `fid` call for one set)."""
  return float(np.mean(fid_per_channel(real_images, fake_images, variables,
                                       batch_size=batch_size)))


def subject_groups(subjects: Any, n: int) -> dict[str, np.ndarray]:
  """{subject id: slice positions}, in order of first appearance. `subjects`: None (one subject
  'all'), one id for every slice, or one id per slice (bytes decoded); the convention of
  `evaluate.scales`."""
  if subjects is None:
    ids = ['all'] * n
  elif isinstance(subjects, (str, bytes)) or np.ndim(subjects) == 0:
    value = subjects.decode() if isinstance(subjects, bytes) else subjects
    ids = [str(value)] * n
  else:
    ids = [s.decode() if isinstance(s, bytes) else str(s) for s in list(subjects)]
    if len(ids) != n:
      raise InputError(f'subjects: {len(ids)} ids for {n} slices')
  groups: dict[str, list[int]] = {}
  for i, s in enumerate(ids):
    groups.setdefault(s, []).append(i)
  return {s: np.asarray(v) for s, v in groups.items()}


def fid_per_subject(real_images: Any, fake_images: Any, variables: Any, subjects: Any = None, *,
                    batch_size: int = BATCH_SIZE) -> dict[str, Any]:
  """The thesis' FID: per test subject (all its slices), per channel, averaged (spec §8.4).

  Args:
    real_images, fake_images: (N, H, W, C) GT and SR slices in [0, 1], the same N, slice i of
      both belonging to subject `subjects[i]`.
    variables: FID Inception variables (`load_fid_inception`).
    subjects: see `subject_groups` (None: all slices are one subject).
    batch_size: Inception batch (features of all slices are computed once per channel).

  Returns (plain JSON types):
    'value': mean over subjects of each subject's FID (itself the mean over channels); None when
      no subject has 2 slices. 'std': population std over those subjects.
    'per_subject': {subject: FID or None (fewer than 2 slices)}.
    'per_subject_channels': {subject: [FID per channel] or None}.
    'per_channel': [mean over subjects, per channel] (one entry for RGB).
    'subjects': number of subjects averaged; 'skipped': subjects with fewer than 2 slices.
  """
  real, fake = _check_pair(real_images, fake_images)
  if real.shape[0] != fake.shape[0]:
    raise InputError(f'real and fake images hold {real.shape[0]} and {fake.shape[0]} slices; '
                     'per-subject FID pairs them slice by slice')
  groups = subject_groups(subjects, real.shape[0])
  variables = jax.device_put(variables)
  feats = [(inception_features(variables, r, batch_size),
            inception_features(variables, f, batch_size))
           for r, f in zip(_channel_views(real), _channel_views(fake))]
  per_channels: dict[str, Optional[list[float]]] = {}
  skipped = []
  for s, idx in groups.items():
    if len(idx) < 2:
      per_channels[s] = None
      skipped.append(s)
      continue
    per_channels[s] = [frechet.frechet_distance(f_fake[idx], f_real[idx])
                       for f_real, f_fake in feats]
  used = {s: v for s, v in per_channels.items() if v is not None}
  per_subject = {s: (float(np.mean(v)) if v is not None else None)
                 for s, v in per_channels.items()}
  values = np.asarray([per_subject[s] for s in used], np.float64)
  per_channel = (np.mean(np.asarray(list(used.values()), np.float64), axis=0).tolist()
                 if used else [None] * len(feats))
  return {'value': float(values.mean()) if used else None,
          'std': float(values.std()) if used else None,
          'per_subject': per_subject, 'per_subject_channels': per_channels,
          'per_channel': per_channel, 'subjects': len(used), 'skipped': skipped}


# ----------------------------------------------------------------------------------------------
# Weights.


def _from_flat_params(arrays: Mapping[str, np.ndarray], path: str) -> dict:
  """Variables from an export's flat 'params/...' / 'batch_stats/...' arrays, checked."""
  from medsr_jax import export  # pylint: disable=g-import-not-at-top
  want = export.expected_shapes(_MODEL)
  problems = export._shape_problems(  # pylint: disable=protected-access
      {k: np.shape(v) for k, v in arrays.items()}, {k: v.shape for k, v in want.items()})
  if problems:
    raise InputError(f'{path}: not FID Inception parameters ({problems}); {CONVERT_HINT}')
  return export.unflatten_params({k: np.asarray(v, np.float32) for k, v in arrays.items()})


def load_fid_inception(path: Any) -> dict:
  """FID Inception variables {'params', 'batch_stats'} (numpy float32) from `path`:

  * an export directory of `python -m medsr_jax.export --model=fid_inception ...` (or its
    params.npz / params.safetensors);
  * a state dict with pytorch-fid's keys as .npz / .safetensors;
  * pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` itself, read with
    `torch.load(weights_only=True)` only when PyTorch is installed (never unpickled otherwise).

  Raises:
    InputError: one line saying where to get the weights and how to convert them, when `path`
      is missing, unreadable or holds something else.
  """
  if path is None or str(path) == '':
    raise InputError(f'no FID Inception weights given; {CONVERT_HINT}')
  path = os.fspath(path)
  from medsr_jax import export  # pylint: disable=g-import-not-at-top
  from medsr_jax import export_cli  # pylint: disable=g-import-not-at-top
  from medsr_jax import export_torch  # pylint: disable=g-import-not-at-top
  if os.path.isdir(path):
    if not os.path.isfile(os.path.join(path, export.CONFIG_FILE)):
      raise InputError(f'{path} has no config.json: not converted FID Inception weights; '
                       f'{CONVERT_HINT}')
    try:
      _, variables, config = export.load_export(path)
    except InputError as e:
      raise InputError(f'{" ".join(str(e).split())}; {CONVERT_HINT}') from e
    if config['model'] != MODEL_NAME:
      raise InputError(f'{path} holds model {config["model"]!r}, not {MODEL_NAME}; '
                       f'{CONVERT_HINT}')
    return jax.tree_util.tree_map(np.asarray, dict(variables))
  if not os.path.isfile(path):
    raise InputError(f'FID Inception weights not found at {path}; {CONVERT_HINT}')
  lower = path.lower()
  if lower.endswith(('.pth', '.pt')):
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401
    except ImportError:
      raise InputError(f'{path}: reading a .pth needs PyTorch, which is not installed (nothing '
                       f'is unpickled without it); convert it once where PyTorch is installed '
                       f'with `{CONVERT_COMMAND}` and pass weights/{MODEL_NAME}') from None
  if not lower.endswith(export_cli.STATE_DICT_SUFFIXES):
    raise InputError(f'{path}: not a weights file (.npz, .safetensors, .pth) or export '
                     f'directory; {CONVERT_HINT}')
  try:
    arrays = export_cli.read_state_dict(path)  # .pth: torch.load(weights_only=True)
    export_cli.check_finite(arrays, path)
  except InputError as e:
    raise InputError(f'{" ".join(str(e).split())}; {CONVERT_HINT}') from e
  if any('/' in k for k in arrays):  # an export's params file
    return _from_flat_params(arrays, path)
  try:
    variables = export_torch.variables_from_torch(MODEL_NAME, arrays, scale=1, in_channels=3)
  except InputError as e:
    raise InputError(f'{path}: {" ".join(str(e).split())}') from e
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), variables)
