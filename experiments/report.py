"""Gather training runs into the dissertation's tables and figures, beside the thesis' numbers.

  # one table: Table 4.3 (the width of MIASSR's EDSR-lite) from a sweep
  python -m experiments.sweep --config=configs/miassr.py --workdir=runs/grid/miassr --run
  python -m experiments.report --runs=runs/grid --table=4.3 [--out=table_4_3.md] [--plots=figs]
  # every table and figure that at least one run fills: report.md and the PNGs in one folder
  python -m experiments.report --runs=runs/grid,runs/baselines --all --out=reports/thesis
  # one figure (its data are printed; the PNG goes to --plots)
  python -m experiments.report --runs=runs/grid --figure=4.10 --plots=figs
  # chapter 3 as before: Table 3.3 (LFSR ablation) / 3.5 (GAN variations) and Figs 3.13 / 3.14
  python -m experiments.report --runs=runs/grid/lfsr --table=3.3 --out=table_3_3.md \\
      --plots=figs/table_3_3 [--region=slice]

`--runs` takes comma-separated directories, each searched recursively for run directories (a
directory holding both `config.json` and `results.json`; see experiments/report_runs.py for what
is read from them, and experiments/report_specs.py for which results.json fields each table
needs). Tables:
  3.3, 3.5        chapter 3 (experiments/report_ch3.py): lesion-focused runs, roi / slice scores
  4.1-4.6         chapter 4 (MIASSR): means over each run's test scales
  5.1-5.10        chapter 5 (RDST): x4 test scores and the Dice of the U-Net segmentation
Figures (experiments/report_figures.py): 3.13 / 3.14 (box plots of Table 3.3's settings, with
--plots), 4.4, 4.5, 4.8, 4.9, 4.10, 5.10, 5.11.

Each table is a declarative spec; a cell is the one run whose config facts match it (the least
different from the thesis' setting when several do, the differences listed). Every metric
column is followed by the thesis' number (experiments/thesis_numbers.json, typed in once from
the dissertation; `--thesis=FILE` for another copy) and Δ = ours - thesis. The cells without a
run are listed under the table as missing, never invented.

Outputs: `--table` prints the markdown (and `--out=FILE` writes it; `--plots=DIR` draws the
table's figures: 3.3 / 3.5 box plots, 4.1 -> Figs 4.4 / 4.5, 5.9 -> Fig. 5.11). `--all` needs
`--out=DIR` and writes DIR/report.md (every table and figure with at least one run, then the
list of those without) and DIR/fig<N>.png, and prints report.md. Files are written atomically.
Bad input (a missing --runs directory, an unknown --table / --figure / --region, no run for the
requested table, a malformed JSON file) ends with one `error: <message>` line on stderr and exit
code 2.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_report.py tests/test_report_thesis.py
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, Optional, Sequence

from medsr_jax.errors import InputError, cli_main
from medsr_jax.io import text_files

from experiments import report_figures, report_runs, report_specs, report_tables
# Chapter 3 (re-exported: `from experiments import report; report.table_3_3(...)`).
from experiments.report_ch3 import (  # noqa: F401  pylint: disable=unused-import
    BASELINE_ROWS, BASELINE_TOLERANCE, METRICS, REGIONS, TABLES, Grid, Run, TableSpec, build,
    cell_text, find_runs, make_table, read_run, render, setting_name, table_3_3, table_3_5,
    write_plots)

ALL_TABLES = tuple(TABLES) + tuple(report_specs.TABLES)
FIGURES = tuple(report_figures.FIGURES)


def _check_table(name: str) -> None:
  if name not in ALL_TABLES:
    raise InputError(f'--table must be one of {", ".join(ALL_TABLES)}, got {name!r}')


def _check_figure(name: str) -> None:
  if name not in FIGURES:
    raise InputError(f'--figure must be one of {", ".join(FIGURES)}, got {name!r}')


def _check_region(region: str) -> None:
  if region not in REGIONS:
    raise InputError(f'--region must be one of {", ".join(REGIONS)}, got {region!r}')


def table_markdown(name: str, records: Sequence[report_runs.Record],
                   thesis: Optional[report_tables.Thesis] = None) -> str:
  """The markdown of chapter-4/5 Table `name` over `records` (also when no run fills it)."""
  built = report_tables.build(report_specs.TABLES[name], records)
  return report_tables.render(built, thesis or report_tables.load_thesis())


def _figure_grid(name: str, records, built_tables: dict) -> Optional[report_tables.Built]:
  grid = report_figures.FIGURES[name].grid
  if not grid:
    return None
  if grid not in built_tables:
    spec = report_specs.TABLES.get(grid) or report_specs.FIGURE_GRIDS[grid]
    built_tables[grid] = report_tables.build(spec, records)
  return built_tables[grid]


def figure_section(name: str, records, out_dir: Any, built_tables: dict, *,
                   with_grid: bool = True) -> Optional[str]:
  """Draws Figure `name` into out_dir; its markdown section, or None when no run feeds it."""
  built = _figure_grid(name, records, built_tables)
  path = report_figures.draw(name, records, built, out_dir)
  if path is None:
    return None
  figure = report_figures.FIGURES[name]
  lines = [f'## Figure {name} (ours): {figure.caption}', '',
           f'![Figure {name}]({path.name})', '']
  if built is not None and with_grid and built.table.name.startswith('fig'):
    lines.append(report_tables.render(built, hints=False, heading=False))
  elif built is not None:
    lines += [f'Data: Table {built.table.name} above.', '']
  else:
    lines += [report_figures.hyper_markdown(records), '']
  return '\n'.join(lines)


def _write_text(path: Any, text: str) -> None:
  text_files.write_text_atomic(path, text, what='--out')


def _paths(runs: str) -> list[str]:
  paths = [p.strip() for p in runs.split(',') if p.strip()]
  if not paths:
    raise InputError('--runs: no directories given')
  return paths


def report_all(paths: Sequence[str], out_dir: Any, *, region: str = 'roi',
               thesis: Optional[report_tables.Thesis] = None) -> str:
  """Writes out_dir/report.md and the figures of every table / figure with a run; returns the
  markdown. InputError when no table or figure has a run."""
  thesis = thesis or report_tables.load_thesis()
  out_dir = pathlib.Path(out_dir)
  records = report_runs.find_records(paths)
  ch3_runs = find_runs(paths, quiet=True)
  sections, empty = [], []
  out_dir.mkdir(parents=True, exist_ok=True)
  for name, spec in TABLES.items():
    if any(run.label in spec.methods for run in ch3_runs):
      grid = build(spec, ch3_runs, region)
      plots = write_plots(name, ch3_runs, out_dir, region)
      sections.append(f'## Table {name}\n\n{render(grid, thesis)}\n' +
                      ''.join(f'![{p.stem}]({p.name})\n' for p in plots))
    else:
      empty.append(name)
  built_tables: dict = {}
  for name, spec in report_specs.TABLES.items():
    built = report_tables.build(spec, records)
    built_tables[name] = built
    if built.filled:
      sections.append(report_tables.render(built, thesis))
    else:
      empty.append(name)
  drawn = []
  for name in FIGURES:
    section = figure_section(name, records, out_dir, built_tables)
    if section is None:
      empty.append(f'Fig. {name}')
    else:
      sections.append(section)
      drawn.append(name)
  if len(empty) == len(TABLES) + len(report_specs.TABLES) + len(FIGURES):
    raise InputError(f'--runs: no run fills any table or figure under {", ".join(paths)}')
  head = [f'# The dissertation\'s tables and figures from {", ".join(paths)}', '',
          f'{len(records)} run directories. Thesis numbers: {thesis.path}.', '']
  tail = ['## Without runs', '', ', '.join(empty) + '.', ''] if empty else []
  text = '\n'.join(head + sections + tail).rstrip('\n') + '\n'
  _write_text(out_dir / 'report.md', text)
  return text


# ------------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m experiments.report',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--runs', required=True,
                      help='comma-separated directories, searched recursively for runs')
  what = parser.add_mutually_exclusive_group(required=True)
  what.add_argument('--table', help=f'one of {", ".join(ALL_TABLES)}')
  what.add_argument('--figure', help=f'one of {", ".join(FIGURES)} (needs --plots)')
  what.add_argument('--all', action='store_true',
                    help='every table and figure with a run (needs --out=DIR)')
  parser.add_argument('--region', default='roi',
                      help='chapter 3: roi (default, as the thesis) or slice')
  parser.add_argument('--out', help='--table: also write the markdown to this file; '
                      '--all: the folder of report.md and the PNGs')
  parser.add_argument('--plots', help='write the PNGs of the table / figure into this folder')
  parser.add_argument('--thesis', help='the thesis numbers (default '
                      'experiments/thesis_numbers.json)')
  return parser


def _run_table(args, paths, thesis) -> str:
  if args.table in TABLES:
    runs = find_runs(paths)
    if not runs:
      raise InputError(f'--runs: no chapter-3 runs (config.json + results.json with ROI scores) '
                       f'under {", ".join(paths)}')
    text = render(build(TABLES[args.table], runs, args.region), thesis)
    if args.plots:
      for path in write_plots(args.table, runs, args.plots, args.region):
        print(f'wrote {path}', file=sys.stderr)
    return text
  records = report_runs.find_records(paths)
  built = report_tables.build(report_specs.TABLES[args.table], records)
  if not built.filled:
    raise InputError(f'--runs: no run fills Table {args.table} under {", ".join(paths)} '
                     f'({len(records)} run directories; see the table spec in '
                     'experiments/report_specs.py)')
  if args.plots:
    built_tables = {args.table: built}
    for name in report_figures.TABLE_FIGURES.get(args.table, ()):
      path = report_figures.draw(name, records, _figure_grid(name, records, built_tables),
                                 args.plots)
      if path is not None:
        print(f'wrote {path}', file=sys.stderr)
  return report_tables.render(built, thesis)


def _run(argv) -> int:
  args = _parser().parse_args(argv)
  _check_region(args.region)
  if args.table:
    _check_table(args.table)
  if args.figure:
    _check_figure(args.figure)
    if not args.plots:
      raise InputError('--figure needs --plots=DIR (the folder of the PNG)')
  if args.all and not args.out:
    raise InputError('--all needs --out=DIR (the folder of report.md and the PNGs)')
  paths = _paths(args.runs)
  thesis = report_tables.load_thesis(args.thesis)
  if args.all:
    text = report_all(paths, args.out, region=args.region, thesis=thesis)
    print(f'wrote {pathlib.Path(args.out) / "report.md"}', file=sys.stderr)
  elif args.figure:
    records = report_runs.find_records(paths)
    text = figure_section(args.figure, records, args.plots, {})
    if text is None:
      raise InputError(f'--runs: no run feeds Figure {args.figure} under {", ".join(paths)}')
    print(f'wrote {pathlib.Path(args.plots) / report_figures.file_name(args.figure)}',
          file=sys.stderr)
  else:
    text = _run_table(args, paths, thesis)
    if args.out:
      _write_text(args.out, text)
  sys.stdout.write(text)
  return 0


def main(argv=None) -> int:
  return cli_main(lambda: _run(argv))


if __name__ == '__main__':
  sys.exit(main())
