"""OASIS-1 reader: the atlas-registered, brain-masked T1 of each subject and its FAST tissue labels.

Layout (the OASIS-1 cross-sectional discs, reference spec §4.2):

  <src>/[disc1/]OAS1_0001_MR1/
      PROCESSED/MPRAGE/T88_111/OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc.img (+ .hdr)
          Analyze 7.5, big-endian int16, 176x208x176x1, 1 mm isotropic
      FSL_SEG/OAS1_0001_MR1_mpr_n4_anon_111_t88_masked_gfc_fseg.img (+ .hdr)
          uint8: 0 bg, 1 CSF, 2 GM, 3 WM

`--src` may be a disc folder, a folder of discs, or one subject folder. The subject id is the
subject folder's name ('OAS1_0001_MR1'), as in the thesis lists (spec Appendix A). One volume per
subject, one channel ('t1'). Tests: `.venv/bin/python -m pytest -q tests/test_data_prep.py`.
"""

from __future__ import annotations

import glob
import os
import re

from data_prep.readers import Discovery, Loaded, ReaderOptions, VolumeSpec
from data_prep.readers import check_src, load_single, sorted_volumes
from medsr_jax.errors import InputError

SUBJECT_RE = re.compile(r'^OAS1_\d{4}_MR\d+$')
IMAGE_DIR = os.path.join('PROCESSED', 'MPRAGE', 'T88_111')
LABEL_DIR = 'FSL_SEG'
EXTENSIONS = ('.img', '.nii.gz', '.nii')
MODALITIES = ['t1']


def _subject_dirs(src: str) -> list[str]:
  if SUBJECT_RE.match(os.path.basename(src)):
    return [src]
  found = []
  for level1 in sorted(os.listdir(src)):
    p1 = os.path.join(src, level1)
    if not os.path.isdir(p1):
      continue
    if SUBJECT_RE.match(level1):
      found.append(p1)
      continue
    for level2 in sorted(os.listdir(p1)):  # disc folders
      p2 = os.path.join(p1, level2)
      if SUBJECT_RE.match(level2) and os.path.isdir(p2):
        found.append(p2)
  return found


def _find(folder: str, suffix: str, exclude: str = '') -> list[str]:
  out = []
  for ext in EXTENSIONS:
    for p in glob.glob(os.path.join(glob.escape(folder), f'*{suffix}{ext}')):
      if not exclude or not p[:-len(ext)].endswith(exclude):
        out.append(p)
  return sorted(out)


def discover(src: str, options: ReaderOptions) -> Discovery:
  src = check_src(src)
  volumes = []
  for sd in _subject_dirs(src):
    sid = os.path.basename(sd)
    images = _find(os.path.join(sd, IMAGE_DIR), 'masked_gfc', exclude='_fseg')
    image = images[0] if images else os.path.join(
        sd, IMAGE_DIR, f'{sid}_mpr_n4_anon_111_t88_masked_gfc.img')
    label = None
    if options.labels:
      labels = _find(os.path.join(sd, LABEL_DIR), 'masked_gfc_fseg')
      label = labels[0] if labels else os.path.join(
          sd, LABEL_DIR, f'{sid}_mpr_n4_anon_111_t88_masked_gfc_fseg.img')
    volumes.append(VolumeSpec(subject=sid, volume=sid, images=(image,), label=label))
  if not volumes:
    raise InputError(f'{src}: no OASIS-1 subject folders (OAS1_xxxx_MRy) found')
  return Discovery(volumes=sorted_volumes(volumes), layout='oasis1', modalities=list(MODALITIES),
                   has_labels=options.labels)


def load(spec: VolumeSpec, options: ReaderOptions) -> Loaded:
  return load_single(spec, options)
