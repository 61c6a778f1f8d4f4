"""Builds TFRecord shards of preprocessed 2-D slices from a dataset in its published layout.

Usage:
  python -m data_prep.build --dataset={oasis,brats,acdc,covid_ct,folder} --src=DIR --out=DIR \
      [--protocol=rdst|miassr|msgan] [--split=thesis|random:SEED|file:PATH|slices:SEED[:VAL]]
      [--shards=auto|N|train=N,...] [--workers=N] [--skip_bad] [--modalities=t1ce,t1,t2,flair]
      [--dry_run] ...

  python -m data_prep.build --dataset=oasis --src=/data/OASIS/disc1 --out=/data/shards/oasis_rdst
  python -m data_prep.build --dataset=brats --src=/data/BraTS17 --out=/data/shards/brats_rdst
  python -m data_prep.build --dataset=brats --protocol=msgan --src=/data/BraTS18 \
      --out=/data/shards/brats_msgan                       # thesis ch. 3 (MS-GAN, LFSR)
  python -m data_prep.build --dataset=covid_ct --protocol=miassr --src=/data/COVID-19-20_v2 ...
  python -m data_prep.build --dataset=folder --src=/hospital/dicom --out=... --crop=256x256

Protocol msgan (thesis ch. 3, §3.3.1; BraTS only, other datasets are refused with exit 2): the
t1ce channel, the whole 240x240 axial slices that hold any tumour label, divided by the
dataset's maximum, a `lesion_centre` in every record, and by default a slice-level split
(`--split=slices:0`: test 2368/11927 of the slices, val 5 % of the rest; splits.py). The divisor
needs a first pass that reads every volume used (in parallel, in a fixed order) before anything
is written; it is recorded as manifest settings 'intensity_divisor' (the raw value that became
1.0). A resumed build recomputes it, and it comes out the same (a maximum of the same voxels):
if the sources changed, the settings differ and the build is refused. --dry_run runs the first
pass too (it reads, writes nothing) to report the divisor and the slice counts.

What it does (details in the modules):
  readers/<dataset>.py   finds the volumes of the published folder layout (spec §4.2)
  splits.py              subject-wise train / val / test: the thesis lists or a seeded fallback;
                         slice-level for msgan
  protocols.py           per dataset x method: slice selection, normalisation, crop, labels
  writer.py              shards + offset index + manifest.json: parallel over volumes,
                         deterministic for any --workers, resumable, atomic

The output directory follows `medsr_jax.data.manifest` (read by the training input pipeline:
config `data.path=<out>`). Re-running the same command into the same --out resumes an interrupted
build (or does nothing if it is complete); other settings into a non-empty --out are refused.
Progress (volumes done / total, slices/s) goes to stderr, then a summary. Bad input (unreadable
or truncated volume, image / label shape mismatch, NaN voxels, missing modality, inconsistent
DICOM series) stops with `error: <file>: <reason>` and exit code 2, or with --skip_bad leaves that
volume out and lists it in the manifest. A split (train, val or test) that --skip_bad leaves with
no slice at all (its only volumes were the bad ones) stops the build with one line and exit 2, its
manifest left `complete: false` so that training refuses it, unless --allow_empty_split (then it
is complete). An emptied val or test split would let training run to its end and fail there; an
emptied train split is an error too (most likely the wrong files, modality or --src), though
training would refuse it at once: with --allow_empty_split the build completes and can serve
`medsr_jax.evaluate` (test split) while training refuses it ('the training source has no
slices'). A split that was planned empty (no subject of its own) is never an error.

Tests: `.venv/bin/python -m pytest -q tests/test_data_prep.py tests/test_data_prep_bad.py
tests/test_data_prep_folder.py tests/test_data_prep_msgan.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
import time
from typing import Optional, Sequence

from data_prep import protocols
from data_prep import readers
from data_prep import splits as splits_lib
from data_prep import writer
from medsr_jax.data import manifest as manifest_lib
from medsr_jax.errors import InputError, cli_main
from medsr_jax.logging.progress import format_duration

FORMAT_VERSION = 1
AUTO_VOLUMES_PER_SHARD = 8
MAX_DEFAULT_WORKERS = 8


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m data_prep.build',
      description='Preprocessed 2-D slices of a medical image dataset -> TFRecord shards.')
  p.add_argument('--dataset', required=True, choices=readers.DATASETS)
  p.add_argument('--src', required=True, help='the dataset folder (its published layout)')
  p.add_argument('--out', required=True, help='output directory (new, empty, or a resumed one)')
  p.add_argument('--protocol', default='rdst', choices=protocols.PROTOCOLS,
                 help='preprocessing of RDST (thesis ch. 5, default), MIASSR (ch. 4) or MS-GAN '
                      '(ch. 3, BraTS only)')
  p.add_argument('--split', default=None,
                 help='thesis | random:SEED | file:PATH.json | slices:SEED[:VAL] (msgan: a '
                      'slice-level split, its default slices:0)')
  p.add_argument('--shards', default='auto',
                 help=f'auto (one per {AUTO_VOLUMES_PER_SHARD} volumes) | N (train; val/test '
                      'in proportion) | train=N,val=N,test=N')
  p.add_argument('--workers', type=int, default=None,
                 help='processes reading volumes (default: CPUs, at most 8); the output does '
                      'not depend on it')
  p.add_argument('--skip_bad', action='store_true',
                 help='leave out volumes with bad input (listed in the manifest) instead of '
                      'stopping')
  p.add_argument('--allow_empty_split', action='store_true',
                 help='with --skip_bad: accept a train, val or test split left without '
                      'slices (by default an error: training would refuse it or fail at its '
                      'end)')
  p.add_argument('--modalities', default='',
                 help='BraTS: channels in order (default t1ce,t1,t2,flair; msgan: t1ce only); '
                      'folder: the channel name (default image)')
  p.add_argument('--select', choices=protocols.SELECT_RULES, default=None,
                 help='slice selection (default: the protocol\'s)')
  p.add_argument('--label_threshold', type=float, default=None,
                 help='--select=label keeps slices whose label values sum to more than this '
                      f'(default {protocols.LABEL_THRESHOLD:g})')
  crop = p.add_mutually_exclusive_group()
  crop.add_argument('--crop', default=None, help='HxW: centre crop (overrides the protocol)')
  crop.add_argument('--margin', default=None, help='M0,M1: remove M0 rows / M1 columns per side')
  crop.add_argument('--no_crop', action='store_true', help='keep whole slices')
  p.add_argument('--pad', choices=protocols.PAD_MODES, default=None,
                 help='centre crop of a smaller slice: none (keep its size, the reference) or '
                      'edge (pad up to the crop)')
  p.add_argument('--axis', type=int, default=None,
                 help='slicing axis of the volumes (default 2, as in the thesis)')
  p.add_argument('--no_labels', action='store_true', help='do not read label volumes')
  p.add_argument('--labels_dir', default='', help='folder: directory of label volumes')
  p.add_argument('--label_suffixes', default='',
                 help='folder: label file suffixes (default _seg,_label,_labels,_gt,_mask)')
  p.add_argument('--subject_from', choices=('file', 'dir'), default='file',
                 help='folder: subject = each volume (file) or its top-level folder (dir)')
  p.add_argument('--dry_run', action='store_true', help='print the plan and write nothing')
  p.add_argument('--quiet', action='store_true', help='no progress lines')
  return p


def _pair(text: str, sep: str, flag: str) -> tuple[int, int]:
  try:
    a, b = (int(x) for x in text.lower().split(sep))
  except ValueError:
    raise InputError(f'{flag} must look like 12{sep}34, got {text!r}') from None
  return a, b


def _shard_counts(text: str, volumes: dict[str, int]) -> dict[str, int]:
  """--shards -> shards per split (each at least 1 and at most the split's volumes)."""
  counts: dict[str, int] = {}
  if text == 'auto':
    counts = {s: math.ceil(n / AUTO_VOLUMES_PER_SHARD) for s, n in volumes.items()}
  elif text.isdigit():
    n_train = int(text)
    if n_train < 1:
      raise InputError(f'--shards must be >= 1, got {text}')
    base = max(volumes['train'], 1)
    counts = {s: (n_train if s == 'train' else math.ceil(n_train * n / base))
              for s, n in volumes.items()}
  else:
    for part in text.split(','):
      name, _, value = part.partition('=')
      if name not in manifest_lib.SPLITS or not value.isdigit() or int(value) < 1:
        raise InputError(f'--shards must be auto, N or train=N,val=N,test=N; got {text!r}')
      counts[name] = int(value)
    counts = {s: counts.get(s, 1) for s in volumes}
  return {s: max(1, min(counts[s], n)) if n else 0 for s, n in volumes.items()}


def _protocol(args: argparse.Namespace) -> protocols.Protocol:
  crop = crop_size = None
  if args.crop:
    crop, crop_size = 'centre', _pair(args.crop, 'x', '--crop')
  elif args.margin:
    crop, crop_size = 'margin', _pair(args.margin, ',', '--margin')
  elif args.no_crop:
    crop, crop_size = 'none', (0, 0)
  return protocols.make_protocol(args.dataset, args.protocol, select=args.select,
                                 label_threshold=args.label_threshold, crop=crop,
                                 crop_size=crop_size, pad=args.pad, axis=args.axis)


def _names(text: str) -> tuple[str, ...]:
  return tuple(x.strip() for x in text.split(',') if x.strip())


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  start = time.monotonic()
  log = None if args.quiet else sys.stderr
  workers = args.workers if args.workers is not None else min(MAX_DEFAULT_WORKERS,
                                                              os.cpu_count() or 1)
  if workers < 1:
    raise InputError(f'--workers must be >= 1, got {workers}')
  protocol = _protocol(args)
  rule = splits_lib.parse_split(args.split or protocols.default_split(protocol.name))
  if rule.kind == 'slices' and protocol.name != 'msgan':
    raise InputError('--split=slices:SEED (a slice-level split) is for --protocol=msgan; use '
                     'thesis, random:SEED or file:PATH')
  modalities = _names(args.modalities)
  if protocol.name == 'msgan':
    if modalities and modalities != protocols.MSGAN_MODALITIES:
      raise InputError(f'--protocol=msgan uses the BraTS t1ce channel only, got '
                       f'--modalities={args.modalities}')
    modalities = protocols.MSGAN_MODALITIES
  options = readers.ReaderOptions(
      modalities=modalities, labels=not args.no_labels,
      labels_dir=args.labels_dir,
      label_suffixes=_names(args.label_suffixes) or readers.ReaderOptions().label_suffixes,
      subject_from=args.subject_from)
  if protocol.select in ('label', 'lesion') and not options.labels:
    raise InputError(f'protocol {protocol.name} selects {args.dataset} slices by their labels; '
                     'with --no_labels pass --select=nonempty or --select=all')

  src = readers.check_src(args.src)
  out = os.path.abspath(args.out)
  if out == src or out.startswith(src + os.sep):
    raise InputError(f'{args.out}: --out must not be inside --src')
  found = readers.reader(args.dataset).discover(src, options)
  ctx = protocols.Context(dataset=args.dataset, protocol=protocol, options=options,
                          modalities=tuple(found.modalities), src=src)
  split_slices = None
  if rule.kind == 'slices':
    used = list(found.volumes)
  else:
    split = splits_lib.make_splits(args.dataset, found.layout, found.volumes, rule)
    members = {s: set(v) for s, v in split.subjects.items()}
    split_volumes = {s: [v for v in found.volumes if v.subject in members[s]]
                     for s in manifest_lib.SPLITS}
    used = [v for v in found.volumes if any(v.subject in members[s] for s in members)]
  divisor = None
  if protocol.needs_scan or rule.kind == 'slices':
    scans = _first_pass(used, ctx, workers, args.skip_bad, log)
    good = [x for x in scans if x.error is None]
    if protocol.needs_scan:
      divisor = _divisor(good, src, found.modalities[0])
      ctx = dataclasses.replace(ctx, divisor=divisor)
    if rule.kind == 'slices':
      split, split_volumes, split_slices = _slice_split(rule, found.volumes, scans)
  counts = _shard_counts(args.shards, {s: len(v) for s, v in split_volumes.items()})
  plans = writer.plan_shards(split_volumes, counts, split_slices)

  settings = {
      'data_prep_format': FORMAT_VERSION,
      'layout': found.layout,
      'modalities': found.modalities,
      'labels': options.labels,
      **protocol.settings(),
      'split': split.info,
      'shards': counts,
      'num_volumes': {s: len(v) for s, v in split_volumes.items()},
      'plan_sha256': writer.plan_digest(plans),
      'volume_info_suffix': writer.VOLUMES_SUFFIX,
  }
  if divisor is not None:
    settings['intensity_divisor'] = divisor
  if args.dataset == 'folder':
    settings['folder'] = {'labels_dir': options.labels_dir,
                          'label_suffixes': list(options.label_suffixes),
                          'subject_from': options.subject_from}
  fresh = manifest_lib.Manifest(
      dataset=args.dataset, protocol=protocol.name, settings=settings,
      channels=len(found.modalities), modalities=list(found.modalities),
      has_labels=found.has_labels,
      splits={s: manifest_lib.Split(subjects=sorted(split.subjects[s]))
              for s in manifest_lib.SPLITS},
      sources=[src])
  _report_plan(args, found, split, split_volumes, counts, log, divisor)
  if args.dry_run:
    return 0

  m = writer.write(out, fresh, plans, functools.partial(protocols.run_volume, ctx),
                   workers=workers, skip_bad=args.skip_bad, log=log)
  _summary(out, m, split_volumes, time.monotonic() - start)
  if not args.allow_empty_split:
    _check_no_split_emptied(out, m, split_volumes)
  return 0


def _check_no_split_emptied(out: str, m: manifest_lib.Manifest, split_volumes) -> None:
  """InputError when skipped volumes left a split, which had volumes, without any slice; the
  manifest is marked incomplete. An emptied val or test split would let training run to its end
  and fail at the final evaluation; training refuses an empty train split at its start, but a
  train split emptied by bad input is most likely a mistake (wrong files or modality) too."""
  for s in manifest_lib.SPLITS:
    skipped = [x for x in m.skipped if x['shard'].startswith(f'{s}-')]
    if not split_volumes[s] or m.splits[s].num_records or not skipped:
      continue
    if m.complete:
      m.complete = False
      manifest_lib.write_manifest(out, m)
    names = ', '.join(str(x['volume']) for x in skipped[:3])
    more = f' and {len(skipped) - 3} more' if len(skipped) > 3 else ''
    reason = ' '.join(str(skipped[0]['reason']).split())
    raise InputError(f'--skip_bad left the {s} split without slices: its volume(s) {names}{more} '
                     f'had bad input ({reason}); fix or remove them, or pass --allow_empty_split')


def _first_pass(used, ctx, workers: int, skip_bad: bool, log) -> list[protocols.VolumeScan]:
  """`protocols.scan_volume` of every used volume, in order (InputError on bad input unless
  skip_bad: then the scan carries the error and the writer skips the volume later)."""
  if log is not None:
    print(f'data_prep: first pass over {len(used)} volume(s): slice selection and the dataset '
          'maximum', file=log)
  progress = writer.Progress(len(used), log, what='first pass')
  scans = []
  results = writer.map_ordered(used, functools.partial(protocols.scan_volume, ctx),
                               max(1, min(workers, len(used))))
  try:
    for scan in results:
      if scan.error is not None and not skip_bad:
        raise InputError(scan.error)
      scans.append(scan)
      progress.update(len(scan.selected), 'done' if len(scans) == len(used) else '')
  finally:
    results.close()
  return scans


def _divisor(scans: Sequence[protocols.VolumeScan], src: str, channel: str) -> float:
  """The dataset's maximum of channel 0 over the selected slices (InputError if unusable)."""
  maxima = [x.maximum for x in scans if x.maximum is not None]
  if not maxima:
    raise InputError(f'{src}: no volume has a selected slice (protocol msgan keeps the slices '
                     'with a tumour label > 0); nothing to build')
  divisor = float(max(maxima))
  if not divisor > 0:
    raise InputError(f'{src}: the largest {channel} value of the selected slices is {divisor:g}; '
                     'cannot divide the intensities by it')
  return divisor


def _slice_split(rule, volumes, scans):
  """(SplitResult, split_volumes, split_slices) of a slice-level split. Volumes that failed the
  first pass (--skip_bad) go to the train plan without slices, so the writer lists them as
  skipped."""
  selected = [(x.subject, x.volume, x.selected) for x in scans if x.error is None]
  bad = {x.volume for x in scans if x.error is not None}
  assignment, info = splits_lib.slice_split(rule, selected)
  split_volumes, split_slices, subjects = {}, {}, {}
  for s in manifest_lib.SPLITS:
    vols = [v for v in volumes if v.volume in assignment[s] or (s == 'train' and v.volume in bad)]
    split_volumes[s] = vols
    split_slices[s] = [tuple(assignment[s].get(v.volume, ())) for v in vols]
    subjects[s] = sorted({v.subject for v in vols})
  return splits_lib.SplitResult(subjects, info), split_volumes, split_slices


def _report_plan(args, found, split, split_volumes, counts, log, divisor=None) -> None:
  if log is None and not args.dry_run:
    return
  stream = log or sys.stdout
  info = split.info
  print(f'data_prep: {args.dataset} ({found.layout}), protocol {args.protocol}, '
        f'{len(found.volumes)} volumes found in {args.src}', file=stream)
  if 'fallback' in info:
    print(f'data_prep: split: {info["reason"]}; using {info["fallback"]}', file=stream)
  if info.get('missing'):
    print(f'data_prep: split: {len(info["missing"])} listed subject(s) not found, e.g. '
          f'{", ".join(info["missing"][:3])}', file=stream)
  if divisor is not None:
    print(f'data_prep: intensity divisor (the dataset maximum of {found.modalities[0]} over the '
          f'selected slices) {divisor:g}', file=stream)
  n_slices = info.get('slices', {})
  for s in manifest_lib.SPLITS:
    extra = f' {n_slices[s]:6d} slices' if s in n_slices else ''
    print(f'data_prep:   {s:5s} {len(split.subjects[s]):4d} subjects {len(split_volumes[s]):5d} '
          f'volumes{extra} -> {counts[s]} shard(s)', file=stream)


def _summary(out: str, m: manifest_lib.Manifest, split_volumes, seconds: float) -> None:
  total = sum(sp.num_records for sp in m.splits.values())
  print(f'data_prep: done in {format_duration(seconds)}: {total} slices '
        f'({total / max(seconds, 1e-9):.1f} slices/s overall) in {out}', file=sys.stderr)
  for s in manifest_lib.SPLITS:
    sp = m.splits[s]
    print(f'data_prep:   {s:5s} {len(sp.subjects):4d} subjects {len(split_volumes[s]):5d} '
          f'volumes {sp.num_records:7d} slices {len(sp.shards):4d} shard(s)', file=sys.stderr)
  if m.skipped:
    print(f'data_prep:   skipped {len(m.skipped)} volume(s) with bad input (see manifest.json '
          '"skipped")', file=sys.stderr)
  shape = 'x'.join(str(x) for x in m.slice_shape) if m.slice_shape else 'varies'
  print(f'data_prep:   slice shape {shape}, modalities {",".join(m.modalities)}, labels '
        f'{"yes" if m.has_labels else "no"}; manifest {os.path.join(out, manifest_lib.MANIFEST)}',
        file=sys.stderr)


if __name__ == '__main__':
  cli_main(main)
