"""Dataset readers: find the volumes of a dataset in its published folder layout, then load them.

Each reader module (oasis, brats, acdc, covid_ct, folder) provides

  discover(src: str, options: ReaderOptions) -> Discovery   # no voxel data is read
  load(spec: VolumeSpec, options: ReaderOptions) -> Loaded    # one volume, validated

`discover` returns one `VolumeSpec` per volume (an ACDC patient has two, its ED and ES frames),
sorted by (subject, volume), with every source file as an absolute path; files that are expected
but missing are still listed, so that `load` reports them as bad input (and `--skip_bad` can skip
just that volume). `load` reads the channels (one per modality, all float64 on one grid) and the
label volume, or raises `InputError` naming the file.

Folder layouts: reference spec §4.2 (and each module's docstring). Run the tests with
`.venv/bin/python -m pytest -q tests/test_data_prep.py`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Optional, Sequence

import numpy as np

from data_prep import volume_io
from medsr_jax.errors import InputError

DATASETS = ('oasis', 'brats', 'acdc', 'covid_ct', 'folder')


@dataclasses.dataclass(frozen=True)
class ReaderOptions:
  """What the command line passes to readers.

  Attributes:
    modalities: BraTS modality names in channel order.
    labels: read label volumes (False: images only, no label field in the records).
    labels_dir: `folder`: a directory of label volumes named like the images ('' = automatic).
    label_suffixes: `folder`: a label volume is named `<image stem><suffix>.<ext>`.
    subject_from: `folder`: 'file' (one subject per volume) or 'dir' (the top-level folder).
  """
  modalities: tuple[str, ...] = ()
  labels: bool = True
  labels_dir: str = ''
  label_suffixes: tuple[str, ...] = ('_seg', '_label', '_labels', '_gt', '_mask')
  subject_from: str = 'file'


@dataclasses.dataclass(frozen=True)
class VolumeSpec:
  """One volume to process.

  Attributes:
    subject: subject id (the unit of the train/val/test split).
    volume: volume id, unique in the dataset (subject, or e.g. 'patient001_frame01').
    images: absolute paths, one per channel (a DICOM series: its folder, see `dicom_files`).
    label: absolute path of the label volume, or None. `extra_labels` holds more label files
      that the reader merges with it (COVID-CT lung + infection masks).
    stratum: split stratum ('HGG' / 'LGG' for BraTS, 'Train' / 'Validation' for COVID-19-20).
    dicom_files: for a DICOM series, its files (absolute paths, sorted by name).
  """
  subject: str
  volume: str
  images: tuple[str, ...]
  label: Optional[str] = None
  extra_labels: tuple[str, ...] = ()
  stratum: str = ''
  dicom_files: tuple[str, ...] = ()

  def files(self) -> list[str]:
    """Every source file this volume reads (for the plan fingerprint)."""
    out = list(self.dicom_files) if self.dicom_files else list(self.images)
    if self.label:
      out.append(self.label)
    out.extend(self.extra_labels)
    return out


@dataclasses.dataclass
class Discovery:
  """What a reader found under --src.

  Attributes:
    volumes: sorted by (subject, volume).
    layout: which published layout was recognised (e.g. 'zenodo-20' or 'covid19-20').
    modalities: channel names of every volume.
    has_labels: every volume has a label file.
  """
  volumes: list[VolumeSpec]
  layout: str
  modalities: list[str]
  has_labels: bool


@dataclasses.dataclass
class Loaded:
  """A loaded volume: `channels` (C arrays (X, Y, Z) float64), its label (int) and geometry."""
  channels: list[np.ndarray]
  label: Optional[np.ndarray]
  affine: np.ndarray
  zooms: tuple[float, float, float]


def reader(dataset: str):
  """The reader module of `dataset`."""
  if dataset not in DATASETS:
    raise InputError(f'unknown dataset {dataset!r}; choose one of {", ".join(DATASETS)}')
  return importlib.import_module(f'data_prep.readers.{dataset}')


def check_src(src: str) -> str:
  """`src` as an absolute path; InputError unless it is a directory."""
  path = os.path.abspath(os.fspath(src))
  if not os.path.isdir(path):
    raise InputError(f'{src}: source directory not found')
  return path


def sorted_volumes(volumes: Sequence[VolumeSpec]) -> list[VolumeSpec]:
  """Sorted by (subject, volume); InputError if two volumes share a volume id."""
  out = sorted(volumes, key=lambda v: (v.subject, v.volume))
  seen: dict[str, VolumeSpec] = {}
  for v in out:
    if v.volume in seen:
      raise InputError(f'two volumes have the id {v.volume!r}: {seen[v.volume].images[0]} and '
                       f'{v.images[0]}')
    seen[v.volume] = v
  return out


def loaded(spec: VolumeSpec, options: ReaderOptions, channels: Sequence) -> Loaded:
  """The `Loaded` of `channels` (volume_io.Volume, already read, on one grid) and, when labels
  are read, the label volume `spec.label`, checked against the first channel's grid."""
  first = channels[0]
  label = None
  if options.labels and spec.label:
    label = volume_io.read_label(spec.label, like=first).data
  return Loaded(channels=[v.data for v in channels], label=label, affine=first.affine,
                zooms=first.zooms)


def load_single(spec: VolumeSpec, options: ReaderOptions) -> Loaded:
  """`load` of a one-channel volume: the image `spec.images[0]` and its label."""
  return loaded(spec, options, [volume_io.read_volume(spec.images[0])])


def same_grid(channels: Sequence, names: Sequence[str]) -> None:
  """InputError unless all volumes (volume_io.Volume) have one shape."""
  first = channels[0]
  for vol, name in zip(channels[1:], names[1:]):
    if vol.data.shape != first.data.shape:
      raise InputError(f'{vol.path}: {name} volume has shape {vol.data.shape} but '
                       f'{first.path} has {first.data.shape}')
