"""grain input pipeline of fixed-scale SR training (RDST, thesis ch. 5) and the test protocols.

The building blocks are shared by every training pipeline: `shuffled_stream` (slice order),
`transformed_stream` (a seeded per-element transform, optionally told the global element index),
`local_batches` (this process' share of each global batch). `make_train_dataset` assembles the
fixed-scale pairs below; `arbitrary_scale` (MIASSR, one scale per batch) and
`transforms.MsganTriple` (MS-GAN ROI triples) plug into the same blocks. Sources: in-memory
(`sources.ArraySliceSource`) or TFRecord shards (`shards.ShardSource`), interchangeably.

Training (reference spec §4.3, RDST part). Element i of the infinite stream is built from
  * a slice index: a shuffled order of the source, repeated, with a new permutation every epoch
    (grain `shuffle` then `repeat`: epoch e is shuffled with seed `shuffle_seed + e`);
  * an HR patch P x P, P = int(lr_patch * scale) (24 -> 96 at x4), from that slice: the slice is
    first edge-padded to at least P in each dimension (a no-op at the thesis' sizes), then the
    top-left corner is drawn uniformly with the last position included (`randint(0, H-P+1)`);
  * LR = `degradation.degrade(hr, scale, blur, noise_sigma, rng, lr_hw=(lr_patch, lr_patch))`:
    OpenCV-exact bicubic, no blur for RDST (MIASSR's [.25 .5 .25] blur when `blur`), Gaussian
    noise when `noise_sigma` > 0 (thesis eq. 5.15), then k-space noise when `kspace_sigma` > 0
    (`transforms.add_kspace_noise`, MS-GAN's noisy experiments, thesis §3.4.2). Nothing is
    clipped, so bicubic overshoot and noise can leave [0, 1] slightly, as in the authors' code.
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

Speed (2-core CPU, batch 32, 24 -> 96 at x4, 160x128 slices, 1024 records, one core = the main
thread, no reader threads; `python -m experiments.bench_data`): from shards ~165 batches per
CPU-second (~105/s of wall time with the machine's load at 7.5), ~3.2x the code before issue 13
(general record parser, buffered reads, `np.tensordot` resizes, grain's metered
`MapDataset.source`); MIASSR's batches of 16 ~155 per CPU-second (2x). The batches are the same,
bit for bit (tests/test_shards.py). What remains is grain (index shuffle, per-element RNG, maps:
~2.5 ms of a ~6 ms RDST batch), the float64 bicubic / blur products, read + CRCs and the decode.
For sources of ~100 slices grain's index_shuffle is slow (~0.3 ms per index, more than the crop
and the bicubic; ~30 us at 1k slices, ~8 us at 12k). Run data loading with
OPENBLAS_NUM_THREADS=1: the per-element bicubic matrix products are just big enough for OpenBLAS
to start its threads, which on a busy 2-core host once made the MIASSR pipeline 10x slower (11
instead of 114 batches/s; on a quieter host the two were equal).

Test pairs (reference spec §4.4), whole slices:
  `make_test_pairs(images, s, blur)`  LR = bicubic to (int(H // s), int(W // s)) (plus the 3x3
      blur when `blur`, MIASSR); GT = HR bicubic-resized to (int(h * s), int(w * s)), the HR
      itself when that size is already (H, W) (160x128 at x4 -> LR 40x32, GT = HR);
  `rdst_test_pairs(images, scales)`   RDST: one LR from s_max = max(scales) (4) for every scale,
      no blur; GT per scale = bicubic(HR, (int(h * s), int(w * s)));
  `miassr_test_pairs(images, scales)` MIASSR: per scale its own blurred LR and GT;
  `msgan_test_pairs(images, labels, roi_hw)` MS-GAN (thesis eq. 3.23): lesion ROI, LR = ROI x1/4.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_pipeline.py
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import grain
import numpy as np

from medsr_jax.data import degradation, transforms
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


@dataclasses.dataclass(frozen=True)
class RandomPatchPair:
  """grain random map: (H, W, C) slice, rng -> {'lr': (l, l, C), 'hr': (P, P, C)} float32.

  Draw order from `rng`: top, left (each `integers(0, n - P + 1)`), then the LR noise, then the
  k-space noise (`transforms.add_kspace_noise`, off by default). A frozen dataclass so that it
  pickles into grain worker processes.
  """

  lr_patch: int
  scale: float
  blur: bool = False
  noise_sigma: float = 0.0
  kspace_sigma: float = 0.0
  kspace_output: str = "magnitude"

  @functools.cached_property
  def _synthesis(self) -> transforms.LrSynthesis:
    return transforms.LrSynthesis(self.blur, self.noise_sigma, self.kspace_sigma,
                                  self.kspace_output)

  def __call__(self, image: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    p = hr_patch_size(self.lr_patch, self.scale)
    hr = transforms.random_patch(image, p, rng)
    return {"lr": self._synthesis(hr, (self.lr_patch, self.lr_patch), rng), "hr": hr}


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


def shuffled_stream(source: Any, seed: int) -> grain.MapDataset:
  """The source's items in a new shuffled order every epoch, repeated forever (lazy).

  Item i is source[order_e[i % N]], e = i // N, order_e a permutation seeded by the shuffle seed
  of `derive_seeds(seed)` and e (grain `shuffle` then `repeat`).
  """
  if len(source) < 1:
    raise InputError("the training source has no slices")
  shuffle_seed, _ = derive_seeds(seed)
  # The shuffled indices, then the lookup: the same items as grain's
  # `MapDataset.source(source).shuffle(...).repeat()` (the permutation depends only on the length),
  # without its per-read metrics (~35 us a slice, a tenth of a shard pipeline's time).
  return (grain.MapDataset.range(len(source)).shuffle(seed=shuffle_seed).repeat()
          .map(SourceLookup(source)))


@dataclasses.dataclass(frozen=True, eq=False)
class SourceLookup:
  """grain map: index -> source[index] (picklable into worker processes with its source)."""

  source: Any

  def __call__(self, index: int) -> Any:
    return self.source[index]


def _attach_index(index: int, element: Any) -> tuple[int, Any]:
  return index, element


def transformed_stream(source: Any, transform: Any, seed: int, *,
                       with_index: bool = False) -> grain.MapDataset:
  """`shuffled_stream` mapped by `transform(element, rng)` (grain random map, map seed).

  With `with_index` the transform receives `(i, element)`: the global element index, for
  transforms whose output depends on the batch the element falls in (one scale per batch).
  """
  _, map_seed = derive_seeds(seed)
  stream = shuffled_stream(source, seed)
  if with_index:
    stream = stream.map_with_index(_attach_index)
  return stream.random_map(transform, seed=map_seed)


def train_elements(source: Any, *, lr_patch: int, scale: float, seed: int,
                   blur: bool = False, noise_sigma: float = 0.0,
                   kspace_sigma: float = 0.0) -> grain.MapDataset:
  """The infinite, index-addressed stream of single {'lr', 'hr'} training pairs (unbatched).

  `train_elements(...)[i]` is global element i (see the module docstring); any source with
  `__len__` / `__getitem__` returning (H, W, C) float32 slices works.
  """
  _check_settings(source, lr_patch, scale, noise_sigma)
  transform = RandomPatchPair(int(lr_patch), scale, bool(blur), float(noise_sigma),
                              float(kspace_sigma))
  return transformed_stream(source, transform, seed)


def local_batches(elements: grain.MapDataset, *, global_batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> grain.MapDataset:
  """This process' share of the global batches of an element stream (module docstring).

  Local batch k holds global elements [k*B + p*b, k*B + (p+1)*b); only those are read.
  """
  b = local_batch_size(global_batch_size, process_count)
  if not 0 <= process_index < process_count:
    raise InputError(f"process_index {process_index} is not in [0, {process_count})")
  return elements.batch(b, drop_remainder=True)[process_index::process_count]


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
                       blur: bool = False, noise_sigma: float = 0.0,
                       kspace_sigma: float = 0.0) -> grain.MapDataset:
  """This process' infinite stream of local training batches, as a lazy grain MapDataset.

  Item k is {'lr': (b, lr_patch, lr_patch, C), 'hr': (b, P, P, C)} float32, b = B /
  process_count, P = int(lr_patch * scale), holding global elements [k*B + p*b, k*B + (p+1)*b).
  Iterate it with `train_iterator` (checkpointable) or index it directly.
  """
  local_batch_size(global_batch_size, process_count)  # Fails before any reading.
  ds = train_elements(source, lr_patch=lr_patch, scale=scale, seed=seed, blur=blur,
                      noise_sigma=noise_sigma, kspace_sigma=kspace_sigma)
  return local_batches(ds, global_batch_size=global_batch_size, process_index=process_index,
                       process_count=process_count)


def train_iterator(dataset: grain.MapDataset, *, num_threads: int = 0,
                   prefetch_buffer_size: int = 2, num_workers: int = 0) -> grain.DatasetIterator:
  """A checkpointable iterator over `dataset` (state: {'next_index': k}, module docstring).

  `num_threads` > 0 prepares up to `prefetch_buffer_size` batches ahead in a thread pool; the
  batches are identical either way (the stream is index-addressed). Keep the buffer small: grain's
  defaults (what plain `iter(dataset)` uses: 16 threads, 500 batches) hold ~600 MB at the thesis
  setting.

  `num_workers` > 0 prepares batches in that many grain worker processes (`mp_prefetch`, each with
  `prefetch_buffer_size` batches), which scales past the GIL (experiments/bench_data.py): the
  batches are again identical, but the iterator state is grain's per-worker state instead of
  {'next_index'} (it still checkpoints and restores exactly, for the same `num_workers`). Worker
  processes need absl flags parsed and an importable `__main__` (true under `medsr_jax.main`).
  """
  if num_threads < 0 or prefetch_buffer_size < 0 or num_workers < 0:
    raise InputError("num_threads, prefetch_buffer_size and num_workers must be >= 0")
  if num_workers:
    options = grain.MultiprocessingOptions(num_workers=int(num_workers),
                                           per_worker_buffer_size=max(1, prefetch_buffer_size))
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=0)).mp_prefetch(options))
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


def rdst_test_pairs(images: np.ndarray, scales: Sequence[float], *,
                    s_max: float | None = None) -> tuple[np.ndarray, dict[float, np.ndarray]]:
  """RDST's multi-scale test protocol (reference §4.4): one LR for every scale, no blur.

  LR = bicubic(HR, (int(H // s_max), int(W // s_max))), s_max = max(scales) unless given
  (4.0 in the thesis); GT for scale s = bicubic(HR, (int(h * s), int(w * s))), HR itself when
  that is its size. Returns (lr (N, h, w, C), {s: gt (N, H_s, W_s, C)}).
  """
  if not scales:
    raise InputError("rdst_test_pairs needs at least one scale")
  s_max = max(scales) if s_max is None else s_max
  lr, _ = make_test_pairs(images, s_max)
  images = np.asarray(images, np.float32)
  h, w = lr.shape[1:3]
  gts = {}
  for s in scales:
    gt_hw = (int(h * s), int(w * s))
    gts[s] = (images.copy() if gt_hw == tuple(images.shape[1:3])
              else degradation.resize_bicubic(images, gt_hw).astype(np.float32))
  return lr, gts


def miassr_test_pairs(images: np.ndarray, scales: Sequence[float], *, blur: bool = True
                      ) -> dict[float, tuple[np.ndarray, np.ndarray]]:
  """MIASSR's test protocol (reference §4.4): per scale s its own LR, with the 3x3 blur.

  {s: (lr = blur(bicubic(HR, (int(H // s), int(W // s)))), gt = bicubic(HR, (int(H // s * s),
  int(W // s * s))))}, the GT being HR itself when the size matches (`make_test_pairs`).
  """
  return {s: make_test_pairs(images, s, blur=blur) for s in scales}


def msgan_test_pairs(images: np.ndarray, labels: np.ndarray | None, roi_hw: Sequence[int], *,
                     scale: float = 4.0, centres: Sequence[Any] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
  """MS-GAN's test pairs (thesis eq. 3.23): the lesion ROI as HR, LR = HR downsampled x4.

  ROI centres are the label centroids (`transforms.roi_crop`), or `centres[n]` when given (the
  thesis' lesion detector predicts them from the LR at test time, §3.2.2). Returns
  (lr (N, int(h / s), int(w / s), C), hr (N, h, w, C)) float32; no noise.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4:
    raise InputError(f"msgan_test_pairs expects slices shaped (N, H, W, C), got {images.shape}")
  triple = transforms.MsganTriple(tuple(roi_hw), scale)
  out = [triple({"image": images[n], "label": None if labels is None else labels[n],
                 "centre": None if centres is None else centres[n]}) for n in range(len(images))]
  return np.stack([o["lr"] for o in out]), np.stack([o["hr"] for o in out])


def batch_shapes(global_batch_size: int, lr_patch: int, scale: float, channels: int = 1,
                 process_count: int = 1) -> dict[str, Sequence[int]]:
  """Shapes of one local batch, e.g. to build abstract arrays before the first batch."""
  b = local_batch_size(global_batch_size, process_count)
  p = hr_patch_size(lr_patch, scale)
  return {"lr": (b, lr_patch, lr_patch, channels), "hr": (b, p, p, channels)}
