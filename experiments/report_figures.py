"""The dissertation's chapter-4/5 figures redrawn from our runs (matplotlib PNGs).

  4.4   bubbles: mean PSNR against mean FID (SSIM when a run has no FID), bubble area ~ the
        parameter count, one bubble per method of Table 4.1
  4.5   PSNR / SSIM (/ FID) against the scale, one line per method of Table 4.1
  4.8   bubbles as 4.4 for MIASSR's feature extractors trained with L1
  4.9   grouped bars: EDSR-lite, EDSR, RDN with L1 only vs with the adversarial + perceptual terms
  4.10  PSNR / SSIM (/ FID) against the scale, one line per GAN variation (its means: the table)
  5.10  PSNR against each RDST-E hyper-parameter (window size, embedding dimension, STLs per DSTB,
        DSTBs per RDSTB, RDSTBs), the other four at RDST-E's values; a panel per varied one
  5.11  grouped bars: RDN, RCAN, SwinIR at 100k L1 and after 20k more steps of L1, L_E(1), L_HRL

Each figure's data come from the same matching as the tables (experiments/report_specs.py: Table
4.1 for 4.4 / 4.5, the 'fig*' grids for the others); a figure without any run is not drawn.
Figures are rendered on the Agg canvas (no pyplot) and written atomically.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import tempfile
from typing import Any, Callable, Optional, Sequence

from experiments import report_runs as rr
from experiments import report_specs as specs
from experiments import report_tables as rt

METRIC_LABELS = {'psnr': 'PSNR (dB)', 'ssim': 'SSIM', 'fid': 'FID', 'dice': 'Dice-T'}


@dataclasses.dataclass(frozen=True)
class Figure:
  name: str
  caption: str
  grid: str            # the table whose cells feed it ('' for Fig. 5.10)
  draw: Callable


def _new_figure(panels: int, width: float = 5.0, height: float = 4.0):
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure as MplFigure
  fig = MplFigure(figsize=(width * panels, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig, fig.subplots(1, panels, squeeze=False)[0]


def _save(fig, path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.tmp-', suffix='.png')
  try:
    with os.fdopen(fd, 'wb') as f:
      fig.savefig(f, format='png')
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _colour(i: int) -> str:
  """The i-th colour of matplotlib's default cycle (the same label, the same colour)."""
  return f'C{i % 10}'


def _value(built: rt.Built, row: rt.Row, kind: str) -> Optional[float]:
  cell = built.cells.get((row.label, ''))
  if cell is None:
    return None
  metric = next((m for m in built.table.parts[0].metrics if m.kind == kind), None)
  if metric is None:
    return None
  pair = rt.read(built.table, cell.record, row, rt.Column(), metric)
  return None if pair is None else pair[0]


def _rows(built: rt.Built) -> list:
  return [r for r in built.table.parts[0].rows if (r.label, '') in built.cells]


def bubbles(built: rt.Built, path: pathlib.Path, title: str) -> bool:
  points = []
  for row in _rows(built):
    psnr = _value(built, row, 'psnr')
    if psnr is not None:
      points.append((row.label, psnr, _value(built, row, 'fid'), _value(built, row, 'ssim'),
                     _value(built, row, 'params')))
  if not points:
    return False
  use_fid = all(p[2] is not None for p in points)
  fig, (ax,) = _new_figure(1, 6.0, 4.5)
  for label, psnr, fid, ssim, params in points:
    x = fid if use_fid else ssim
    if x is None:
      continue
    area = 60.0 if params is None else 40.0 + 120.0 * math.sqrt(max(params, 0.0))
    ax.scatter([x], [psnr], s=area, alpha=0.5)
    ax.annotate(label + ('' if params is None else f' ({params:.2g}M)'), (x, psnr),
                fontsize='small', xytext=(4, 4), textcoords='offset points')
  ax.set_xlabel('mean FID (lower is better)' if use_fid else 'mean SSIM (no FID in the runs)')
  ax.set_ylabel('mean PSNR (dB)')
  ax.set_title(title, fontsize='medium')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  _save(fig, path)
  return True


def vs_scale(built: rt.Built, path: pathlib.Path, title: str) -> bool:
  curves: dict[str, dict[str, list]] = {}
  first = None
  for row in _rows(built):
    record = built.cells[(row.label, '')].record
    first = first or record
    for kind in ('psnr', 'ssim', 'fid'):
      values = rr.per_scale_values(record, row.method, kind)
      if values:
        curves.setdefault(kind, {})[row.label] = values
  if not curves.get('psnr'):
    return False
  if not any(r.method == 'bicubic' for r in _rows(built)) and first is not None:
    for kind in list(curves):
      values = rr.per_scale_values(first, 'bicubic', kind)
      if values:
        curves[kind] = {'bicubic': values, **curves[kind]}
  kinds = [k for k in ('psnr', 'ssim', 'fid') if curves.get(k)]
  labels = list(dict.fromkeys(label for kind in kinds for label in curves[kind]))
  fig, axes = _new_figure(len(kinds))
  for ax, kind in zip(axes, kinds):
    for label, values in curves[kind].items():
      dashed = label.lower() == 'bicubic'
      ax.plot([s for s, _ in values], [v for _, v in values], marker='.' if dashed else 'o',
              markersize=3, linestyle='--' if dashed else '-', label=label,
              color=_colour(labels.index(label)))
    ax.set_xlabel('scale s')
    ax.set_ylabel(METRIC_LABELS[kind])
    ax.grid(alpha=0.3)
    ax.legend(fontsize='x-small')
  fig.suptitle(title, fontsize='medium')
  fig.tight_layout()
  _save(fig, path)
  return True


def bars(built: rt.Built, path: pathlib.Path, title: str) -> bool:
  rows = _rows(built)
  if not rows:
    return False
  groups: list[str] = []
  variants: list[str] = []
  for row in built.table.parts[0].rows:
    group, _, variant = row.label.partition(': ')
    if group not in groups:
      groups.append(group)
    if variant not in variants:
      variants.append(variant)
  kinds = [m.kind for m in built.table.parts[0].metrics
           if any(_value(built, r, m.kind) is not None for r in rows)]
  if not kinds:
    return False
  fig, axes = _new_figure(len(kinds))
  width = 0.8 / max(len(variants), 1)
  for ax, kind in zip(axes, kinds):
    for j, variant in enumerate(variants):
      xs, ys = [], []
      for i, group in enumerate(groups):
        row = next((r for r in rows if r.label == f'{group}: {variant}'), None)
        value = _value(built, row, kind) if row is not None else None
        if value is not None:
          xs.append(i + (j - (len(variants) - 1) / 2) * width)
          ys.append(value)
      if xs:
        ax.bar(xs, ys, width=width, label=variant, color=_colour(j))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(METRIC_LABELS[kind])
    values = [_value(built, r, kind) for r in rows]
    values = [v for v in values if v is not None]
    low, high = min(values), max(values)
    pad = (high - low) * 0.5 or abs(high) * 0.01 or 0.01
    ax.set_ylim(low - pad, high + pad)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize='x-small')
  fig.suptitle(title, fontsize='medium')
  fig.tight_layout()
  _save(fig, path)
  return True


def hyper_points(records: Sequence[rr.Record]) -> dict[str, list[tuple[float, float, str]]]:
  """{hyper-parameter: [(value, PSNR, run directory)]} of Fig. 5.10 (module docstring)."""
  out: dict[str, list] = {}
  for record in records:
    if any(rt.rank(record.facts.get(k), v) is None
           for k, v in specs.FIG_5_10_MATCH.items()):
      continue
    pair = rr.image_value(record, 'model', 'psnr')
    if pair is None:
      continue
    differs = [k for k, v in specs.RDST_E_DEFAULTS.items()
               if not rt.same(record.facts.get(k), v)]
    targets = differs if len(differs) == 1 else list(specs.RDST_E_DEFAULTS) if not differs \
        else []
    for key in targets:
      out.setdefault(key, []).append((float(record.facts.get(key)), pair[0],
                                      str(record.directory)))
  return {k: sorted(v) for k, v in out.items()}


def hyper(records: Sequence[rr.Record], path: pathlib.Path, title: str) -> bool:
  points = {k: v for k, v in hyper_points(records).items() if v}
  if not points:
    return False
  fig, axes = _new_figure(len(points), 3.6, 3.4)
  for ax, (key, values) in zip(axes, points.items()):
    ax.plot([v for v, _, _ in values], [p for _, p, _ in values], marker='o')
    ax.set_xlabel(specs.HYPER_LABELS[key])
    ax.set_ylabel('PSNR (dB)')
    ax.grid(alpha=0.3)
  fig.suptitle(title, fontsize='medium')
  fig.tight_layout()
  _save(fig, path)
  return True


FIGURES = {f.name: f for f in (
    Figure('4.4', 'performance and model size of MIASSR and SOTA methods', '4.1', bubbles),
    Figure('4.5', 'MIASSR and SOTA methods at scales in (1, 4]', '4.1', vs_scale),
    Figure('4.8', 'feature extractors of MIASSR trained with L1', 'fig4.8', bubbles),
    Figure('4.9', 'sensitivity of the generators to adversarial learning', 'fig4.9', bars),
    Figure('4.10', 'GAN variations of MIASSR', 'fig4.10', vs_scale),
    Figure('5.10', 'RDST-E hyper-parameters (L1 only)', '', hyper),
    Figure('5.11', 'segmentation-based perceptual losses on SOTA methods', 'fig5.11', bars))}
TABLE_FIGURES = {'4.1': ('4.4', '4.5'), '5.9': ('5.11',)}


def file_name(name: str) -> str:
  return f'fig{name}.png'


def draw(name: str, records: Sequence[rr.Record], built: Optional[rt.Built],
         out_dir: Any) -> Optional[pathlib.Path]:
  """Draws Figure `name` into out_dir/fig<name>.png; None when no run feeds it."""
  figure = FIGURES[name]
  path = pathlib.Path(out_dir) / file_name(name)
  title = f'Fig. {name} (ours): {figure.caption}'
  if figure.grid == '':
    return path if figure.draw(records, path, title) else None
  return path if figure.draw(built, path, title) else None


def hyper_markdown(records: Sequence[rr.Record]) -> str:
  """The data of Fig. 5.10 as a markdown list."""
  lines = []
  for key, values in hyper_points(records).items():
    for value, psnr, directory in values:
      lines.append(f'- {specs.HYPER_LABELS[key]} = {value:g}: PSNR {psnr:.2f} ({directory})')
  return '\n'.join(lines)
