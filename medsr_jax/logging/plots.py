"""Box plots of slice-wise PSNR and SSIM per method, as in thesis Figs. 3.5, 3.13 and 3.14.

`box_plots` draws one PNG with two panels side by side, slice-wise PSNR (dB) on the left and
slice-wise SSIM on the right, one box per method in the order the methods are given. Boxes
follow matplotlib's defaults (quartile box, median line, whiskers at 1.5 IQR, outliers as
points); the mean is marked too, since the thesis tables report means. Non-finite values (e.g.
an infinite PSNR for a slice reproduced exactly) are left out of the boxes.

matplotlib is imported inside `box_plots`, so importing this module is cheap, and the figure
is rendered with the Agg canvas directly (`matplotlib.figure.Figure` + `FigureCanvasAgg`):
no pyplot, no global backend switch, no figure left open. The file is written atomically
(temporary file in the same folder, then os.replace).

Usage:
  box_plots({"bilinear": {"psnr": p0, "ssim": s0}, "SRGAN": {"psnr": p1, "ssim": s1}},
            "eval/boxplots.png", title="BraTS x4")
Run the checks with:
  .venv/bin/python -m pytest -q tests/test_plots.py
"""

from __future__ import annotations

import os
import tempfile
from typing import Mapping

import numpy as np

from medsr_jax.errors import InputError

METRICS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"))


def _finite_values(scores: Mapping[str, Mapping[str, np.ndarray]], key: str) -> list:
  data = []
  for method, values in scores.items():
    if key not in values:
      raise InputError(f"box_plots: method {method!r} has no {key!r} scores")
    v = np.asarray(values[key], np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
      raise InputError(f"box_plots: method {method!r} has no finite {key!r} scores")
    data.append(v)
  return data


def box_plots(scores: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike, *,
              title: str = "", dpi: int = 100) -> None:
  """Writes a PNG with side-by-side box plots of slice-wise PSNR and SSIM.

  Args:
    scores: {method: {'psnr': 1-D array, 'ssim': 1-D array}}; iteration order = box order.
    path: the PNG to write (folders are created).
    title: figure title (none when empty).
    dpi: resolution of the max(6, 1.2 * methods + 2) x 4 inch figure.
  """
  if not scores:
    raise InputError("box_plots needs at least one method")
  data = {key: _finite_values(scores, key) for key, _ in METRICS}
  names = [str(m) for m in scores]

  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  width = max(6.0, 2 * (0.6 * len(names) + 1.0))
  fig = Figure(figsize=(width, 4.0), dpi=dpi)
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 2)
  positions = np.arange(1, len(names) + 1)
  rotate = max(len(n) for n in names) * len(names) > 40
  for ax, (key, label) in zip(axes, METRICS):
    ax.boxplot(data[key], positions=positions, widths=0.6, showmeans=True,
               meanprops=dict(marker="^", markersize=5))
    ax.set_xticks(positions)
    ax.set_xticklabels(names, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel(label)
    ax.set_title(f"slice-wise {label.split()[0]}")
    ax.grid(axis="y", alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()

  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
  try:
    with os.fdopen(fd, "wb") as f:
      fig.savefig(f, format="png")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
