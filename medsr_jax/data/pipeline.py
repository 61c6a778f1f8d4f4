"""grain input pipeline of fixed-scale SR training (RDST, thesis ch. 5) and its test pairs.

Training (reference spec §4.3, RDST part). Element i of the infinite stream is built from
  * a slice index: a shuffled order of the source, repeated, with a new permutation every epoch
    (grain `shuffle` then `repeat`: epoch e is shuffled with seed `shuffle_seed + e`);
  * an HR patch P x P, P = int(lr_patch * scale) (24 -> 96 at x4), from that slice: the slice is
    first edge-padded to at least P in each dimension (a no-op at the thesis' sizes), then the
    top-left corner is drawn uniformly with the last position included (`randint(0, H-P+1)`);
  * LR = `degradation.degrade(hr, scale, blur, noise_sigma, rng, lr_hw=(lr_patch, lr_patch))`:
    OpenCV-exact bicubic, no blur for RDST (MIASSR's [.25 .5 .25] blur when `blur`), Gaussian
    noise when `noise_sigma` > 0 (thesis eq. 5.15). Nothing is clipped, so bicubic overshoot
    and noise can leave [0, 1] slightly, as in the authors' code.
The per-element randomness (crop corner, then noise) comes from grain's `random_map` on a
`MapDataset`: a Philox generator keyed by `map_seed` and the global element index i. The stream is
therefore a pure function of (source, seed, settings, i): it does not depend on threads, worker
processes or the number of JAX processes. The authors draw a batch's slices without replacement
(`np.random.choice(N, B, replace=False)`); the shuffled order gives that too whenever a batch
does not straddle an epoch boundary, and also visits every slice once per epoch.

Process shares. Elements are batched by the local batch b = B / process_count; process p takes
every process_count-th of those batches starting at p (lazy `MapDataset` slicing). Its k-th local
batch holds the global elements [k*B + p*b, k*B + (p+1)*b), so concatenating the k-th local batches
of all processes in process order gives global batch k of the single-process stream; feed them to
`jax.make_array_from_process_local_data`.

Iterator state. `train_iterator(ds)` returns a grain `DatasetIterator` whose
`get_state()` is `{'next_index': k}`: the number of local batches this iterator has returned
(== the global batch index it returns next). `set_state` accepts any such dict. Because the
stream is index-addressed, k is the whole state: it is the same for every process and independent
of prefetch threads (at a fixed global batch size it would even carry over to another process
count, but grain's orbax handler looks for the file of the current count). With orbax (grain
0.2.18 registers the handler): save `grain.checkpoint.CheckpointSave(it)` and restore with
`grain.checkpoint.CheckpointRestore(fresh_it)` as one item of an `ocp.args.Composite`; each
process writes `process_<i>-of-<n>.json` in that item's directory. The handler is synchronous:
the state is read inside `save()`, so advancing the iterator during an async save is safe.

Speed (2-core CPU, batch 32, 24 -> 96 at x4, 160x128 slices): about 130 batches/s with no thread,
165 with 2 prefetch threads on an idle machine. For sources of ~100 slices grain's index_shuffle is
slow (~0.3 ms per index, more than the crop and the bicubic; ~8 us at 12k slices).

Test pairs (reference spec §4.4, RDST): whole slices; LR = bicubic to (int(H // s), int(W // s))
(plus the 3x3 blur when `blur`, MIASSR); GT = HR bicubic-resized to (int(h * s), int(w * s)), the
HR itself when that size is already (H, W) (160x128 at x4 -> LR 40x32, GT = HR).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_pipeline.py
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import numpy as np

from medsr_jax.data import degradation
from medsr_jax.errors import InputError


def hr_patch_size(lr_patch: int, scale: float) -> int:
  """HR training patch side P = int(lr_patch * scale) (RDST: 24 * 4 = 96, reference §4.3)."""
  return int(lr_patch * scale)


def derive_seeds(seed: int) -> tuple[int, int]:
  """(shuffle_seed, map_seed): two independent 32-bit seeds derived from the run's `seed`.

  grain's shuffle uses `shuffle_seed + epoch` per epoch, so the random-map seed must not be
  `seed + small int`; a SeedSequence keeps the two streams unrelated.
  """
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise InputError(f"data seed must be a non-negative integer, got {seed!r}")
  shuffle_seed, map_seed = np.random.SeedSequence(int(seed)).generate_state(2, np.uint32)
  return int(shuffle_seed), int(map_seed)


def _pad_to_at_least(image: np.ndarray, size: int) -> np.ndarray:
  """Edge-pads an (H, W, C) slice to at least size x size (extra row/column goes last)."""
  h, w = image.shape[:2]
  ph, pw = max(size - h, 0), max(size - w, 0)
  if ph == 0 and pw == 0:
    return image
  pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
  return np.pad(image, pads, mode="edge")


@dataclasses.dataclass(frozen=True)
class RandomPatchPair:
  """grain random map: (H, W, C) slice, rng -> {'lr': (l, l, C), 'hr': (P, P, C)} float32.

  Draw order from `rng`: top, left (each `integers(0, n - P + 1)`), then the LR noise.
  A frozen dataclass so that it pickles into grain worker processes.
  """

  lr_patch: int
  scale: float
  blur: bool = False
  noise_sigma: float = 0.0

  def __call__(self, image: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    p = hr_patch_size(self.lr_patch, self.scale)
    image = _pad_to_at_least(np.asarray(image, np.float32), p)
    h, w = image.shape[:2]
    top = int(rng.integers(0, h - p + 1))
    left = int(rng.integers(0, w - p + 1))
    hr = np.ascontiguousarray(image[top:top + p, left:left + p])
    lr = degradation.degrade(hr, self.scale, blur=self.blur, noise_sigma=self.noise_sigma,
                             rng=rng, lr_hw=(self.lr_patch, self.lr_patch))
    return {"lr": lr.astype(np.float32), "hr": hr}


def _check_settings(source: Any, lr_patch: int, scale: float, noise_sigma: float) -> None:
  if len(source) < 1:
    raise InputError("the training source has no slices")
  if int(lr_patch) != lr_patch or lr_patch < 1:
    raise InputError(f"lr_patch must be a positive integer, got {lr_patch!r}")
  if not scale > 0:
    raise InputError(f"scale must be > 0, got {scale!r}")
  if hr_patch_size(lr_patch, scale) < 1:
    raise InputError(f"HR patch int({lr_patch} * {scale}) is empty")
  if not noise_sigma >= 0:
    raise InputError(f"noise_sigma must be >= 0, got {noise_sigma!r}")


def train_elements(source: Any, *, lr_patch: int, scale: float, seed: int,
                   blur: bool = False, noise_sigma: float = 0.0) -> grain.MapDataset:
  """The infinite, index-addressed stream of single {'lr', 'hr'} training pairs (unbatched).

  `train_elements(...)[i]` is global element i (see the module docstring); any source with
  `__len__` / `__getitem__` returning (H, W, C) float32 slices works.
  """
  _check_settings(source, lr_patch, scale, noise_sigma)
  shuffle_seed, map_seed = derive_seeds(seed)
  ds = grain.MapDataset.source(source)
  ds = ds.shuffle(seed=shuffle_seed).repeat()  # Shuffle before repeat: new order every epoch.
  return ds.random_map(
      RandomPatchPair(int(lr_patch), scale, bool(blur), float(noise_sigma)), seed=map_seed)


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  """b = B / process_count; an InputError unless it divides exactly."""
  if global_batch_size < 1 or process_count < 1:
    raise InputError(f"global_batch_size ({global_batch_size}) and process_count "
                     f"({process_count}) must be >= 1")
  if global_batch_size % process_count:
    raise InputError(f"global batch size {global_batch_size} is not divisible by the "
                     f"{process_count} processes")
  return global_batch_size // process_count


def make_train_dataset(source: Any, *, global_batch_size: int, lr_patch: int, scale: float,
                       seed: int, process_index: int = 0, process_count: int = 1,
                       blur: bool = False, noise_sigma: float = 0.0) -> grain.MapDataset:
  """This process' infinite stream of local training batches, as a lazy grain MapDataset.

  Item k is {'lr': (b, lr_patch, lr_patch, C), 'hr': (b, P, P, C)} float32, b = B /
  process_count, P = int(lr_patch * scale), holding global elements [k*B + p*b, k*B + (p+1)*b).
  Iterate it with `train_iterator` (checkpointable) or index it directly.
  """
  b = local_batch_size(global_batch_size, process_count)
  if not 0 <= process_index < process_count:
    raise InputError(f"process_index {process_index} is not in [0, {process_count})")
  ds = train_elements(source, lr_patch=lr_patch, scale=scale, seed=seed, blur=blur,
                      noise_sigma=noise_sigma)
  ds = ds.batch(b, drop_remainder=True)
  return ds[process_index::process_count]


def train_iterator(dataset: grain.MapDataset, *, num_threads: int = 0,
                   prefetch_buffer_size: int = 2) -> grain.DatasetIterator:
  """A checkpointable iterator over `dataset` (state: {'next_index': k}, module docstring).

  `num_threads` > 0 prepares up to `prefetch_buffer_size` batches ahead in a thread pool; the
  batches are identical either way (the stream is index-addressed). Keep the buffer small: grain's
  defaults (what plain `iter(dataset)` uses: 16 threads, 500 batches) hold ~600 MB at the thesis
  setting. grain's `mp_prefetch` worker processes also give the same batches, but they need absl
  flags parsed, checkpoint a different (worker-interleave) state and were slower on 2 cores.
  """
  if num_threads < 0 or prefetch_buffer_size < 0:
    raise InputError("num_threads and prefetch_buffer_size must be >= 0")
  read_options = grain.ReadOptions(num_threads=int(num_threads),
                                   prefetch_buffer_size=int(prefetch_buffer_size))
  return iter(dataset.to_iter_dataset(read_options))


def make_test_pairs(images: np.ndarray, scale: float, *,
                    blur: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Whole-slice test pairs (reference §4.4): (lr (N, h, w, C), gt (N, H', W', C)) float32.

  h, w = int(H // s), int(W // s); H', W' = int(h * s), int(w * s); GT is `images` itself when
  (H', W') == (H, W), else its bicubic resize. `blur` adds MIASSR's 3x3 blur to the LR.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise InputError(f"make_test_pairs expects slices shaped (N, H, W, C), got {images.shape}")
  if not np.issubdtype(images.dtype, np.floating):
    raise InputError(f"make_test_pairs expects float images in [0, 1], got {images.dtype}")
  images = images.astype(np.float32, copy=False)
  h, w = degradation.lr_size(images.shape[1:3], scale)
  lr = degradation.degrade(images, scale, blur=blur, lr_hw=(h, w)).astype(np.float32)
  gt_hw = (int(h * scale), int(w * scale))
  if gt_hw == tuple(images.shape[1:3]):
    gt = images.copy()
  else:
    gt = degradation.resize_bicubic(images, gt_hw).astype(np.float32)
  return lr, gt


def batch_shapes(global_batch_size: int, lr_patch: int, scale: float, channels: int = 1,
                 process_count: int = 1) -> dict[str, Sequence[int]]:
  """Shapes of one local batch, e.g. to build abstract arrays before the first batch."""
  b = local_batch_size(global_batch_size, process_count)
  p = hr_patch_size(lr_patch, scale)
  return {"lr": (b, lr_patch, lr_patch, channels), "hr": (b, p, p, channels)}
