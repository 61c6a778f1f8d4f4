"""Blinded mean-opinion-score (MOS) kit of dissertation chapter 3 (§3.3.2, Tables 3.1 and 3.5).

An MR physicist scores shuffled images -- the ground truth and every method's SR image of N random
test samples -- without knowing which is which, on the Likert scale 0 (non-diagnostic), 1 (poor),
2 (fair), 3 (good), 4 (excellent), with remarks S (over-Smooth), A (motion and other Artefacts),
U (Unrealistic textures) and N (too Noisy / low SNR). Each method's MOS is the mean (std) of its
scores, and a two-sided Wilcoxon rank-sum test compares its scores with the ground truth's.

  # 1. the organiser makes the kit (100 samples as in Table 3.5; refuses a non-empty --out)
  python -m experiments.mos export --runs=runs/srresnet,runs/srgan,runs/msgan --out=mos_kit \
      [--samples=100] [--seed=0]
  # 2. the rater gets mos_kit/images/ and mos_kit/sheet.csv only, and fills in score and remarks
  # 3. the organiser un-blinds the filled sheet with the key
  python -m experiments.mos score --sheet=filled.csv --key=mos_kit/key/key.csv [--out=mos.md]

Run predictions file, `RUN/predictions/test.npz` (written by each chapter-3 trainer through
`medsr_jax.io.predictions.write_predictions`, re-exported here; read with `read_predictions`), a `np.savez_compressed` archive that loads
with `allow_pickle=False`:
  ids     (N,) unicode str     test sample ids, unique, e.g. 'brats_0042/s077'
  sr      (N, H, W, C) float32 the method's super-resolved test images, [0, 1]
  hr      (N, H, W, C) float32 the ground-truth HR images, [0, 1]
  method  () unicode str       the method's display name, e.g. 'MS-GAN' (not 'ground truth')
`write_predictions` also takes (N, H, W) images and adds C = 1.

Export: the N sample ids are drawn at random (numpy `default_rng(seed)`) among the ids present in
every run; the runs must agree on the ground truth of those samples (max abs difference at most
`GT_TOLERANCE`). Every image -- the ground truth once per sample plus each run's SR image -- is
written as a single-channel uint8 PNG (`panels.to_uint8`: clipped to [0, 1], x255, rounded); of a
multi-channel image only the first channel is shown. Image ids are 6 random hex characters (same
seeded generator, unique, carrying no information), and the images are listed in a random order.
The kit directory holds:
  images/<image_id>.png   for the rater
  sheet.csv               for the rater: image_id,score,remarks (score, remarks empty), shuffled
  key/key.csv             for the organiser only: image_id,sample_id,method (ground truth's method
                          is 'ground truth'), sorted by sample then in --runs order
  key/export.json         runs, methods, seed and sample ids of the export
  README.txt              what to hand to the rater
It is built under a temporary name and renamed at the end, so a failed export leaves nothing.

Score: a score is an integer 0-4 (an integer-valued number such as '3.0' is accepted); remarks are
any combination of the letters S, A, U, N, case-insensitive, optionally separated by spaces, commas
or semicolons, or empty (a repeated letter counts once). Every image of the key must be scored
exactly once. The table has one row per method in key order (the --runs order), ground truth
last: n, MOS as mean (std) with the sample standard deviation (ddof=1, '-' for a single score),
the count of each Likert level, the count of each remark, and the rank-sum p-value of the method's
scores against the ground truth's (`scipy.stats.ranksums`, two-sided; '-' for the ground truth).

Test: .venv/bin/python -m pytest tests/test_mos.py
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import tempfile
from typing import Any, Sequence

import numpy as np
from scipy import stats

from medsr_jax.errors import InputError, cli_main
from medsr_jax.io import images as image_io
from medsr_jax.io import predictions as predictions_io
from medsr_jax.io import text_files
from medsr_jax.io.predictions import read_predictions, write_predictions  # noqa: F401 (public)
from medsr_jax.logging import panels

PREDICTIONS, GROUND_TRUTH = predictions_io.PREDICTIONS, predictions_io.GROUND_TRUTH
LEVELS = (0, 1, 2, 3, 4)
LEVEL_NAMES = ('non-diagnostic', 'poor', 'fair', 'good', 'excellent')
REMARKS = ('S', 'A', 'U', 'N')
REMARK_SEPARATORS = ' \t,;'
GT_TOLERANCE = 1e-4  # runs' ground truths may differ by float noise, not by a grey level
DEFAULT_SAMPLES = 100  # Table 3.5
ID_HEX_DIGITS = 6
SHEET_COLUMNS = ('image_id', 'score', 'remarks')
KEY_COLUMNS = ('image_id', 'sample_id', 'method')

README_TEXT = """\
Blinded MOS kit (medsr_jax experiments.mos, dissertation chapter 3).

Give the rater ONLY the folder images/ and the file sheet.csv. Keep key/ to yourself: it says
which method made each image.

The rater scores every image in images/ on sheet.csv (one row per image, in the order listed):
  score    0 (non-diagnostic), 1 (poor), 2 (fair), 3 (good), 4 (excellent)
  remarks  any of the letters S (over-smooth), A (motion and other artefacts),
           U (unrealistic textures), N (too noisy / low SNR), e.g. SA; empty for none

With the filled sheet back, un-blind and tabulate:
  python -m experiments.mos score --sheet=FILLED.csv --key=key/key.csv --out=mos.md
"""



# ------------------------------------------------------------------------------------------------
# export


def _random_image_ids(rng: np.random.Generator, count: int) -> list[str]:
  seen: set[str] = set()
  out = []
  while len(out) < count:
    image_id = f'{int(rng.integers(0, 16 ** ID_HEX_DIGITS)):0{ID_HEX_DIGITS}x}'
    if image_id not in seen:
      seen.add(image_id)
      out.append(image_id)
  return out


def _png_image(image: np.ndarray) -> np.ndarray:
  """The uint8 single-channel picture shown to the rater: first channel, clipped, x255, rounded."""
  return panels.to_uint8(np.asarray(image)[..., 0])


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def _check_out_dir(out_dir: str) -> None:
  if os.path.exists(out_dir):
    if not os.path.isdir(out_dir):
      raise InputError(f'{out_dir}: exists and is not a directory')
    if os.listdir(out_dir):
      raise InputError(f'{out_dir}: directory is not empty (will not overwrite a MOS kit)')


def export_kit(run_dirs: Sequence[Any], out_dir: Any, *, samples: int = DEFAULT_SAMPLES,
               seed: int = 0) -> dict:
  """Writes the blinded MOS kit of `samples` random test samples of `run_dirs` into `out_dir`.

  Returns a summary: out_dir, methods (in run order), sample_ids (sorted), images (count), seed.
  """
  run_dirs = [os.fspath(r) for r in run_dirs]
  out_dir = os.fspath(out_dir)
  if not run_dirs:
    raise InputError('no runs given')
  if len(set(os.path.abspath(r) for r in run_dirs)) != len(run_dirs):
    raise InputError('the same run is given twice')
  if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
    raise InputError(f'samples must be a positive integer, got {samples!r}')
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise InputError(f'seed must be a non-negative integer, got {seed!r}')
  _check_out_dir(out_dir)

  runs = [predictions_io.PredictionsFile(r) for r in run_dirs]
  by_method: dict[str, str] = {}
  for run in runs:
    if run.method in by_method:
      raise InputError(f'runs {by_method[run.method]} and {run.run_dir} have the same method '
                       f'name {run.method!r}')
    by_method[run.method] = run.run_dir
  common = set(runs[0].ids.tolist())
  for run in runs[1:]:
    common &= set(run.ids.tolist())
  if len(common) < samples:
    raise InputError(f'{samples} samples asked for, but only {len(common)} test ids are in '
                     'every run')

  rng = np.random.default_rng(int(seed))
  chosen = sorted(rng.choice(sorted(common), size=samples, replace=False).tolist())

  # Load one run at a time and keep only the chosen samples.
  gt: dict[str, np.ndarray] = {}
  gt_run = runs[0].run_dir
  sr: dict[str, dict[str, np.ndarray]] = {}
  for run in runs:
    p = run.load()
    rows = [run.index[sid] for sid in chosen]
    sr[run.method] = dict(zip(chosen, p['sr'][rows]))
    for sid, hr in zip(chosen, p['hr'][rows]):
      if sid not in gt:
        gt[sid] = hr
        continue
      ref = gt[sid]
      if ref.shape != hr.shape:
        raise InputError(f'runs {gt_run} and {run.run_dir} have different ground truth for '
                         f'{sid!r} (shapes {ref.shape} and {hr.shape})')
      diff = float(np.max(np.abs(ref - hr)))
      if diff > GT_TOLERANCE:
        raise InputError(f'runs {gt_run} and {run.run_dir} have different ground truth for '
                         f'{sid!r} (max abs difference {diff:.3g})')
    del p

  methods = [run.method for run in runs]
  entries = []  # (sample_id, method, image) in key order
  for sid in chosen:
    entries.append((sid, GROUND_TRUTH, gt[sid]))
    entries.extend((sid, m, sr[m][sid]) for m in methods)
  image_ids = _random_image_ids(rng, len(entries))
  shown = rng.permutation(len(entries))

  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(os.path.abspath(out_dir))}.tmp-')
  try:
    os.makedirs(os.path.join(tmp, 'images'))
    os.makedirs(os.path.join(tmp, 'key'))
    for image_id, (_, _, image) in zip(image_ids, entries):
      panels.save_png(os.path.join(tmp, 'images', f'{image_id}.png'), _png_image(image))
    _write_csv(os.path.join(tmp, 'sheet.csv'), SHEET_COLUMNS,
               [(image_ids[i], '', '') for i in shown])
    _write_csv(os.path.join(tmp, 'key', 'key.csv'), KEY_COLUMNS,
               [(image_id, sid, m) for image_id, (sid, m, _) in zip(image_ids, entries)])
    record = {'runs': run_dirs, 'methods': methods, 'seed': int(seed), 'samples': samples,
              'sample_ids': chosen, 'images': len(entries)}
    with open(os.path.join(tmp, 'key', 'export.json'), 'w', encoding='utf-8') as f:
      json.dump(record, f, indent=2)
      f.write('\n')
    with open(os.path.join(tmp, 'README.txt'), 'w', encoding='utf-8') as f:
      f.write(README_TEXT)
    os.chmod(tmp, 0o777 & ~_umask())
    _check_out_dir(out_dir)  # nothing appeared meanwhile
    if os.path.isdir(out_dir):
      os.rmdir(out_dir)
    os.replace(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return {'out_dir': out_dir, 'methods': methods, 'sample_ids': chosen,
          'images': len(entries), 'seed': int(seed)}


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# ------------------------------------------------------------------------------------------------
# score


def _read_csv(path: str, columns: Sequence[str], what: str) -> tuple[list[tuple[int, dict]], str]:
  """[(row number, {column: stripped text})] of a CSV file with (at least) `columns`."""
  path = os.fspath(path)
  name = os.path.basename(path)
  if not os.path.isfile(path):
    raise InputError(f'{path}: {what} not found')
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      reader = csv.reader(f)
      header = next(reader, None)
      if header is None:
        raise InputError(f'{path}: empty file, expected columns {",".join(columns)}')
      header = [h.strip().lower() for h in header]
      missing = [c for c in columns if c not in header]
      if missing:
        raise InputError(f'{path}: missing column(s) {", ".join(missing)} '
                         f'(expected {",".join(columns)})')
      pos = {c: header.index(c) for c in columns}
      rows = []
      for row in reader:
        if not any(cell.strip() for cell in row):
          continue
        row_no = reader.line_num  # spreadsheet row: the header is row 1
        rows.append((row_no, {c: (row[i].strip() if i < len(row) else '') for c, i in pos.items()}))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise InputError(f'{path}: cannot read ({image_io.one_line(e)})') from e
  return rows, name


def _read_key(key_path: str) -> tuple[dict[str, str], list[str]]:
  rows, name = _read_csv(key_path, KEY_COLUMNS, 'key file')
  method_of: dict[str, str] = {}
  order: list[str] = []
  for row_no, row in rows:
    image_id, method = row['image_id'], row['method']
    if not image_id or not method:
      raise InputError(f'{name} row {row_no}: empty image_id or method')
    if image_id in method_of:
      raise InputError(f'{name} row {row_no}: image id {image_id!r} is listed twice')
    method_of[image_id] = method
    if method not in order:
      order.append(method)
  if not method_of:
    raise InputError(f'{key_path}: the key lists no images')
  if GROUND_TRUTH not in order:
    raise InputError(f'{key_path}: the key has no {GROUND_TRUTH!r} images')
  order.remove(GROUND_TRUTH)
  return method_of, order + [GROUND_TRUTH]


def _parse_score(text: str, where: str) -> int:
  if not text:
    raise InputError(f'{where}: missing score')
  try:
    value = float(text)
  except ValueError:
    raise InputError(f'{where}: score {text!r} is not an integer 0-4') from None
  if not value.is_integer() or int(value) not in LEVELS:
    raise InputError(f'{where}: score {text!r} is not an integer 0-4')
  return int(value)


def _parse_remarks(text: str, where: str) -> set[str]:
  letters = set()
  for ch in text.upper():
    if ch in REMARK_SEPARATORS:
      continue
    if ch not in REMARKS:
      raise InputError(f'{where}: unknown remark {ch!r} in {text!r} (use letters of '
                       f'{"".join(REMARKS)})')
    letters.add(ch)
  return letters


def score_sheet(sheet_path: Any, key_path: Any) -> dict:
  """Un-blinds a filled scoring sheet with its key.

  Returns {method: {'scores': int array, 'n', 'mean', 'std' (ddof=1; NaN for one score),
  'levels': {0..4: count}, 'remarks': {'S','A','U','N': count}, 'p_value': two-sided rank-sum
  p-value against the ground truth (None for the ground truth)}}, methods in key order, ground
  truth last.
  """
  method_of, order = _read_key(os.fspath(key_path))
  rows, name = _read_csv(os.fspath(sheet_path), SHEET_COLUMNS, 'sheet')
  scores: dict[str, list[int]] = {m: [] for m in order}
  remarks: dict[str, dict[str, int]] = {m: dict.fromkeys(REMARKS, 0) for m in order}
  seen: dict[str, int] = {}
  for row_no, row in rows:
    image_id = row['image_id']
    where = f'{name} row {row_no} (image {image_id!r})'
    if not image_id:
      raise InputError(f'{name} row {row_no}: empty image_id')
    if image_id not in method_of:
      raise InputError(f'{where}: image id not in the key')
    if image_id in seen:
      raise InputError(f'{where}: image already scored on row {seen[image_id]}')
    seen[image_id] = row_no
    score = _parse_score(row['score'], where)
    letters = _parse_remarks(row['remarks'], where)
    method = method_of[image_id]
    scores[method].append(score)
    for letter in letters:
      remarks[method][letter] += 1
  unscored = [i for i in method_of if i not in seen]
  if unscored:
    raise InputError(f'{name}: {len(unscored)} image(s) of the key are not on the sheet '
                     f'(e.g. {unscored[0]!r})')

  gt_scores = np.asarray(scores[GROUND_TRUTH], dtype=np.int64)
  result = {}
  for method in order:
    s = np.asarray(scores[method], dtype=np.int64)
    result[method] = {
        'scores': s,
        'n': int(s.size),
        'mean': float(np.mean(s)),
        'std': float(np.std(s, ddof=1)) if s.size > 1 else math.nan,
        'levels': {level: int(np.sum(s == level)) for level in LEVELS},
        'remarks': remarks[method],
        'p_value': (None if method == GROUND_TRUTH else
                    float(stats.ranksums(s, gt_scores).pvalue)),
    }
  return result


def _fmt_p(p) -> str:
  if p is None:
    return '-'
  if math.isnan(p):
    return 'nan'
  return f'{p:.2e}' if p < 1e-3 else f'{p:.3f}'


def markdown_table(result: dict) -> str:
  """The Table 3.5 layout of a `score_sheet` result, as a markdown table (ends with a newline)."""
  header = (['Method', 'n', 'MOS mean (std)'] +
            [f'{level} ({name})' for level, name in zip(LEVELS, LEVEL_NAMES)] +
            list(REMARKS) + ['p-value vs GT'])
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1))
           + '|']
  methods = [m for m in result if m != GROUND_TRUTH] + [m for m in result if m == GROUND_TRUTH]
  for method in methods:
    r = result[method]
    std = '-' if math.isnan(r['std']) else f'{r["std"]:.3f}'
    cells = ([method.replace('|', '\\|'), str(r['n']), f'{r["mean"]:.2f} ({std})'] +
             [str(r['levels'][level]) for level in LEVELS] +
             [str(r['remarks'][letter]) for letter in REMARKS] + [_fmt_p(r['p_value'])])
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------------------------------------
# command line


def _write_text(path: str, text: str) -> None:
  text_files.write_text_atomic(path, text)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m experiments.mos',
                                   description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest='command', required=True)
  ex = sub.add_parser('export', help='make the blinded image kit, sheet and key')
  ex.add_argument('--runs', required=True, help='comma-separated run directories')
  ex.add_argument('--out', required=True, help='new (or empty) kit directory')
  ex.add_argument('--samples', type=int, default=DEFAULT_SAMPLES,
                  help=f'random test samples (default {DEFAULT_SAMPLES}, Table 3.5)')
  ex.add_argument('--seed', type=int, default=0, help='seed of the sample, id and order draws')
  sc = sub.add_parser('score', help='un-blind a filled sheet and print the MOS table')
  sc.add_argument('--sheet', required=True, help='the filled sheet.csv')
  sc.add_argument('--key', required=True, help='the kit\'s key/key.csv')
  sc.add_argument('--out', help='also write the markdown table to this file')
  return parser


def _run(argv) -> int:
  args = _parser().parse_args(argv)
  if args.command == 'export':
    runs = [r.strip() for r in args.runs.split(',') if r.strip()]
    summary = export_kit(runs, args.out, samples=args.samples, seed=args.seed)
    print(f'wrote {summary["images"]} images of {len(summary["sample_ids"])} samples '
          f'({", ".join(summary["methods"])} and {GROUND_TRUTH}) to {summary["out_dir"]}; '
          'give the rater only images/ and sheet.csv')
  else:
    table = markdown_table(score_sheet(args.sheet, args.key))
    if args.out:
      _write_text(args.out, table)
    sys.stdout.write(table)
  return 0


def main(argv=None) -> int:
  return cli_main(lambda: _run(argv))


if __name__ == '__main__':
  sys.exit(main())
