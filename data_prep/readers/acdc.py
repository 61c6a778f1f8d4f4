"""ACDC reader: the labelled cardiac cine-MR frames (end-diastole, end-systole) of each patient.

Layout (the ACDC challenge release, reference spec §4.2):

  <src>/[database/][training|testing/]patient001/
      patient001_frame01.nii.gz       (the ED frame)
      patient001_frame01_gt.nii.gz    (0 bg, 1 RV, 2 myocardium, 3 LV)
      patient001_frame12.nii.gz, patient001_frame12_gt.nii.gz   (the ES frame)
      patient001_4d.nii.gz, Info.cfg

As in the reference, the frames are the ones with a ground-truth file (`<pid>_frame*_gt.nii.gz`),
each its own volume ('patient001_frame01'), normalised separately; `_4d` files are not read.
With --no_labels every `<pid>_frameNN.nii.gz` is a volume. Subject id = patient folder name,
as in the thesis lists. Tests: `.venv/bin/python -m pytest -q tests/test_data_prep.py`.
"""

from __future__ import annotations

import os
import re

from data_prep.readers import Discovery, Loaded, ReaderOptions, VolumeSpec
from data_prep.readers import check_src, load_single, sorted_volumes
from medsr_jax.errors import InputError

PATIENT_RE = re.compile(r'^patient\d+$')
FRAME_RE = re.compile(r'^(patient\d+_frame\d+)(_gt)?\.nii(\.gz)?$')
MODALITIES = ['cine_mr']
MAX_DEPTH = 3


def _patient_dirs(src: str) -> list[str]:
  if PATIENT_RE.match(os.path.basename(src)):
    return [src]
  found, frontier = [], [src]
  for _ in range(MAX_DEPTH):
    nxt = []
    for d in frontier:
      for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if not os.path.isdir(p):
          continue
        (found if PATIENT_RE.match(name) else nxt).append(p)
    frontier = nxt
  return found


def discover(src: str, options: ReaderOptions) -> Discovery:
  src = check_src(src)
  volumes = []
  for pd in _patient_dirs(src):
    pid = os.path.basename(pd)
    frames: dict[str, dict[str, str]] = {}
    for name in sorted(os.listdir(pd)):
      m = FRAME_RE.match(name)
      if m and m.group(1).startswith(pid + '_'):
        frames.setdefault(m.group(1), {})['gt' if m.group(2) else 'image'] = os.path.join(pd, name)
    for frame, files in sorted(frames.items()):
      if options.labels:
        if 'gt' not in files:
          continue  # the reference reads labelled frames only
        gt = files['gt']
        image = files.get('image', gt.replace('_gt.nii', '.nii'))
        volumes.append(VolumeSpec(subject=pid, volume=frame, images=(image,), label=gt))
      elif 'image' in files:
        volumes.append(VolumeSpec(subject=pid, volume=frame, images=(files['image'],)))
  if not volumes:
    raise InputError(f'{src}: no ACDC frames found (expected patientNNN/patientNNN_frameNN'
                     f'{"_gt" if options.labels else ""}.nii.gz)')
  return Discovery(volumes=sorted_volumes(volumes), layout='acdc', modalities=list(MODALITIES),
                   has_labels=options.labels)


def load(spec: VolumeSpec, options: ReaderOptions) -> Loaded:
  return load_single(spec, options)
