"""Builds the embedded MRI sample (medsr_jax/data/sample/) from the Colin27 T1 scan.

Usage:
  python -m data_prep.make_sample [--src=.../ch2.nii.gz] [--brain=.../ch2bet.nii.gz] \
      [--out=medsr_jax/data/sample]

The default --src is where Debian's `mricron-data` package installs Colin27 (`ch2.nii.gz`, a
real single-subject T1 scan with skull, 1 mm, 181x217x181) and its skull-stripped version
(`ch2bet.nii.gz`); `--brain` defaults to `ch2bet.nii.gz` beside `--src`. Why a sharp single-subject
scan rather than an average template: see the design brief, "The embedded sample".

It writes two gzipped NIfTI-1 files:

* `colin27_t1.nii.gz`: the T1 volume as it is (same uint8 intensities, dtype, header and affine),
  minus the all-zero axial slices at the top and bottom (the affine is shifted to match).
* `colin27_tissue.nii.gz`: uint8 tissue labels on the same grid, in the OASIS FSL-FAST convention
  (0 background, 1 CSF, 2 grey matter, 3 white matter), from a simple classification:
    1. brain mask = ``ch2bet > 0``;
    2. a 3-class k-means (Lloyd's algorithm) on the T1 intensities inside the mask, run on the
       histogram of distinct values (exact and deterministic), started at the 1/6, 1/2 and 5/6
       weighted quantiles and iterated until the assignment stops changing;
    3. classes ordered by mean intensity: CSF < GM < WM (T1 contrast); each voxel in the mask gets
       the class of the nearest centre (ties to the darker class), voxels outside get 0.
  This is a plain intensity classification, not FAST: no bias-field correction or spatial prior,
  so partial-volume voxels at tissue borders and dark non-brain voxels left in the mask become CSF.

Output is deterministic: the same inputs give the same bytes (gzip level 9, mtime 0).
"""

from __future__ import annotations

import argparse
import gzip
import pathlib
import sys

import nibabel as nib
import numpy as np

from medsr_jax.errors import InputError, cli_main

# Where Debian's mricron-data package installs the Colin27 T1 (only a default; pass --src).
DEFAULT_SRC = "/usr/share/mricron/templates/ch2.nii.gz"
T1_NAME = "colin27_t1.nii.gz"
TISSUE_NAME = "colin27_tissue.nii.gz"
LABEL_NAMES = ("background", "CSF", "GM", "WM")


def kmeans_1d(values: np.ndarray, k: int = 3, max_iter: int = 200) -> np.ndarray:
  """Lloyd's k-means on 1-D values; returns the k centres in ascending order.

  Runs on the distinct values weighted by their counts, so it is exact for integer images and
  costs nothing. Initial centres: the (2i+1)/(2k) weighted quantiles. Deterministic.
  """
  vals, counts = np.unique(np.asarray(values, dtype=np.float64).ravel(), return_counts=True)
  if vals.size < k:
    raise InputError(f"need at least {k} distinct intensities in the brain mask, got {vals.size}")
  w = counts.astype(np.float64)
  cdf = np.cumsum(w) / w.sum()
  centres = np.array([vals[np.searchsorted(cdf, (2 * i + 1) / (2 * k))] for i in range(k)])
  assign = None
  for _ in range(max_iter):
    new = np.argmin(np.abs(vals[:, None] - centres[None, :]), axis=1)
    if assign is not None and np.array_equal(new, assign):
      break
    assign = new
    for c in range(k):
      sel = assign == c
      if sel.any():  # An empty cluster keeps its centre.
        centres[c] = np.sum(vals[sel] * w[sel]) / np.sum(w[sel])
  return np.sort(centres)


def classify_tissue(t1: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Labels voxels 0 bg / 1 CSF / 2 GM / 3 WM; returns (labels uint8, centres ascending)."""
  if not brain.any():
    raise InputError("the brain mask is empty")
  t1 = np.asarray(t1, dtype=np.float64)
  centres = kmeans_1d(t1[brain], k=3)
  nearest = np.argmin(np.abs(t1[..., None] - centres), axis=-1)  # First (darker) on ties.
  labels = np.where(brain, nearest + 1, 0).astype(np.uint8)
  return labels, centres


def _nonzero_z_range(*volumes: np.ndarray) -> tuple[int, int]:
  """First and one-past-last axial index where any of the volumes is non-zero."""
  occupied = np.zeros(volumes[0].shape[2], dtype=bool)
  for v in volumes:
    occupied |= np.asarray(v).any(axis=(0, 1))
  idx = np.flatnonzero(occupied)
  if idx.size == 0:
    raise InputError("the volume is empty")
  return int(idx[0]), int(idx[-1]) + 1


def _write_nii_gz(img: nib.Nifti1Image, path: pathlib.Path) -> None:
  """Writes a .nii.gz whose bytes depend only on the image (no timestamp, fixed level)."""
  path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=9, mtime=0))


def _load(path: pathlib.Path) -> nib.Nifti1Image:
  if not path.is_file():
    raise InputError(f"no such file: {path} (install Debian's mricron-data or pass --src/--brain)")
  img = nib.load(str(path))
  if not isinstance(img, nib.Nifti1Image) or len(img.shape) != 3:
    raise InputError(f"{path}: expected a 3-D NIfTI-1 volume, got {type(img).__name__} {img.shape}")
  return img


def make_sample(src: pathlib.Path, brain_src: pathlib.Path, out: pathlib.Path) -> dict:
  """Writes the two sample files into `out`; returns a summary dict (paths, shapes, centres)."""
  t1_img, bet_img = _load(src), _load(brain_src)
  if t1_img.shape != bet_img.shape or not np.allclose(t1_img.affine, bet_img.affine):
    raise InputError(f"{src} and {brain_src} are not on the same voxel grid")
  t1 = np.asanyarray(t1_img.dataobj)  # Original dtype (uint8 for ch2), no scaling applied.
  brain = np.asanyarray(bet_img.dataobj) > 0
  labels, centres = classify_tissue(t1, brain)

  z0, z1 = _nonzero_z_range(t1, brain)
  t1_out = t1_img.slicer[:, :, z0:z1]  # Keeps the header; shifts the affine by z0 slices.
  t1_out = nib.Nifti1Image(np.ascontiguousarray(t1[:, :, z0:z1]), t1_out.affine, t1_out.header)

  lab_header = t1_out.header.copy()
  lab_header.set_data_dtype(np.uint8)
  lab_header.set_intent("label")
  lab_header["descrip"] = b"tissue 0 bg 1 CSF 2 GM 3 WM; kmeans3"
  lab_header["cal_min"], lab_header["cal_max"] = 0, 3
  lab_header.set_slope_inter(1.0, 0.0)
  lab_out = nib.Nifti1Image(np.ascontiguousarray(labels[:, :, z0:z1]), t1_out.affine, lab_header)

  out.mkdir(parents=True, exist_ok=True)
  _write_nii_gz(t1_out, out / T1_NAME)
  _write_nii_gz(lab_out, out / TISSUE_NAME)
  counts = np.bincount(labels.ravel(), minlength=4)
  return {
      "t1": out / T1_NAME, "tissue": out / TISSUE_NAME, "shape": t1_out.shape,
      "z_kept": (z0, z1), "centres": centres, "voxels_per_label": counts,
  }


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--src", default=DEFAULT_SRC,
                      help="Colin27 T1 with skull (default: Debian mricron-data's ch2.nii.gz)")
  parser.add_argument("--brain", default=None,
                      help="skull-stripped Colin27 on the same grid (default: ch2bet.nii.gz"
                           " beside --src)")
  parser.add_argument("--out", default="medsr_jax/data/sample", help="output folder")
  args = parser.parse_args(argv)
  src = pathlib.Path(args.src)
  brain = pathlib.Path(args.brain) if args.brain else src.with_name("ch2bet.nii.gz")
  summary = make_sample(src, brain, pathlib.Path(args.out))
  for key in ("t1", "tissue"):
    print(f"wrote {summary[key]} ({summary[key].stat().st_size / 1e6:.2f} MB)")
  z0, z1 = summary["z_kept"]
  print(f"shape {summary['shape']} (axial slices {z0}..{z1 - 1} of the source)")
  print("k-means centres (CSF, GM, WM): " + ", ".join(f"{c:.1f}" for c in summary["centres"]))
  print("voxels per label: " + ", ".join(
      f"{n}={c}" for n, c in zip(LABEL_NAMES, summary["voxels_per_label"])))


if __name__ == "__main__":
  cli_main(lambda: main(sys.argv[1:]))
