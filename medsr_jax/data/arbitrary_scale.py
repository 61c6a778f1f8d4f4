"""Arbitrary-scale training batches (MIASSR, thesis ch. 4): one scale per batch, bounded shapes.

The reference (spec §4.3, MIASSR meta-SR; §2.2 `all_sr_scales`) trains on the 30 scales
1.1, 1.2, ..., 4.0. Every batch has one scale s, and for an HR patch side P (96):

  LR side l = int(P / s)                    (s = 2.3: 41; 1.1: 87; 4.0: 24)
  HR side h = int(l * s)                    (2.3: 94; 1.1: 95; 4.0: 96)
  hr96  = a random P x P crop of the slice  (top/left from randint(0, H - P): the last position
                                             is never drawn in the reference, `include_last`)
  LR    = blur3x3(bicubic(hr96, l x l))     (OpenCV-exact bicubic, then [.25 .5 .25], §4.3)
  HR    = bicubic(hr96, h x h)              (hr96 itself when h == P)

Batch shapes follow the scale, so a jitted train step compiles once per distinct (l, h): at most
30 times. The scale schedule decides when those compiles happen:

  'permutation' (default)  batches are grouped in "epochs of scales" of len(scales) batches;
                           epoch e uses a fresh seeded permutation of the scales, so every scale
                           (every compile) appears in the first len(scales) batches and no new
                           shape (no compile) appears afterwards. Over each epoch the scales are
                           exactly balanced.
  'iid'                    the reference's `np.random.choice(all_sr_scales)` per batch: each
                           batch draws its scale independently (seeded by the batch index), so
                           compiles keep trickling in until every scale has been seen.

Batch k's scale is a pure function of (seed, k), and element i belongs to global batch
k = i // B, so every process agrees on the scale of a global batch whatever the process count.
Each element is {'lr': (l, l, C), 'hr': (h, h, C), 'scale': float32 s}; batches add a leading b
(the local batch, `pipeline.local_batches`). Feed 'scale' to the model as an array (not a
static argument) so that it does not multiply the compiles.

Slices are shuffled and repeated as in `pipeline` (a new permutation per epoch of slices; the
reference draws each batch's slices without replacement, see docs/FIDELITY.md row 7).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_arbitrary_scale.py
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import grain
import numpy as np

from medsr_jax.data import pipeline, transforms
from medsr_jax.errors import InputError

# The reference's all_sr_scales (spec §2.2): 1.1, 1.2, ..., 4.0, the same floats as the literals.
THESIS_SCALES = tuple(round(0.1 * k, 1) for k in range(11, 41))
# MIASSR's test scales (spec §2.2 `test_sr_scales`).
TEST_SCALES = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
SCHEDULES = ('permutation', 'iid')
HR_PATCH = 96  # MIASSR `patch_size` (the HR patch side).


def patch_sizes(hr_patch: int, scale: float) -> tuple[int, int]:
  """(LR side, HR side) = (int(P / s), int(int(P / s) * s)) of reference §4.3."""
  lr = int(hr_patch / scale)
  if lr < 1:
    raise InputError(f'HR patch {hr_patch} is too small for scale {scale}')
  return lr, int(lr * scale)


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
  try:
    out = tuple(float(s) for s in scales)
  except (TypeError, ValueError):
    raise InputError(f'scales must be numbers, got {scales!r}') from None
  if not out or any(not s > 0 for s in out) or len(set(out)) != len(out):
    raise InputError(f'scales must be distinct positive numbers, got {scales!r}')
  return out


@functools.lru_cache(maxsize=64)
def _permutation(seed: int, epoch: int, n: int) -> tuple[int, ...]:
  return tuple(int(v) for v in np.random.default_rng([seed, epoch]).permutation(n))


@dataclasses.dataclass(frozen=True)
class ScaleSchedule:
  """scale of global batch k: a pure function of (seed, k); see the module docstring."""

  scales: tuple[float, ...] = THESIS_SCALES
  seed: int = 0
  mode: str = 'permutation'

  def __post_init__(self):
    object.__setattr__(self, 'scales', _check_scales(self.scales))
    if self.mode not in SCHEDULES:
      raise InputError(f'scale schedule must be one of {SCHEDULES}, got {self.mode!r}')

  def index(self, batch: int) -> int:
    """Position in `scales` of the scale of global batch `batch`."""
    n = len(self.scales)
    if self.mode == 'iid':
      return int(np.random.default_rng([self.seed, 1, int(batch)]).integers(0, n))
    epoch, j = divmod(int(batch), n)
    return _permutation(self.seed, epoch, n)[j]

  def __call__(self, batch: int) -> float:
    return self.scales[self.index(batch)]


@dataclasses.dataclass(frozen=True)
class ArbitraryScalePair:
  """grain random map on (global element index i, slice): {'lr', 'hr', 'scale'} of batch i // B.

  Draw order from `rng`: crop top, left, then the LR noise (image, then k-space).
  """

  schedule: ScaleSchedule
  global_batch_size: int
  hr_patch: int = HR_PATCH
  lr: transforms.LrSynthesis = transforms.LrSynthesis(blur=True)
  include_last: bool = False

  def __call__(self, indexed: tuple[int, np.ndarray], rng: np.random.Generator
               ) -> dict[str, Any]:
    index, image = indexed
    s = self.schedule(index // self.global_batch_size)
    l, h = patch_sizes(self.hr_patch, s)
    patch = transforms.random_patch(image, self.hr_patch, rng, include_last=self.include_last)
    lr = self.lr(patch, (l, l), rng)
    hr = patch if h == self.hr_patch else transforms.resize_bicubic_hwc_float32(patch, (h, h))
    return {'lr': lr, 'hr': hr.astype(np.float32), 'scale': np.float32(s)}


def schedule_seed(seed: int) -> int:
  """The scale schedule's seed: a third SeedSequence word beside `pipeline.derive_seeds`."""
  pipeline.derive_seeds(seed)  # validates
  return int(np.random.SeedSequence(int(seed)).generate_state(3, np.uint32)[2])


def train_elements(source: Any, *, global_batch_size: int, seed: int,
                   scales: Sequence[float] = THESIS_SCALES, schedule: str = 'permutation',
                   hr_patch: int = HR_PATCH, blur: bool = True, noise_sigma: float = 0.0,
                   kspace_sigma: float = 0.0, include_last: bool = False) -> grain.MapDataset:
  """The infinite, index-addressed stream of single arbitrary-scale elements (unbatched).

  Element i has the scale of global batch i // global_batch_size.
  """
  if int(global_batch_size) != global_batch_size or global_batch_size < 1:
    raise InputError(f'global_batch_size must be a positive integer, got {global_batch_size!r}')
  sched = ScaleSchedule(tuple(scales), schedule_seed(seed), schedule)
  for s in sched.scales:
    patch_sizes(hr_patch, s)
  transform = ArbitraryScalePair(sched, int(global_batch_size), int(hr_patch),
                                 transforms.LrSynthesis(bool(blur), float(noise_sigma),
                                                        float(kspace_sigma)),
                                 bool(include_last))
  return pipeline.transformed_stream(source, transform, seed, with_index=True)


def make_train_dataset(source: Any, *, global_batch_size: int, seed: int,
                       process_index: int = 0, process_count: int = 1,
                       **kwargs: Any) -> grain.MapDataset:
  """This process' infinite stream of local arbitrary-scale batches (lazy MapDataset).

  Item k is {'lr': (b, l, l, C), 'hr': (b, h, h, C), 'scale': (b,)} with one scale per global
  batch; `kwargs` go to `train_elements`. Iterate with `pipeline.train_iterator`.
  """
  pipeline.local_batch_size(global_batch_size, process_count)
  elements = train_elements(source, global_batch_size=global_batch_size, seed=seed, **kwargs)
  return pipeline.local_batches(elements, global_batch_size=global_batch_size,
                                process_index=process_index, process_count=process_count)


def batch_shapes(global_batch_size: int, *, scales: Sequence[float] = THESIS_SCALES,
                 hr_patch: int = HR_PATCH, channels: int = 1, process_count: int = 1
                 ) -> dict[float, dict[str, tuple[int, ...]]]:
  """{scale: local batch shapes}; len(set of shapes) is the number of train-step compiles."""
  b = pipeline.local_batch_size(global_batch_size, process_count)
  out = {}
  for s in _check_scales(scales):
    l, h = patch_sizes(hr_patch, s)
    out[s] = {'lr': (b, l, l, channels), 'hr': (b, h, h, channels), 'scale': (b,)}
  return out


def scales_from_config(data_config: Any) -> tuple[float, ...]:
  """`config.data.scales`, or the thesis' 30 when empty."""
  return _check_scales(tuple(data_config.scales) or THESIS_SCALES)


def hr_patch_from_config(data_config: Any) -> int:
  """The HR patch side P = int(lr_patch * max(scales)) (96 for MIASSR)."""
  return pipeline.hr_patch_size(int(data_config.lr_patch), max(scales_from_config(data_config)))


def schedule_from_config(data_config: Any, seed: int) -> ScaleSchedule:
  """The `ScaleSchedule` `dataset_from_config` uses: the trainer reads a batch's scale from it
  (on the host, without looking at the batch) to pick the step compiled for that scale."""
  return ScaleSchedule(scales_from_config(data_config), schedule_seed(seed),
                       str(data_config.get('scale_schedule', 'permutation')))


def dataset_from_config(data_config: Any, source: Any, *, seed: int, process_index: int = 0,
                        process_count: int = 1) -> grain.MapDataset:
  """`make_train_dataset` from `config.data`: scales, scale_schedule, lr_patch, blur, noise.

  Empty `scales` means the thesis' 30. The HR patch is int(lr_patch * max(scales)) (24 * 4.0 =
  96, MIASSR's patch_size).
  """
  scales = scales_from_config(data_config)
  hr_patch = hr_patch_from_config(data_config)
  return make_train_dataset(
      source, global_batch_size=int(data_config.global_batch_size), seed=seed,
      process_index=process_index, process_count=process_count, scales=scales,
      schedule=str(data_config.get('scale_schedule', 'permutation')), hr_patch=hr_patch,
      blur=bool(data_config.blur), noise_sigma=float(data_config.noise_sigma))
