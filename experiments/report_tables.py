"""The dissertation's chapter-4/5 tables as declarative specs, filled from run directories.

A `Table` is one or more `Part`s (Table 5.8 has one per dataset), each a grid of `Row`s x
`Column`s x `Metric`s. A cell (row, column) is filled by the one run whose facts
(experiments/report_runs.py) satisfy the hard `match` of the table, the column and the row
({fact: value}; a tuple is "any of, earlier preferred"; None: the fact is unset); among several
such runs the one that differs least from the thesis' setting (the soft `setting`, same form,
keys the hard match fixes to one value excluded) wins, then the earlier preference, then path
order. The chosen run's differences from the setting ('b=2 (thesis 16)') and any equally good
runs are listed under the table; cells without a run are listed as missing, never invented.
Baseline rows (method 'bicubic', or 'HR' for the Dice reference) take the first run of the
table (and column) that has the scores, as every run of one test set scores the same inputs.

Chapter-4 tables (`over_scales`) average each run's per-scale scores over its scales (the
run's eval/test/results.json from `python -m medsr_jax.evaluate`, else the per-scale results of
the arbitrary-scale trainer) and need them; chapter-5 tables read the fixed-scale results.json.

Beside each of our cells the thesis' number (experiments/thesis_numbers.json, `Thesis`) and the
difference ours - thesis. '-': no score in our run; '?': the thesis cell is not legible (its
note is printed); empty: not applicable (the HR row's PSNR) or not in the thesis.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from typing import Any, Mapping, Optional, Sequence

from medsr_jax.errors import InputError

from experiments import report_runs as rr

THESIS_FILE = pathlib.Path(__file__).with_name('thesis_numbers.json')
ANY = '<any>'   # a row's or column's match value that lifts a table-level fact


# ------------------------------------------------------------------------------------------------
# specs


@dataclasses.dataclass(frozen=True)
class Metric:
  """key: the thesis_numbers.json metric key (a column's key is appended: 'psnr_acdc'); kind:
  psnr, ssim, fid, dice, params, macs or fps; region / channel: the Dice region (None: the
  dataset's whole region, T or WT) / the image channel (per_channel entries); std: show
  'mean (std)'; thesis: the thesis has this column."""
  key: str
  label: str
  kind: str
  digits: int = 2
  region: Optional[str] = None
  channel: Optional[str] = None
  std: bool = True
  thesis: bool = True


@dataclasses.dataclass(frozen=True)
class Row:
  """label: as in thesis_numbers.json (when `thesis`); method: 'model', 'bicubic' or 'HR';
  hint: how to make the run (listed when it is missing)."""
  label: str
  match: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  setting: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  method: str = 'model'
  hint: str = ''
  thesis: bool = True


@dataclasses.dataclass(frozen=True)
class Column:
  key: str = ''
  label: str = ''
  match: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  setting: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  channel: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Part:
  rows: tuple
  metrics: tuple
  columns: tuple = (Column(),)
  title: str = ''


@dataclasses.dataclass(frozen=True)
class Table:
  """name: '4.3' (a thesis table) or 'fig4.8' (a figure's data, thesis=False)."""
  name: str
  caption: str
  parts: tuple
  match: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  setting: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  over_scales: bool = False
  row_header: str = 'Method'
  note: str = ''
  thesis: bool = True

  @property
  def rows(self) -> list:
    return [row for part in self.parts for row in part.rows]


# ------------------------------------------------------------------------------------------------
# the thesis' numbers


class Thesis:
  """experiments/thesis_numbers.json: {table: {caption, metrics, rows, notes}} (its 'about')."""

  def __init__(self, data: Mapping[str, Any], path: str = ''):
    self.path = path
    tables = data.get('tables') if isinstance(data, dict) else None
    if not isinstance(tables, dict):
      raise InputError(f'{path}: no "tables" object')
    for name, table in tables.items():
      problems = _table_problems(table)
      if problems:
        raise InputError(f'{path}: table {name}: {problems}')
    self.tables = tables

  def table(self, name: str) -> Optional[dict]:
    return self.tables.get(name)

  def cell(self, table: str, row: str, key: str) -> tuple[bool, Optional[float], Optional[float]]:
    """(present, value, std): present False when the thesis has no such cell; value None for an
    illegible cell."""
    entry = ((self.tables.get(table) or {}).get('rows') or {}).get(row)
    if not isinstance(entry, dict) or key not in entry:
      return False, None, None
    return True, entry[key], entry.get(f'{key}_std')

  def note(self, table: str, key: str) -> str:
    return str(((self.tables.get(table) or {}).get('notes') or {}).get(key, ''))


def _table_problems(table: Any) -> str:
  if not isinstance(table, dict):
    return 'not an object'
  if not isinstance(table.get('caption'), str):
    return 'no caption'
  metrics, rows, notes = table.get('metrics'), table.get('rows'), table.get('notes', {})
  if not isinstance(metrics, dict) or not isinstance(rows, dict) or not isinstance(notes, dict):
    return 'metrics, rows and notes must be objects'
  for row, cells in rows.items():
    if not isinstance(cells, dict):
      return f'row {row!r} is not an object'
    for key, value in cells.items():
      base = key[:-4] if key.endswith('_std') else key
      if base not in metrics:
        return f'row {row!r}: unknown metric {key!r}'
      if value is None:
        if f'{row}|{key}' not in notes:
          return f'row {row!r}: {key} is null without a note "{row}|{key}"'
      elif isinstance(value, bool) or not isinstance(value, (int, float)) \
          or not math.isfinite(value):
        return f'row {row!r}: {key} is {value!r}, not a number'
  return ''


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Thesis:
  return Thesis(rr.read_json(pathlib.Path(path)), path)


def load_thesis(path: Any = None) -> Thesis:
  """The thesis' numbers (default: experiments/thesis_numbers.json)."""
  return _load(str(path or THESIS_FILE))


# ------------------------------------------------------------------------------------------------
# matching runs to cells


def same(fact: Any, expected: Any) -> bool:
  if expected is None or fact is None:
    return fact is None and expected is None
  numbers = (int, float)
  if isinstance(fact, numbers) and isinstance(expected, numbers) \
      and not isinstance(fact, bool) and not isinstance(expected, bool):
    if math.isinf(fact) or math.isinf(expected):
      return fact == expected
    return math.isclose(float(fact), float(expected), rel_tol=1e-9, abs_tol=1e-12)
  if isinstance(fact, bool) != isinstance(expected, bool):
    return False
  return fact == expected


def rank(fact: Any, expected: Any) -> Optional[int]:
  """0.. (the preference of the matching alternative) or None when `fact` does not match."""
  if expected == ANY:
    return 0
  if isinstance(expected, tuple):
    for i, e in enumerate(expected):
      if same(fact, e):
        return i
    return None
  return 0 if same(fact, expected) else None


def show(value: Any) -> str:
  if isinstance(value, tuple):
    return ' or '.join(show(v) for v in value)
  if isinstance(value, float):
    return 'inf' if math.isinf(value) else f'{value:g}'
  return 'unset' if value is None else str(value)


@dataclasses.dataclass
class Cell:
  record: rr.Record
  deviations: list
  others: list


def choose(records: Sequence[rr.Record], hard: Mapping[str, Any], soft: Mapping[str, Any],
           need=None) -> Optional[Cell]:
  """The run of a cell (module docstring), or None."""
  # a soft fact that the hard match fixes to one value is no difference; one the hard match
  # leaves open (a tuple: 'oasis' or the embedded 'sample') still ranks and flags the runs
  soft = {k: v for k, v in soft.items()
          if v != ANY and (k not in hard or isinstance(hard[k], tuple))}
  ranked = []
  for record in records:
    prefs = [rank(record.facts.get(k), v) for k, v in hard.items()]
    if any(p is None for p in prefs):
      continue
    if need is not None and not need(record):
      continue
    deviations = [f'{k}={show(record.facts.get(k))} (thesis {show(v)})'
                  for k, v in soft.items() if rank(record.facts.get(k), v) is None]
    ranked.append(((len(deviations), sum(prefs)), record.order, record, deviations))
  if not ranked:
    return None
  ranked.sort(key=lambda item: (item[0], item[1]))
  best = ranked[0]
  others = [item[2] for item in ranked[1:] if item[0] == best[0]]
  return Cell(record=best[2], deviations=best[3], others=others)


def _applicable(method: str, metric: Metric) -> bool:
  if method == rr.HR:
    return metric.kind == 'dice'
  if method == 'bicubic':
    return metric.kind in ('psnr', 'ssim', 'fid', 'dice')
  return True


def read(table: Table, record: rr.Record, row: Row, column: Column, metric: Metric
         ) -> Optional[tuple]:
  """(mean, std) of one metric of a cell's run; None when the run has no such score."""
  method, kind = row.method, metric.kind
  if not _applicable(method, metric):
    return None
  if kind in ('psnr', 'ssim', 'fid'):
    return rr.image_value(record, method, kind, channel=metric.channel or column.channel,
                          over_scales=table.over_scales)
  if kind == 'dice':
    return rr.dice_value(record, method, metric.region)
  if kind == 'params':
    return rr.params_value(record)
  if kind in ('macs', 'fps'):
    return rr.complexity_value(record, {'macs': 'macs_g', 'fps': 'fps'}[kind])
  raise ValueError(f'unknown metric kind {kind!r}')


@dataclasses.dataclass
class Built:
  table: Table
  cells: dict      # {(row label, column key): Cell}

  @property
  def filled(self) -> bool:
    return bool(self.cells)


def build(table: Table, records: Sequence[rr.Record]) -> Built:
  """Chooses the run of every cell of `table` among `records`."""
  cells = {}
  for part in table.parts:
    for row in part.rows:
      for column in part.columns:
        hard = {**table.match, **column.match, **row.match}
        soft = {**table.setting, **column.setting, **row.setting}

        def need(record, row=row, column=column, part=part):
          if table.over_scales and not record.scales:
            return False
          if row.method == 'model':
            return True
          return any(read(table, record, row, column, m) is not None for m in part.metrics)

        cell = choose(records, {k: v for k, v in hard.items() if v != ANY}, soft, need)
        if cell is not None:
          cells[(row.label, column.key)] = cell
  return Built(table=table, cells=cells)


# ------------------------------------------------------------------------------------------------
# rendering


def _escape(text: str) -> str:
  return str(text).replace('|', '\\|')


def short_number(value: float) -> str:
  """A thesis number as typed (shortest repr: 0.9 stays '0.9')."""
  if isinstance(value, int):
    return str(value)
  text = repr(float(value))
  return text[:-2] if text.endswith('.0') else text


def ours_text(pair: Optional[tuple], metric: Metric, over_scales: bool) -> str:
  if pair is None:
    return '-'
  mean, std = pair
  text = f'{mean:.{metric.digits}f}'
  if metric.std and std is not None and not over_scales:
    text += f' ({std:.{metric.digits}f})'
  return text


def thesis_key(metric: Metric, column: Column) -> str:
  return f'{metric.key}_{column.key}' if column.key else metric.key


def _header(part: Part, column: Column, metric: Metric) -> str:
  return f'{column.label} {metric.label}'.strip() if len(part.columns) > 1 or column.label \
      else metric.label


def render(built: Built, thesis: Optional[Thesis] = None, *, hints: bool = True,
           heading: bool = True) -> str:
  """Markdown: caption (a '## Table N: ...' heading), one table per part, the runs, the
  missing cells (with how to make them, `hints`) and the thesis' notes."""
  table = built.table
  with_thesis = table.thesis and thesis is not None and thesis.table(table.name) is not None
  kind = 'Table' if table.thesis else 'Figure'
  name = table.name[3:] if table.name.startswith('fig') else table.name
  lines = [f'## {kind} {name}: {table.caption}', ''] if heading else []
  mode = ('Ours: the mean over the scales of each run\'s per-scale test scores'
          if table.over_scales else 'Ours: mean (std) over the test slices')
  if with_thesis:
    mode += '; thesis: the dissertation\'s number; Δ = ours - thesis'
  lines += [mode + '.' + (f' {table.note}' if table.note else ''), '']
  illegible: list[str] = []
  for part in table.parts:
    if part.title:
      lines += [f'**{part.title}**', '']
    header, align = [table.row_header], ['---']
    for column in part.columns:
      for metric in part.metrics:
        label = _header(part, column, metric)
        header.append(label)
        align.append('---:')
        if with_thesis and metric.thesis:
          header += [f'{label} thesis', f'{label} Δ']
          align += ['---:', '---:']
    lines += ['| ' + ' | '.join(_escape(h) for h in header) + ' |', '|' + '|'.join(align) + '|']
    for row in part.rows:
      cells = [_escape(row.label)]
      for column in part.columns:
        cell = built.cells.get((row.label, column.key))
        for metric in part.metrics:
          applicable = _applicable(row.method, metric)
          pair = read(table, cell.record, row, column, metric) if cell and applicable else None
          cells.append(ours_text(pair, metric, table.over_scales) if applicable else '')
          if not (with_thesis and metric.thesis):
            continue
          key = thesis_key(metric, column)
          present, value, std = (thesis.cell(table.name, row.label, key) if row.thesis
                                 else (False, None, None))
          if not present:
            cells += ['', '']
            continue
          if value is None:
            cells += ['?', '']
            illegible.append(f'{row.label}, {key}: {thesis.note(table.name, f"{row.label}|{key}")}')
            continue
          text = short_number(value)
          if std is not None and metric.std:
            text += f' ({short_number(std)})'
          cells.append(text)
          cells.append(f'{pair[0] - value:+.{metric.digits}f}' if pair is not None else '')
      lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
  lines += _sources(built, hints=hints)
  if with_thesis:
    general = thesis.note(table.name, '*')
    if general or illegible:
      lines.append('Thesis notes:')
      if general:
        lines.append(f'- {general}')
      lines += [f'- not legible in the text: {text}' for text in illegible]
      lines.append('')
  return '\n'.join(lines)


def _cell_name(part: Part, row: Row, column: Column) -> str:
  return f'{row.label}, {column.label}' if column.key else row.label


def _sources(built: Built, *, hints: bool) -> list[str]:
  lines, missing = ['Runs:'], []
  for part in built.table.parts:
    for row in part.rows:
      for column in part.columns:
        cell = built.cells.get((row.label, column.key))
        name = _cell_name(part, row, column)
        if cell is None:
          missing.append(name + (f' ({row.hint})' if hints and row.hint else ''))
          continue
        extra = ''
        if cell.deviations:
          extra += '; differs from the thesis setting: ' + ', '.join(cell.deviations)
        if cell.others and row.method == 'model':
          extra += '; also matched: ' + ', '.join(str(r.directory) for r in cell.others)
        lines.append(f'- {name}: {cell.record.directory}{extra}')
  if len(lines) == 1:
    lines.append('- none')
  lines.append('')
  if missing:
    lines.append('Missing (no run matches; nothing is invented): ' + '; '.join(missing) + '.')
    lines.append('')
  return lines
