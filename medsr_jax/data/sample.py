"""The embedded MRI sample: Colin27 T1 slices with tissue labels, split without leakage.

The repository ships one real single-subject T1 scan, Colin27 (1 mm, with skull), and a tissue
classification of it (0 background, 1 CSF, 2 GM, 3 WM, the OASIS FSL-FAST convention), in
`SAMPLE_DIR` (see its NOTICE.md for the licence and how the files were made by
`python -m data_prep.make_sample`). The training entry point uses it when no dataset is configured:

  from medsr_jax.data.sample import load_sample
  splits = load_sample()               # {'train', 'val', 'test'} -> SliceSet
  hr = splits['train'].images          # (N, 160, 128, 1) float32 in [0, 1]

Pipeline (reference spec §4.1, §4.2, with the slice rule adapted to a scan with skull):
  1. read the T1 with nibabel (``get_fdata``) and the labels on the same grid;
  2. take axial slices along axis 2 (slice k = ``vol[:, :, k].T``, in-plane (Y, X) = 217x181);
  3. keep the slices in which brain tissue (label > 0) covers at least 5 % of the full slice. The
     scan has skull and scalp, so the OASIS rule ``sum(slice) > 0`` would keep slices of skull
     only; the 5 % rule keeps training from being dominated by skull-only or near-empty slices.
     It is computed on the uncropped slice, so the kept slices and the split do not depend on
     `crop_hw`;
  4. min-max normalise the T1 over the kept slices (per volume, as the reference does over its
     selected slices; the bright scalp sets the maximum, so brain sits well below 1);
  5. centre-crop every slice to `crop_hw` (edge-padding first if the crop is larger).

Split (deterministic; no slice of test or val is seen in training): one subject cannot be split
by subject, so the kept slices are cut into contiguous slabs along the axial axis,

  train (inferior) | gap | test (central ~20 %) | gap | val (8 slices) | gap | train (superior)

where every gap leaves at least `GAP` = 2 unused slices between slabs of different splits, because
neighbouring 1-mm slices are nearly the same image. `slice_index` records each slice's index along
axis 2 of the shipped volume.

The result is cached per `crop_hw` (one load takes well under a second); the arrays are read-only.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Sequence

import nibabel as nib
import numpy as np

from medsr_jax.data import volumes
from medsr_jax.errors import InputError

# The data files live beside this module (a folder without __init__.py, so it does not shadow
# this module); found through __file__, so `python -m` from the repository works as installed.
SAMPLE_DIR = pathlib.Path(__file__).resolve().parent / "sample"
T1_FILE = "colin27_t1.nii.gz"
TISSUE_FILE = "colin27_tissue.nii.gz"
SUBJECT = "colin27"

MIN_BRAIN_FRACTION = 0.05  # Keep slices with label > 0 on at least 5 % of the slice.
TEST_FRACTION = 0.2        # Central test slab: ~20 % of the kept slices.
VAL_SLICES = 8             # Validation slab size.
GAP = 2                    # Unused slices between slabs of different splits.
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class SliceSet:
  """2-D slices of one subject.

  Attributes:
    images: (N, H, W, 1) float32 in [0, 1].
    labels: (N, H, W) uint8 tissue labels, 0 bg, 1 CSF, 2 GM, 3 WM.
    slice_index: (N,) int64, index of each slice along the axial axis of the volume.
    subject: subject id.
  """
  images: np.ndarray
  labels: np.ndarray
  slice_index: np.ndarray
  subject: str

  def __len__(self) -> int:
    return int(self.images.shape[0])


def split_slabs(slice_indices: Sequence[int], test_fraction: float = TEST_FRACTION,
                val_slices: int = VAL_SLICES, gap: int = GAP) -> dict[str, np.ndarray]:
  """Splits sorted slice indices into contiguous train/val/test slabs with gaps (see module doc).

  Returns a dict split -> sorted array of slice indices. Any two indices from different splits
  differ by more than `gap`.

  Raises:
    InputError: too few slices to give every split at least one slice.
  """
  idx = np.sort(np.asarray(slice_indices, dtype=np.int64))
  n = idx.size
  n_test = max(1, int(round(test_fraction * n)))
  start = (n - n_test) // 2
  test = idx[start:start + n_test]
  val = idx[idx > test[-1] + gap][:val_slices]
  if val.size == 0:
    raise InputError(f"{n} slices are too few for a train/val/test split with gaps of {gap}")
  train = idx[(idx < test[0] - gap) | (idx > val[-1] + gap)]
  if train.size == 0:
    raise InputError(f"{n} slices are too few for a train/val/test split with gaps of {gap}")
  return {"train": train, "val": val, "test": test}


def _read(name: str) -> nib.Nifti1Image:
  path = SAMPLE_DIR / name
  if not path.is_file():
    raise InputError(f"embedded sample file missing: {path} (rebuild with"
                     " `python -m data_prep.make_sample`)")
  return nib.load(str(path))


def _readonly(a: np.ndarray) -> np.ndarray:
  a = np.ascontiguousarray(a)
  a.flags.writeable = False
  return a


@functools.lru_cache(maxsize=8)
def _load_cached(crop_hw: tuple[int, int]) -> tuple[SliceSet, ...]:
  t1_img, lab_img = _read(T1_FILE), _read(TISSUE_FILE)
  if t1_img.shape != lab_img.shape:
    raise InputError(f"sample T1 {t1_img.shape} and labels {lab_img.shape} differ in shape")
  # Stored values (scaled if the header says so); the arithmetic below is float64 as in
  # `get_fdata`, applied to the kept slices only.
  t1 = volumes.axial_slices(np.asanyarray(t1_img.dataobj))
  labels = volumes.axial_slices(np.asanyarray(lab_img.dataobj).astype(np.uint8))

  brain_fraction = (labels > 0).mean(axis=(1, 2))
  kept = np.flatnonzero(brain_fraction >= MIN_BRAIN_FRACTION)
  if kept.size == 0:
    raise InputError("no slice of the sample has enough brain tissue")
  images = volumes.minmax_normalise(t1[kept])  # Over the kept slices, before the crop.
  images = volumes.center_crop(images, crop_hw)
  crop_labels = volumes.center_crop(labels[kept], crop_hw)

  position = {int(k): i for i, k in enumerate(kept)}
  out = []
  slabs = split_slabs(kept)
  for name in SPLITS:
    slab = slabs[name]
    rows = np.array([position[int(k)] for k in slab])
    out.append(SliceSet(images=_readonly(images[rows][..., None]),
                        labels=_readonly(crop_labels[rows]),
                        slice_index=_readonly(slab.astype(np.int64)),
                        subject=SUBJECT))
  return tuple(out)


@functools.lru_cache(maxsize=1)
def raw_intensity_range() -> tuple[float, float]:
  """(min, max) of the stored T1 values over the kept slices: the min-max normalisation maps
  them to 0 and 1, so `max - min` is the raw magnitude of 1.0 (k-space noise in original units,
  `medsr_jax.data.lesion`)."""
  t1 = volumes.axial_slices(np.asanyarray(_read(T1_FILE).dataobj))
  labels = volumes.axial_slices(np.asanyarray(_read(TISSUE_FILE).dataobj).astype(np.uint8))
  kept = t1[(labels > 0).mean(axis=(1, 2)) >= MIN_BRAIN_FRACTION]
  return float(kept.min()), float(kept.max())


def load_sample(crop_hw: Sequence[int] = (160, 128)) -> dict[str, SliceSet]:
  """Loads the embedded Colin27 sample as {'train', 'val', 'test'} -> `SliceSet`.

  Args:
    crop_hw: (height, width) of the centre crop; the default 160x128 is the RDST OASIS slice size
      (the full slices are 217x181).

  Returns:
    A new dict each call; the `SliceSet`s (read-only arrays) are cached per `crop_hw`.
  """
  try:
    h, w = (int(x) for x in crop_hw)
  except (TypeError, ValueError):
    raise InputError(f"crop_hw must be a pair of integers, got {crop_hw!r}") from None
  if h <= 0 or w <= 0:
    raise InputError(f"crop_hw must be positive, got {(h, w)}")
  return dict(zip(SPLITS, _load_cached((h, w))))
