"""Gather chapter-3 training runs into the dissertation's Tables 3.3 / 3.5 and Figs 3.13 / 3.14.

  # Table 3.3, the lesion-focused ablation (§3.4.2): SRResNet / SRGAN / LFSR against B+NLD
  python -m experiments.sweep --config=configs/lfsr.py --workdir=runs/grid/lfsr --run
  python -m experiments.report --runs=runs/grid/lfsr --table=3.3 --out=table_3_3.md \\
      --plots=figs/table_3_3
  # Table 3.5, the GAN variations (§3.4.3), at x4
  python -m experiments.sweep --config=configs/msgan.py --workdir=runs/grid/msgan --run
  python -m experiments.report --runs=runs/grid/msgan --table=3.5 [--region=slice]

`--runs` takes comma-separated directories, each searched recursively for run directories: a
directory holding both `config.json` (the resolved config, written by `medsr_jax.main`) and
`results.json` (per-slice scores, written by `medsr_jax.trainers.lesion_report`). From a run it
reads `model.scale`, `data.kspace_sigma` (the noise of Table 3.3, 0 when absent) and
`eval.method_label`, and from results.json the rows {row label: {'roi': {...}, 'slice': {...}}},
each region with per-slice 'psnr' / 'ssim' lists and their 'psnr_mean', 'psnr_std', 'ssim_mean',
'ssim_std' (population std, as `evaluate.Scores.summary`). The model's row is the one labelled by
`eval.method_label`; when that label is empty or absent from results.json, the last row that is
neither an interpolation baseline nor a '(warm-up)' generator. Warm-up rows are not reported.
A run whose results.json has no chapter-3 rows (no 'roi' scores, e.g. a chapter-4/5 run) is
skipped with a `note:` line on stderr.

Each table is a small declarative `TableSpec`: the thesis' row order, its column order (one
column group, PSNR and SSIM, per (scale, sigma) setting, the thesis' settings first and any
other setting after, sorted), the baseline rows taken from the runs' results (one run per
setting) and the number of decimals. A run maps to the cell (its method label, its setting);
labels outside the thesis order follow in first-seen order. Tables 4.x / 5.x can be added the
same way later, as new entries of `TABLES`.

  Table 3.3 (thesis Table 3.3): columns x2, x2 (sigma=20), x4, x4 (sigma=40); rows B+NLD (the
      'bilinear+nlm' row of the runs of that setting), SRResNet, SRGAN, LFSR, other labels, and,
      as extra context not in the thesis table, bilinear interpolation without denoising.
  Table 3.5 (thesis Table 3.5, PSNR / SSIM part): column x4; rows GAN + pre-train, WGAN +
      pre-train, WGAN, WGAN-GP, WGAN-GP + L2(x2), MS-GAN, other labels. The MOS columns of the
      thesis table come from the blinded rating kit, `python -m experiments.mos score`, which
      prints its own markdown table (it writes no JSON), so they are not merged here.

Every cell is 'mean (std)' over the test slices of the chosen `--region` (roi: the lesion ROIs
that the thesis tables report, default; slice: whole slices): PSNR with 2 decimals, SSIM with 3
(Table 3.3) or 4 (Table 3.5) as the thesis prints them; '-' marks a missing cell. The baseline
rows are identical across the runs of one setting (every run scores the same test inputs): they
are taken from the first run of the setting (path order), and a `warning:` line is printed when
another run of that setting disagrees by more than `BASELINE_TOLERANCE`. Two runs with the same
method label and setting are an error (narrow `--runs`). Below the table a list gives the run
directory of each cell.

`--plots=DIR` writes Figs 3.13 / 3.14: one PNG per setting, `table<N>_<region>_x<scale>[_sigma
<sigma>].png`, with slice-wise PSNR and SSIM box plots of every row of the table
(`medsr_jax.logging.plots.box_plots`). `--out=FILE.md` also writes the printed table (atomically:
a temporary file in the same folder, then a rename). Bad input (a missing --runs directory, an
unknown --table or --region, no chapter-3 runs, a malformed JSON file) ends with one
`error: <message>` line on stderr and exit code 2.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_report.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import sys
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from medsr_jax.errors import InputError, cli_main
from medsr_jax.io import text_files
from medsr_jax.logging import plots

REGIONS = ('roi', 'slice')
METRICS = (('psnr', 'PSNR'), ('ssim', 'SSIM'))
BASELINE_ROWS = ('bicubic', 'bilinear', 'bilinear+nlm')   # lesion_report's interpolation rows
WARMUP_SUFFIX = ' (warm-up)'
NOT_ROWS = ('ids', 'roi_boxes')                            # results.json keys that are not rows
BASELINE_TOLERANCE = 1e-6
RUN_FILES = ('config.json', 'results.json')

Setting = tuple  # (scale, sigma) as floats


@dataclasses.dataclass(frozen=True)
class Run:
  """One chapter-3 run: its directory, model row label, setting and results.json rows."""
  directory: pathlib.Path
  label: str
  scale: float
  sigma: float
  results: Mapping[str, Any] = dataclasses.field(repr=False)

  @property
  def setting(self) -> Setting:
    return (self.scale, self.sigma)


@dataclasses.dataclass(frozen=True)
class TableSpec:
  """How a table is laid out and filled (module docstring).

  name: '3.3'; caption: the thesis' caption in short; settings: the thesis' column order
  ((scale, sigma), ...); methods: the thesis' row order of model labels; baselines_first /
  baselines_last: (shown label, results.json row) rows taken from one run per setting, above /
  below the methods; digits: decimals per metric.
  """
  name: str
  caption: str
  settings: tuple
  methods: tuple
  baselines_first: tuple = ()
  baselines_last: tuple = ()
  digits: Mapping[str, int] = dataclasses.field(default_factory=lambda: {'psnr': 2, 'ssim': 3})


TABLES: dict[str, TableSpec] = {
    '3.3': TableSpec(
        name='3.3',
        caption='ablation of the lesion-focused training (thesis §3.4.2, Table 3.3)',
        settings=((2.0, 0.0), (2.0, 20.0), (4.0, 0.0), (4.0, 40.0)),
        methods=('SRResNet', 'SRGAN', 'LFSR'),
        baselines_first=(('B+NLD', 'bilinear+nlm'),),
        baselines_last=(('bilinear', 'bilinear'),),
        digits={'psnr': 2, 'ssim': 3}),
    '3.5': TableSpec(
        name='3.5',
        caption='GAN variations (thesis §3.4.3, Table 3.5; MOS: experiments.mos score)',
        settings=((4.0, 0.0),),
        methods=('GAN + pre-train', 'WGAN + pre-train', 'WGAN', 'WGAN-GP', 'WGAN-GP + L2(x2)',
                 'MS-GAN'),
        digits={'psnr': 2, 'ssim': 4}),
}


# ------------------------------------------------------------------------------------------------
# finding and reading runs


def _read_json(path: pathlib.Path) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise InputError(f'{path}: cannot read JSON ({" ".join(str(e).split())})') from e


def _rows(results: Mapping[str, Any]) -> dict[str, Any]:
  """The method rows of a results.json: labels whose value is a dict of regions."""
  return {label: value for label, value in results.items()
          if label not in NOT_ROWS and isinstance(value, dict)}


def _is_chapter3(rows: Mapping[str, Any]) -> bool:
  return any(isinstance(value.get('roi'), dict) for value in rows.values())


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
  node: Any = config
  for key in dotted.split('.'):
    if not isinstance(node, dict) or key not in node:
      return default
    node = node[key]
  return node


def _model_label(config: Mapping[str, Any], rows: Mapping[str, Any]) -> Optional[str]:
  label = _get(config, 'eval.method_label') or ''
  if label and label in rows:
    return label
  models = [r for r in rows if r not in BASELINE_ROWS and not r.endswith(WARMUP_SUFFIX)]
  return models[-1] if models else None


def _number(value: Any, where: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise InputError(f'{where} is {value!r}, not a finite number')
  return float(value)


def read_run(directory: Any) -> Optional[Run]:
  """The `Run` of one run directory, or None (with a note on stderr) when it has no chapter-3
  results."""
  directory = pathlib.Path(directory)
  results = _read_json(directory / 'results.json')
  if not isinstance(results, dict):
    raise InputError(f'{directory / "results.json"}: not a JSON object')
  rows = _rows(results)
  if not _is_chapter3(rows):
    _note(f'{directory}: results.json has no chapter-3 (ROI) scores; skipped')
    return None
  config = _read_json(directory / 'config.json')
  if isinstance(config, str):   # a config stored as ml_collections' JSON text inside JSON
    try:
      config = json.loads(config)
    except ValueError as e:
      raise InputError(f'{directory / "config.json"}: cannot read JSON ({e})') from e
  if not isinstance(config, dict):
    raise InputError(f'{directory / "config.json"}: not a JSON object')
  label = _model_label(config, rows)
  if label is None:
    _note(f'{directory}: results.json has no model row; skipped')
    return None
  if _get(config, 'model.scale') is None:
    raise InputError(f'{directory / "config.json"}: no model.scale')
  scale = _number(_get(config, 'model.scale'), f'{directory / "config.json"}: model.scale')
  sigma = _number(_get(config, 'data.kspace_sigma', 0.0) or 0.0,
                  f'{directory / "config.json"}: data.kspace_sigma')
  return Run(directory=directory, label=label, scale=scale, sigma=sigma, results=rows)


def find_runs(paths: Iterable[Any]) -> list[Run]:
  """Every chapter-3 run under `paths` (each searched recursively), in path order.

  A run directory holds config.json and results.json; runs without chapter-3 results are
  skipped with a note on stderr. Raises InputError for a path that is not a directory.
  """
  found: dict[pathlib.Path, None] = {}
  for path in paths:
    root = pathlib.Path(path)
    if not root.is_dir():
      raise InputError(f'--runs: {path} is not a directory')
    for folder, subdirs, files in os.walk(root):
      subdirs.sort()
      if all(name in files for name in RUN_FILES):
        found.setdefault(pathlib.Path(folder), None)
  runs = []
  seen = set()
  for directory in sorted(found, key=lambda p: p.parts):
    key = directory.resolve()
    if key in seen:
      continue
    seen.add(key)
    run = read_run(directory)
    if run is not None:
      runs.append(run)
  return runs


def _note(message: str) -> None:
  print(f'note: {message}', file=sys.stderr)


def _warn(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# building a table


@dataclasses.dataclass
class Grid:
  """A table's resolved layout: row labels, settings, and {(row, setting): (entry, run)}."""
  spec: TableSpec
  region: str
  rows: list
  settings: list
  cells: dict


def _check_region(region: str) -> None:
  if region not in REGIONS:
    raise InputError(f'--region must be one of {", ".join(REGIONS)}, got {region!r}')


def _values(entry: Mapping[str, Any], metric: str) -> np.ndarray:
  return np.asarray(entry.get(metric, []), dtype=np.float64).ravel()


def _agree(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
  for metric, _ in METRICS:
    x, y = _values(a, metric), _values(b, metric)
    if x.shape != y.shape:
      return False
    same = (x == y) | (np.abs(x - y) <= BASELINE_TOLERANCE) | (np.isnan(x) & np.isnan(y))
    if not same.all():
      return False
  return True


def setting_name(setting: Setting) -> str:
  """'x2', 'x2 (sigma=20)'."""
  scale, sigma = setting
  return f'x{scale:g}' + (f' (sigma={sigma:g})' if sigma else '')


def _setting_slug(setting: Setting) -> str:
  scale, sigma = setting
  return f'x{scale:g}' + (f'_sigma{sigma:g}' if sigma else '')


def build(spec: TableSpec, runs: Sequence[Run], region: str = 'roi') -> Grid:
  """Places every run (and the baseline rows) into the table's cells (module docstring)."""
  _check_region(region)
  present = {run.setting for run in runs}
  settings = ([s for s in spec.settings if s in present] +
              sorted(s for s in present if s not in spec.settings))
  labels_seen: list[str] = []
  for run in runs:
    if run.label not in labels_seen:
      labels_seen.append(run.label)
  baseline_labels = [shown for shown, _ in spec.baselines_first + spec.baselines_last]
  methods = ([m for m in spec.methods if m in labels_seen] +
             [m for m in labels_seen if m not in spec.methods and m not in baseline_labels])
  cells: dict = {}
  for run in runs:
    if run.label not in methods:
      continue
    key = (run.label, run.setting)
    if key in cells:
      raise InputError(f'two runs of {run.label} at {setting_name(run.setting)}: '
                       f'{cells[key][1].directory} and {run.directory} (narrow --runs)')
    entry = run.results.get(run.label, {}).get(region)
    if isinstance(entry, dict):
      cells[key] = (entry, run)
  baselines = spec.baselines_first + spec.baselines_last
  for setting in settings:
    for shown, row in baselines:
      first = None
      for run in runs:
        if run.setting != setting:
          continue
        entry = run.results.get(row, {}).get(region)
        if not isinstance(entry, dict):
          continue
        if first is None:
          first = (entry, run)
          cells[(shown, setting)] = first
        elif not _agree(first[0], entry):
          _warn(f'{shown} ({row}) at {setting_name(setting)}, {region}: {run.directory} '
                f'differs from {first[1].directory} by more than {BASELINE_TOLERANCE:g}; '
                f'the table shows {first[1].directory}')
  rows = ([shown for shown, _ in spec.baselines_first] + methods +
          [shown for shown, _ in spec.baselines_last])
  return Grid(spec=spec, region=region, rows=rows, settings=settings, cells=cells)


def _mean_std(entry: Mapping[str, Any], metric: str) -> Optional[tuple[float, float]]:
  mean, std = entry.get(f'{metric}_mean'), entry.get(f'{metric}_std')
  if isinstance(mean, (int, float)) and isinstance(std, (int, float)):
    return float(mean), float(std)
  values = _values(entry, metric)
  if values.size == 0:
    return None
  return float(values.mean()), float(values.std())   # population std, as the trainers write it


def cell_text(entry: Optional[Mapping[str, Any]], metric: str, digits: int) -> str:
  """'mean (std)' of one metric of a results.json region entry; '-' when missing."""
  if entry is None:
    return '-'
  pair = _mean_std(entry, metric)
  if pair is None:
    return '-'
  return f'{pair[0]:.{digits}f} ({pair[1]:.{digits}f})'


def _escape(text: str) -> str:
  return text.replace('|', '\\|')


def render(grid: Grid) -> str:
  """The markdown caption, table and source list of a built table (ends with a newline)."""
  spec = grid.spec
  header = ['Method'] + [f'{setting_name(s)} {name}' for s in grid.settings for _, name in METRICS]
  lines = [f'Table {spec.name}: {spec.caption}; {grid.region} scores, mean (std) over the test '
           'slices.', '',
           '| ' + ' | '.join(_escape(h) for h in header) + ' |',
           '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|']
  for row in grid.rows:
    cells = [_escape(row)]
    for setting in grid.settings:
      found = grid.cells.get((row, setting))
      for metric, _ in METRICS:
        cells.append(cell_text(found[0] if found else None, metric, spec.digits[metric]))
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', 'Runs:']
  for row in grid.rows:
    for setting in grid.settings:
      found = grid.cells.get((row, setting))
      if found:
        entry, run = found
        lines.append(f'- {row}, {setting_name(setting)}: {run.directory} '
                     f'({len(_values(entry, "psnr"))} slices)')
  return '\n'.join(lines) + '\n'


def make_table(table: str, runs: Sequence[Run], region: str = 'roi') -> str:
  """The markdown of Table `table` ('3.3' or '3.5') over `runs`."""
  return render(build(_spec(table), runs, region))


def table_3_3(runs: Sequence[Run], region: str = 'roi') -> str:
  """Table 3.3, the lesion-focused ablation (module docstring)."""
  return make_table('3.3', runs, region)


def table_3_5(runs: Sequence[Run], region: str = 'roi') -> str:
  """Table 3.5, the GAN variations (PSNR / SSIM; module docstring)."""
  return make_table('3.5', runs, region)


def _spec(table: str) -> TableSpec:
  if table not in TABLES:
    raise InputError(f'--table must be one of {", ".join(TABLES)}, got {table!r}')
  return TABLES[table]


def write_plots(table: str, runs: Sequence[Run], out_dir: Any, region: str = 'roi'
                ) -> list[pathlib.Path]:
  """Figs 3.13 / 3.14: one box-plot PNG per setting of the table, every row with scores."""
  grid = build(_spec(table), runs, region)
  out_dir = pathlib.Path(out_dir)
  written = []
  for setting in grid.settings:
    scores = {}
    for row in grid.rows:
      found = grid.cells.get((row, setting))
      if found:
        scores[row] = {metric: _values(found[0], metric) for metric, _ in METRICS}
    if not scores:
      continue
    path = out_dir / f'table{grid.spec.name}_{region}_{_setting_slug(setting)}.png'
    plots.box_plots(scores, path, title=f'Table {grid.spec.name}, {setting_name(setting)}, '
                    f'{region}')
    written.append(path)
  return written


# ------------------------------------------------------------------------------------------------
# command line


def _write_text(path: str, text: str) -> None:
  text_files.write_text_atomic(path, text, what='--out')


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m experiments.report',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--runs', required=True,
                      help='comma-separated directories, searched recursively for runs')
  parser.add_argument('--table', required=True, help=f'one of {", ".join(TABLES)}')
  parser.add_argument('--region', default='roi', help='roi (default, as the thesis) or slice')
  parser.add_argument('--out', help='also write the markdown to this file')
  parser.add_argument('--plots', help='write one box-plot PNG per setting into this folder')
  return parser


def _run(argv) -> int:
  args = _parser().parse_args(argv)
  spec = _spec(args.table)
  _check_region(args.region)
  paths = [p.strip() for p in args.runs.split(',') if p.strip()]
  if not paths:
    raise InputError('--runs: no directories given')
  runs = find_runs(paths)
  if not runs:
    raise InputError(f'--runs: no chapter-3 runs (config.json + results.json with ROI scores) '
                     f'under {", ".join(paths)}')
  text = render(build(spec, runs, args.region))
  if args.out:
    _write_text(args.out, text)
  if args.plots:
    for path in write_plots(spec.name, runs, args.plots, args.region):
      print(f'wrote {path}', file=sys.stderr)
  sys.stdout.write(text)
  return 0


def main(argv=None) -> int:
  return cli_main(lambda: _run(argv))


if __name__ == '__main__':
  sys.exit(main())
