"""BraTS reader: the four registered MR modalities of each subject, stacked, and the tumour labels.

Layouts (reference spec §4.2; `--src` is the folder that holds them):

  graded (BraTS 2017-2019):
      <src>/HGG/Brats17_TCIA_607_1/Brats17_TCIA_607_1_{t1ce,t1,t2,flair,seg}.nii.gz
      <src>/LGG/...
      subject id 'HGG_Brats17_TCIA_607_1' (the reference's encoding, as in the thesis lists)
  flat (BraTS 2020-2021):
      <src>/BraTS20_Training_001/BraTS20_Training_001_{t1ce,...,seg}.nii.gz
      subject id = the folder name
  flat, 2023 names:
      <src>/BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1c,t1n,t2w,t2f,seg}.nii.gz
      (t1c = t1ce, t1n = t1, t2w = t2, t2f = flair)

Channels follow `--modalities` (default t1ce, t1, t2, flair: the order of the thesis and the
reference configs). Labels are returned as stored (0, 1, 2, 4); the protocol selects slices on
them and then remaps 4 -> 3 (spec §4.2). Volumes are 240x240x155, 1 mm. The HGG / LGG folder is
the split stratum. Tests: `.venv/bin/python -m pytest -q tests/test_data_prep.py`.
"""

from __future__ import annotations

import os

from data_prep import volume_io
from data_prep.readers import Discovery, Loaded, ReaderOptions, VolumeSpec
from data_prep.readers import check_src, loaded, same_grid, sorted_volumes
from medsr_jax.errors import InputError

MODALITIES = ('t1ce', 't1', 't2', 'flair')
GRADES = ('HGG', 'LGG')
# BraTS 2023 file names for the same sequences.
ALIASES = {'t1ce': 't1c', 't1': 't1n', 't2': 't2w', 'flair': 't2f', 'seg': 'seg'}
EXTENSIONS = ('.nii.gz', '.nii')


def _file(folder: str, name: str, key: str) -> str:
  """The file of sequence `key` in a subject folder (the expected path if there is none)."""
  candidates = []
  for ext in EXTENSIONS:
    candidates.append(os.path.join(folder, f'{name}_{key}{ext}'))
    candidates.append(os.path.join(folder, f'{name}-{ALIASES.get(key, key)}{ext}'))
  for c in candidates:
    if os.path.isfile(c):
      return c
  return candidates[0]


def _is_subject(folder: str) -> bool:
  name = os.path.basename(folder)
  try:
    return any(f.startswith(name) and f.endswith(EXTENSIONS) for f in os.listdir(folder))
  except OSError:
    return False


def discover(src: str, options: ReaderOptions) -> Discovery:
  src = check_src(src)
  modalities = tuple(options.modalities) or MODALITIES
  for m in modalities:
    if m not in MODALITIES:
      raise InputError(f'unknown BraTS modality {m!r}; choose from {", ".join(MODALITIES)}')
  if len(set(modalities)) != len(modalities):
    raise InputError(f'--modalities lists a modality twice: {",".join(modalities)}')
  graded = [g for g in GRADES if os.path.isdir(os.path.join(src, g))]
  folders: list[tuple[str, str]] = []  # (stratum, folder)
  if graded:
    for g in graded:
      root = os.path.join(src, g)
      folders += [(g, os.path.join(root, d)) for d in sorted(os.listdir(root))
                  if os.path.isdir(os.path.join(root, d))]
  else:
    folders = [('', os.path.join(src, d)) for d in sorted(os.listdir(src))
               if os.path.isdir(os.path.join(src, d)) and _is_subject(os.path.join(src, d))]
  volumes = []
  for stratum, folder in folders:
    name = os.path.basename(folder)
    subject = f'{stratum}_{name}' if stratum else name
    images = tuple(_file(folder, name, m) for m in modalities)
    label = _file(folder, name, 'seg') if options.labels else None
    volumes.append(VolumeSpec(subject=subject, volume=subject, images=images, label=label,
                              stratum=stratum))
  if not volumes:
    raise InputError(f'{src}: no BraTS subject folders found (expected HGG/ and LGG/ folders, or '
                     'one folder per subject holding <name>_t1ce.nii.gz etc.)')
  return Discovery(volumes=sorted_volumes(volumes), layout='graded' if graded else 'flat',
                   modalities=list(modalities), has_labels=options.labels)


def load(spec: VolumeSpec, options: ReaderOptions) -> Loaded:
  names = tuple(options.modalities) or MODALITIES
  for name, path in zip(names, spec.images):
    if not os.path.exists(path):
      raise InputError(f'{path}: missing {name} modality of BraTS subject {spec.subject}')
  vols = [volume_io.read_volume(p) for p in spec.images]
  same_grid(vols, names)
  return loaded(spec, options, vols)
