"""Tests for medsr_jax.logging.plots.box_plots and medsr_jax.logging.panels.roi_panel.

Run: .venv/bin/python -m pytest -q tests/test_plots.py tests/test_panels.py
"""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from medsr_jax.errors import InputError
from medsr_jax.logging import panels
from medsr_jax.logging import plots


def _scores(rng, methods=("B+NLD", "SRResNet", "SRGAN", "LFSR")):
  return {m: {"psnr": rng.normal(28 + i, 2, 40), "ssim": rng.uniform(0.7, 0.95, 40)}
          for i, m in enumerate(methods)}


def test_box_plots_writes_png(tmp_path):
  scores = _scores(np.random.default_rng(0))
  scores["SRResNet"]["psnr"][0] = np.inf  # an exact slice: left out, not an error
  path = tmp_path / "sub" / "boxplots.png"
  plots.box_plots(scores, path, title="BraTS x2")
  with Image.open(path) as im:
    im.load()
    assert im.format == "PNG"
    width, height = im.size
  assert 500 <= width <= 2000 and 300 <= height <= 800 and width > height
  assert os.listdir(tmp_path / "sub") == ["boxplots.png"]  # no temporary file left


def test_box_plots_bad_input(tmp_path):
  with pytest.raises(InputError):
    plots.box_plots({}, tmp_path / "a.png")
  with pytest.raises(InputError):
    plots.box_plots({"m": {"psnr": np.ones(3)}}, tmp_path / "a.png")
  with pytest.raises(InputError):
    plots.box_plots({"m": {"psnr": [np.nan], "ssim": [0.5]}}, tmp_path / "a.png")
  assert not list(tmp_path.iterdir())


def test_plots_import_is_lazy():
  code = ("import sys; import medsr_jax.logging.plots; "
          "print(any(m.startswith('matplotlib') for m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.strip() == "False"


def _slice_and_rois(rng):
  hr = rng.uniform(0.1, 0.6, (40, 30)).astype(np.float32)  # never 255 after to_uint8
  box = (5, 8, 10, 12)  # top, left, height, width
  rois = {"GT": panels.crop_roi(hr, box),
          "bilinear": panels.crop_roi(hr, box) * 0.9,
          "SR": rng.uniform(0.1, 0.6, (20, 24, 1))}  # a 2x zoomed ROI: another size
  return hr, box, rois


def test_roi_panel_rectangle_and_layout():
  hr, (top, left, h, w), rois = _slice_and_rois(np.random.default_rng(1))
  panel = panels.roi_panel(hr, (top, left, h, w), rois, captions=False, separator=2)
  assert panel.dtype == np.uint8
  # slice 30 wide, then three ROI tiles scaled to height 40: 12 * 40 / 10 = 48, 24 * 40 / 20 = 48.
  assert panel.shape == (40, 30 + 3 * (2 + 48))
  whole = panel[:, :30]
  expected = panels.to_uint8(hr)
  outline = np.zeros((40, 30), bool)
  outline[top, left:left + w] = outline[top + h - 1, left:left + w] = True
  outline[top:top + h, left] = outline[top:top + h, left + w - 1] = True
  assert (whole[outline] == panels.ROI_OUTLINE_VALUE).all()
  np.testing.assert_array_equal(whole[~outline], expected[~outline])
  for r, c in [(5, 8), (5, 19), (14, 8), (14, 19), (9, 8), (5, 13), (14, 13), (9, 19)]:
    assert whole[r, c] == 255
  for r, c in [(4, 8), (15, 8), (5, 7), (5, 20), (9, 9), (9, 18)]:
    assert whole[r, c] != 255
  assert (panel[:, 30:32] == 255).all()  # separator
  gt_tile = panel[:, 32:80]
  np.testing.assert_array_equal(gt_tile, panels.resize_nearest(expected[5:15, 8:20], 40, 48))
  np.testing.assert_array_equal(gt_tile[::4, ::4], expected[5:15, 8:20])


def test_roi_panel_captions():
  hr, box, rois = _slice_and_rois(np.random.default_rng(2))
  plain = panels.roi_panel(hr, box, rois, captions=False)
  captioned = panels.roi_panel(hr, box, rois, scores={"bilinear": (27.93, 0.8123),
                                                      "SR": (30.1, 0.9)})
  assert captioned.shape[1] == plain.shape[1] and captioned.shape[0] > plain.shape[0]
  np.testing.assert_array_equal(captioned[:40], plain)
  strip = captioned[40:]
  assert strip[:, 2:30].any()  # some text under the slice
  # the GT tile has a 1-line caption, the scored ones 3 lines: more ink under them.
  ink = [int((strip[:, a:a + 48] > 128).sum()) for a in (32, 82, 132)]
  assert ink[1] > ink[0] and ink[2] > ink[0]


def test_roi_panel_bad_input():
  hr, _, rois = _slice_and_rois(np.random.default_rng(3))
  with pytest.raises(InputError):
    panels.roi_panel(hr, (35, 0, 10, 10), rois)  # runs off the bottom
  with pytest.raises(InputError):
    panels.roi_panel(hr, (0, 0, 0, 10), rois)
  with pytest.raises(InputError):
    panels.roi_panel(hr, (0, 0, 10), rois)
  with pytest.raises(InputError):
    panels.roi_panel(hr, (0, 0, 10, 10), {})


def test_roi_panel_uint8_slice():
  hr, box, rois = _slice_and_rois(np.random.default_rng(4))
  as_uint8 = panels.roi_panel(panels.to_uint8(hr), box, rois, captions=False)
  np.testing.assert_array_equal(as_uint8, panels.roi_panel(hr, box, rois, captions=False))
