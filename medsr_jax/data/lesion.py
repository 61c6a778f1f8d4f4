"""Lesion-focused data (thesis ch. 3, §3.2.2, §3.3.1, §3.4.2): lesions, ROI centres, ROI batches
and the chapter's test sets.

  python -m medsr_jax.main --config=configs/lfsr.py:demo --workdir=runs/lfsr_demo
  python -m medsr_jax.main --config=configs/msgan.py:demo --workdir=runs/msgan_demo

Lesions and centres
  Which label values make "the lesion" is a setting, `data.roi.lesion_labels`: empty means every
  label > 0, the thesis' whole tumour ("by fusing all the labels", BraTS); a tuple picks classes,
  e.g. the embedded sample's stand-in lesion, its CSF class (1): a healthy brain has no lesion.
  A ROI centre is the mean (row, column) of the lesion pixels (thesis §3.3.1: "averaging the
  location of all masked pixels"), the lesion detector's regression target (eq. 3.8).
  `data.roi.centres` says where the centres of training and test ROIs come from:
    'label'      the centroid of the manual label (what LD is trained to predict);
    'detector'   the lesion detector `train.frozen.detector` predicts them from each LR slice
                 (thesis eq. 3.9: LD runs on the LR images, at training and at test time);
    PATH.csv     the file `python -m medsr_jax.detect` wrote for the same data.
  A slice without lesion pixels gets the slice centre.

ROI training (`data.roi.size` = (h, w), `data.roi.train` True: LFSR, MS-GAN)
  No random patches (thesis §3.3.1): every training element is the whole h x w ROI around the
  slice's centre (`transforms.roi_crop`, clamped into the slice), HR = the ROI, LR = ROI
  downsampled by `scale` with the OpenCV-exact bicubic, HR/2 = ROI downsampled x2 for the
  multi-scale generators (eq. 3.22, when a stage has the 'mse_x2' term). `roi.train` False keeps
  the usual random patches (the whole-slice SRResNet / SRGAN baselines of Table 3.3) while the
  evaluation still scores the ROIs.

k-space noise in MR units (thesis §3.4.2, Table 3.3: sigma = 20, 40)
  `data.kspace_sigma` is in units of the original MR magnitudes, i.e. the noise the thesis adds
  before dividing the intensities by the dataset's maximum. Images here are already divided, so
  the noise is added with sigma / divisor, where the divisor is the raw value that became 1.0:
  `data.intensity_divisor`, else the shard manifest's `settings.intensity_divisor` (data_prep
  protocol 'msgan'), else for the embedded sample its raw range (237: the T1's stored maximum).
  The DFT is unitary ('ortho', `transforms.add_kspace_noise`), so sigma is also the std of the
  image-domain noise in raw units; the magnitude image is kept (Rician noise).

Test sets (thesis eq. 3.23)
  `EvalSet`: per test slice the whole slice (HR), its LR (bicubic / scale, + noise), the ROI box
  (top, left, h, w) around the slice's centre, the HR ROI and the LR ROI (the ROI downsampled,
  + noise). ROI-trained models super-resolve the LR ROI (eq. 3.7: LD crops LR and HR); the
  others super-resolve the whole LR slice and their output's ROI box is scored. Noise of test
  slice n is drawn from `default_rng([seed, n])`, so every run sees the same noisy inputs.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_lesion_data.py
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from medsr_jax.data import degradation, pipeline, transforms
from medsr_jax.errors import InputError

CENTRE_MODES = ("label", "detector")  # or a CSV path
EVAL_NOISE_SEED = 20230  # noise of the test / validation inputs (same for every run)


def lesion_mask(label: np.ndarray, lesion_labels: Sequence[int] = ()) -> np.ndarray:
  """Boolean mask of the lesion pixels: label > 0, or label in `lesion_labels` when given."""
  label = np.asarray(label)
  if not len(lesion_labels):
    return label > 0
  return np.isin(label, np.asarray(tuple(int(v) for v in lesion_labels)))


def centre_of(label: np.ndarray, lesion_labels: Sequence[int] = ()
              ) -> Optional[tuple[float, float]]:
  """(row, column) centroid of the lesion pixels of one (H, W) label map; None if none."""
  return transforms.lesion_centre(lesion_mask(label, lesion_labels))


def roi_enabled(data_config) -> bool:
  """True when the config asks for lesion-focused ROIs (`data.roi.size` is not (0, 0))."""
  roi = data_config.get("roi", None)
  return roi is not None and tuple(int(v) for v in roi.size) != (0, 0)


# ----------------------------------------------------------------------------------------------
# Settings.


@dataclasses.dataclass(frozen=True)
class RoiSettings:
  """What the ROI pipeline needs from `config.data` and the model (module docstring)."""
  size: tuple[int, int]
  scale: float
  lesion_labels: tuple[int, ...] = ()
  centres: str = "label"
  train_on_roi: bool = True
  kspace_sigma: float = 0.0   # in [0, 1] image units (already divided by the divisor)
  blur: bool = False

  def synthesis(self) -> transforms.LrSynthesis:
    return transforms.LrSynthesis(blur=self.blur, kspace_sigma=self.kspace_sigma)

  def lr_size(self) -> tuple[int, int]:
    """LR ROI size (int(h / s), int(w / s)) (`transforms.MsganTriple`)."""
    return int(self.size[0] / self.scale), int(self.size[1] / self.scale)


def intensity_divisor(data_config) -> Optional[float]:
  """The raw value that became 1.0 in the training images (module docstring), or None."""
  if float(data_config.get("intensity_divisor", 0.0) or 0.0) > 0:
    return float(data_config.intensity_divisor)
  path = str(data_config.get("path", "") or "")
  if path:
    from medsr_jax.data import manifest  # pylint: disable=import-outside-toplevel
    value = manifest.read_manifest(path).settings.get("intensity_divisor")
    return None if value is None else float(value)
  if data_config.get("source", "sample") == "sample":
    from medsr_jax.data import sample  # pylint: disable=import-outside-toplevel
    low, high = sample.raw_intensity_range()
    return high - low
  return None


def settings_from_config(config) -> RoiSettings:
  """`RoiSettings` of a run (InputError for inconsistent fields)."""
  c = config.data
  roi = c.roi
  try:
    size = transforms.parse_hw(tuple(roi.size), "data.roi.size")
  except InputError as e:
    raise InputError(f"{e} (set --config.data.roi.size='(h, w)')") from None
  sigma = float(c.get("kspace_sigma", 0.0) or 0.0)
  if sigma < 0:
    raise InputError(f"data.kspace_sigma must be >= 0, got {sigma}")
  if sigma:
    divisor = intensity_divisor(c)
    if not divisor:
      raise InputError("data.kspace_sigma is in raw MR units but the data records no intensity "
                       "divisor: set --config.data.intensity_divisor=RAW_MAX")
    sigma /= divisor
  centres = str(roi.get("centres", "label"))
  if centres == "detector" and not config.train.frozen.get("detector", ""):
    raise InputError("data.roi.centres='detector' needs a trained lesion detector: "
                     "--config.train.frozen.detector=EXPORT_DIR (configs/lesion_detector.py)")
  scale = float(config.model.scale)
  lr_hw = (int(size[0] / scale), int(size[1] / scale))
  if min(lr_hw) < 1:
    raise InputError(f"ROI {size} is too small for x{scale:g}")
  return RoiSettings(size=size, scale=scale,
                     lesion_labels=tuple(int(v) for v in roi.get("lesion_labels", ())),
                     centres=centres, train_on_roi=bool(roi.get("train", True)),
                     kspace_sigma=sigma, blur=bool(c.get("blur", False)))


# ----------------------------------------------------------------------------------------------
# Training.


class CentredSource:
  """A labelled source as {'image', 'centre'} items: the given centres (N, 2) (NaN: none), else
  the lesion centroid of each item's label (`lesion_labels`). Picklable for grain workers."""

  def __init__(self, labelled_source: Any, lesion_labels: Sequence[int] = (),
               centres: Optional[np.ndarray] = None):
    self.source, self.lesion_labels = labelled_source, tuple(lesion_labels)
    if centres is not None:
      centres = np.asarray(centres, np.float64)
      if centres.shape != (len(labelled_source), 2):
        raise InputError(f"{centres.shape[0] if centres.ndim else 0} ROI centres for "
                         f"{len(labelled_source)} slices")
    self.centres = centres

  def __len__(self) -> int:
    return len(self.source)

  def centre(self, index: int, label: Optional[np.ndarray]) -> Optional[tuple[float, float]]:
    if self.centres is not None:
      row = self.centres[int(index)]
      return None if np.isnan(row).any() else (float(row[0]), float(row[1]))
    return None if label is None else centre_of(label, self.lesion_labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    item = self.source[int(index)]
    if not isinstance(item, dict):
      raise InputError("ROI crops need a labelled source (items {'image', 'label'})")
    return {"image": item["image"], "centre": self.centre(index, item.get("label"))}


def train_dataset(source: CentredSource, settings: RoiSettings, *, with_hr2: bool,
                  global_batch_size: int, seed: int, process_index: int = 0,
                  process_count: int = 1):
  """This process' infinite stream of ROI batches {'lr', 'hr'[, 'hr2']} (grain MapDataset)."""
  pipeline.local_batch_size(global_batch_size, process_count)  # fails before any reading
  transform = transforms.MsganTriple(settings.size, settings.scale, settings.synthesis(),
                                     intermediate=with_hr2)
  elements = pipeline.transformed_stream(source, transform, seed)
  return pipeline.local_batches(elements, global_batch_size=global_batch_size,
                                process_index=process_index, process_count=process_count)


# ----------------------------------------------------------------------------------------------
# Evaluation.


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """The chapter-3 test inputs of one split (module docstring); arrays (N, ...) float32."""
  lr: np.ndarray          # whole LR slices (+ noise)
  hr: np.ndarray          # whole-slice ground truth (the GT of `pipeline.make_test_pairs`)
  boxes: np.ndarray       # (N, 4) int: ROI (top, left, h, w) in HR pixels
  lr_roi: np.ndarray      # LR of the HR ROI (+ noise)
  hr_roi: np.ndarray      # HR ROI
  ids: tuple[str, ...]    # 'subject/s<slice index>' (or 'slice<n>')

  def crop_rois(self, images: np.ndarray) -> np.ndarray:
    """The ROI boxes of whole HR-sized images (N, H, W, C) -> (N, h, w, C)."""
    return np.stack([img[t:t + h, l:l + w] for img, (t, l, h, w) in zip(images, self.boxes)])


def _ids(source: Any) -> tuple[str, ...]:
  n = len(source)
  index = getattr(source, "slice_index", None)
  subject = getattr(source, "subject", None)
  subjects = subject if isinstance(subject, (list, tuple)) else [subject] * n
  if index is None:
    return tuple(f"slice{i:04d}" for i in range(n))
  return tuple(f"{s or 'slice'}/s{int(k):03d}#{i}" for i, (s, k) in enumerate(zip(subjects,
                                                                                 index)))


def eval_set(source: CentredSource, settings: RoiSettings, *,
             seed: int = EVAL_NOISE_SEED) -> EvalSet:
  """The test inputs of an in-memory labelled split (module docstring)."""
  items = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(it["image"], np.float32) for it in items])
  h, w = settings.size
  if images.shape[1] < h or images.shape[2] < w:
    raise InputError(f"the evaluation slices ({images.shape[1]}x{images.shape[2]}) are smaller "
                     f"than the ROI {h}x{w}")
  lr, hr = pipeline.make_test_pairs(images, settings.scale, blur=settings.blur)
  synth = settings.synthesis()
  lr_roi_hw = settings.lr_size()
  boxes, lr_noisy, lr_roi, hr_roi = [], [], [], []
  for n, it in enumerate(items):
    top, left = transforms.roi_window(hr.shape[1:3], settings.size, it["centre"])
    boxes.append((top, left, h, w))
    roi = hr[n, top:top + h, left:left + w]
    hr_roi.append(roi)
    rng = np.random.default_rng([seed, n])
    lr_roi.append(synth(roi, lr_roi_hw, rng))
    if settings.kspace_sigma:  # the whole slice gets its own draw of the same noise level
      lr_noisy.append(transforms.add_kspace_noise(lr[n], settings.kspace_sigma, rng))
  if settings.kspace_sigma:
    lr = np.stack(lr_noisy).astype(np.float32)
  return EvalSet(lr=lr, hr=hr, boxes=np.asarray(boxes, np.int64), lr_roi=np.stack(lr_roi),
                 hr_roi=np.stack(hr_roi), ids=_ids(source.source))


def scale_centres(centres_rc: np.ndarray, from_hw: Sequence[int], to_hw: Sequence[int]
                  ) -> np.ndarray:
  """(row, col) pixel centres of images of size `from_hw` in pixels of size `to_hw` (half-pixel
  convention: v' = (v + 0.5) * to / from - 0.5)."""
  centres_rc = np.asarray(centres_rc, np.float64)
  ratio = np.asarray(to_hw, np.float64) / np.asarray(from_hw, np.float64)
  return (centres_rc + 0.5) * ratio - 0.5


def lr_of(images: np.ndarray, scale: float) -> np.ndarray:
  """What the lesion detector sees: whole (H, W, C) or (N, H, W, C) slices (scale 1) or their
  bicubic LR (bicubic / scale, thesis eq. 3.23), float32."""
  images = np.asarray(images, np.float32)
  if float(scale) == 1.0:
    return images
  hw = degradation.lr_size(images.shape[-3:-1], scale)
  return degradation.degrade(images, scale, lr_hw=hw).astype(np.float32)
