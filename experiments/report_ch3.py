"""Chapter 3: Tables 3.3 / 3.5 and Figs 3.13 / 3.14 from lesion-focused runs (for report.py).

A chapter-3 run directory holds `config.json` (the resolved config, written by `medsr_jax.main`)
and `results.json` (per-slice scores, written by `medsr_jax.trainers.lesion_report`). From a run
it reads `model.scale`, `data.kspace_sigma` (the noise of Table 3.3, 0 when absent) and
`eval.method_label`, and from results.json the rows {row label: {'roi': {...}, 'slice': {...}}},
each region with per-slice 'psnr' / 'ssim' lists and their 'psnr_mean', 'psnr_std', 'ssim_mean',
'ssim_std' (population std, as `evaluate.Scores.summary`). The model's row is the one labelled by
`eval.method_label`; when that label is empty or absent from results.json, the last row that is
neither an interpolation baseline nor a '(warm-up)' generator. Warm-up rows are not reported.
A run whose results.json has no chapter-3 rows (no 'roi' scores, e.g. a chapter-4/5 run) is
skipped with a `note:` line on stderr (`quiet=True`: silently).

Each table is a small declarative `TableSpec`: the thesis' row order, its column order (one
column group, PSNR and SSIM, per (scale, sigma) setting, the thesis' settings first and any
other setting after, sorted), the baseline rows taken from the runs' results (one run per
setting) and the number of decimals. A run maps to the cell (its method label, its setting);
labels outside the thesis order follow in first-seen order.

  Table 3.3 (thesis Table 3.3): columns x2, x2 (sigma=20), x4, x4 (sigma=40); rows B+NLD (the
      'bilinear+nlm' row of the runs of that setting), SRResNet, SRGAN, LFSR, other labels, and,
      as extra context not in the thesis table, bilinear interpolation without denoising.
  Table 3.5 (thesis Table 3.5, PSNR / SSIM part): column x4; rows GAN + pre-train, WGAN +
      pre-train, WGAN, WGAN-GP, WGAN-GP + L2(x2), MS-GAN, other labels. The MOS columns of the
      thesis table come from the blinded rating kit, `python -m experiments.mos score`, which
      prints its own markdown table (it writes no JSON), so they are not merged here.

Every cell is 'mean (std)' over the test slices of the chosen region (roi: the lesion ROIs
that the thesis tables report, default; slice: whole slices): PSNR with 2 decimals, SSIM with 3
(Table 3.3) or 4 (Table 3.5) as the thesis prints them; '-' marks a missing cell. For each
setting of the thesis, every metric column is followed by the thesis' number
(experiments/thesis_numbers.json; key '<metric>_<setting>', e.g. 'psnr_x2_sigma20', or the bare
metric for a one-setting table) and the difference ours - thesis; the rows and settings of the
thesis without a run are listed as missing under the table. The baseline
rows are identical across the runs of one setting (every run scores the same test inputs): they
are taken from the first run of the setting (path order), and a `warning:` line is printed when
another run of that setting disagrees by more than `BASELINE_TOLERANCE`. Two runs with the same
method label and setting are an error (narrow `--runs`). Below the table a list gives the run
directory of each cell.

`write_plots` draws Figs 3.13 / 3.14: one PNG per setting, `table<N>_<region>_x<scale>[_sigma
<sigma>].png`, with slice-wise PSNR and SSIM box plots of every row of the table
(`medsr_jax.logging.plots.box_plots`).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_report.py
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from medsr_jax.errors import InputError
from medsr_jax.logging import plots

from experiments import report_runs
from experiments import report_tables

REGIONS = ('roi', 'slice')
METRICS = (('psnr', 'PSNR'), ('ssim', 'SSIM'))
BASELINE_ROWS = ('bicubic', 'bilinear', 'bilinear+nlm')   # lesion_report's interpolation rows
WARMUP_SUFFIX = ' (warm-up)'
NOT_ROWS = ('ids', 'roi_boxes')                            # results.json keys that are not rows
BASELINE_TOLERANCE = 1e-6
RUN_FILES = report_runs.RUN_FILES

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
  return report_runs.read_json(path)


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


def read_run(directory: Any, quiet: bool = False) -> Optional[Run]:
  """The `Run` of one run directory, or None (with a note on stderr unless `quiet`) when it has
  no chapter-3 results."""
  directory = pathlib.Path(directory)
  results = _read_json(directory / 'results.json')
  if not isinstance(results, dict):
    raise InputError(f'{directory / "results.json"}: not a JSON object')
  rows = _rows(results)
  if not _is_chapter3(rows):
    if not quiet:
      _note(f'{directory}: results.json has no chapter-3 (ROI) scores; skipped')
    return None
  config = report_runs.read_object(directory / 'config.json')
  label = _model_label(config, rows)
  if label is None:
    if not quiet:
      _note(f'{directory}: results.json has no model row; skipped')
    return None
  if _get(config, 'model.scale') is None:
    raise InputError(f'{directory / "config.json"}: no model.scale')
  scale = _number(_get(config, 'model.scale'), f'{directory / "config.json"}: model.scale')
  sigma = _number(_get(config, 'data.kspace_sigma', 0.0) or 0.0,
                  f'{directory / "config.json"}: data.kspace_sigma')
  return Run(directory=directory, label=label, scale=scale, sigma=sigma, results=rows)


def find_runs(paths: Iterable[Any], quiet: bool = False) -> list[Run]:
  """Every chapter-3 run under `paths` (each searched recursively), in path order.

  A run directory holds config.json and results.json; runs without chapter-3 results are
  skipped with a note on stderr (unless `quiet`). Raises InputError for a path that is not a
  directory.
  """
  runs = []
  for directory in report_runs.run_directories(paths):
    run = read_run(directory, quiet=quiet)
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


def _thesis_key(spec: TableSpec, setting: Setting, metric: str) -> Optional[str]:
  """The thesis_numbers.json key of a metric at a setting; None for a setting not in the thesis."""
  if setting not in spec.settings:
    return None
  return metric if len(spec.settings) == 1 else f'{metric}_{_setting_slug(setting)}'


def _thesis_cells(thesis, spec: TableSpec, row: str, key: str, found, metric: str,
                  illegible: list) -> list[str]:
  """[thesis number, ours - thesis] of one cell ('' where the thesis has none)."""
  present, value, std = thesis.cell(spec.name, row, key)
  if not present:
    return ['', '']
  if value is None:
    illegible.append(f'{row}, {key}: {thesis.note(spec.name, f"{row}|{key}")}')
    return ['?', '']
  text = report_tables.short_number(value)
  if std is not None:
    text += f' ({report_tables.short_number(std)})'
  pair = _mean_std(found[0], metric) if found else None
  digits = spec.digits[metric]
  return [text, f'{pair[0] - value:+.{digits}f}' if pair else '']


def render(grid: Grid, thesis=None) -> str:
  """The markdown caption, table, source list, missing cells and, beside every cell of a thesis
  setting, the thesis' number and ours - thesis (`thesis`: report_tables.Thesis; default the
  numbers of experiments/thesis_numbers.json). Ends with a newline."""
  spec = grid.spec
  thesis = thesis if thesis is not None else report_tables.load_thesis()
  with_thesis = thesis.table(spec.name) is not None
  header = ['Method']
  for setting in grid.settings:
    for metric, name in METRICS:
      header.append(f'{setting_name(setting)} {name}')
      if with_thesis and _thesis_key(spec, setting, metric):
        header += [f'{setting_name(setting)} {name} thesis', f'{setting_name(setting)} {name} Δ']
  intro = (f'Table {spec.name}: {spec.caption}; {grid.region} scores, mean (std) over the test '
           'slices.')
  if with_thesis:
    intro += ' Beside each metric of a thesis setting: the thesis\' number and Δ = ours - thesis.'
  lines = [intro, '',
           '| ' + ' | '.join(_escape(h) for h in header) + ' |',
           '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|']
  illegible: list[str] = []
  for row in grid.rows:
    cells = [_escape(row)]
    for setting in grid.settings:
      found = grid.cells.get((row, setting))
      for metric, _ in METRICS:
        cells.append(cell_text(found[0] if found else None, metric, spec.digits[metric]))
        key = _thesis_key(spec, setting, metric) if with_thesis else None
        if key:
          cells += _thesis_cells(thesis, spec, row, key, found, metric, illegible)
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', 'Runs:']
  for row in grid.rows:
    for setting in grid.settings:
      found = grid.cells.get((row, setting))
      if found:
        entry, run = found
        lines.append(f'- {row}, {setting_name(setting)}: {run.directory} '
                     f'({len(_values(entry, "psnr"))} slices)')
  missing = [f'{row} at {setting_name(setting)}' for row in
             [shown for shown, _ in spec.baselines_first] + list(spec.methods)
             for setting in spec.settings if (row, setting) not in grid.cells]
  if missing:
    lines += ['', 'Missing (no run; nothing is invented): ' + '; '.join(missing) + '.']
  if with_thesis and (thesis.note(spec.name, '*') or illegible):
    lines += ['', 'Thesis notes:']
    if thesis.note(spec.name, '*'):
      lines.append(f'- {thesis.note(spec.name, "*")}')
    lines += [f'- not legible in the text: {text}' for text in illegible]
  return '\n'.join(lines) + '\n'


def make_table(table: str, runs: Sequence[Run], region: str = 'roi', thesis=None) -> str:
  """The markdown of Table `table` ('3.3' or '3.5') over `runs`."""
  return render(build(_spec(table), runs, region), thesis)


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


