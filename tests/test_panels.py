"""Tests for medsr_jax.logging.panels: comparison panel layout, error map, titles and scores,
colour bar, PNG saving.

Run: .venv/bin/python -m pytest -q tests/test_panels.py
"""

import math
import os
import time

import numpy as np
from PIL import Image
import pytest

from medsr_jax.logging import panels
from medsr_jax.metrics import image_quality


def _images(rng, h=12, w=10, scale=2):
  hr = rng.uniform(0, 1, (h, w)).astype(np.float32)
  return {
      "LR": rng.uniform(0, 1, (h // scale, w // scale, 1)).astype(np.float32),
      "bicubic": rng.uniform(-0.2, 1.2, (h, w)).astype(np.float32),  # out of range: clipped
      "SR": hr.copy(),
      "HR": hr,
  }


def _tiles(panel, width, n, sep=2):
  return [panel[:, i * (width + sep):i * (width + sep) + width] for i in range(n)]


def test_panel_layout_and_identical_sr_hr():
  images = _images(np.random.default_rng(0))
  panel = panels.comparison_panel(images, annotate=False)
  assert panel.dtype == np.uint8
  assert panel.shape == (12, 5 * 10 + 4 * 2)
  lr, bic, sr, hr, err = _tiles(panel, 10, 5)
  for i in range(4):  # separators are white
    assert (panel[:, 10 + i * 12:12 + i * 12] == 255).all()
  assert not (err).any()  # SR == HR: the error map is all zero
  np.testing.assert_array_equal(sr, hr)
  np.testing.assert_array_equal(hr, np.round(images["HR"] * 255).astype(np.uint8))
  # LR: nearest-neighbour x2, i.e. 2x2 blocks.
  expected_lr = np.round(np.repeat(np.repeat(images["LR"][..., 0], 2, 0), 2, 1) * 255)
  np.testing.assert_array_equal(lr, expected_lr.astype(np.uint8))
  np.testing.assert_array_equal(
      bic, np.round(np.clip(images["bicubic"], 0, 1) * 255).astype(np.uint8))


def test_error_map_scaled_and_clipped():
  hr = np.full((4, 4), 0.5, np.float32)
  sr = hr.copy()
  sr[0, 0] = 0.5625  # error 1/16 (exact in float32) -> x10 -> 0.625
  sr[1, 1] = 0.0  # error 0.5 -> clipped to 1
  panel = panels.comparison_panel({"SR": sr, "HR": hr}, separator=1, annotate=False)
  assert panel.shape == (4, 3 * 4 + 2)
  err = panel[:, 10:]
  assert err[0, 0] == round(0.625 * 255)
  assert err[1, 1] == 255
  assert int(err.sum()) == round(0.625 * 255) + 255
  panel5 = panels.comparison_panel({"SR": sr, "HR": hr}, error_scale=5.0, annotate=False)
  assert panel5[0, 12] == round(0.3125 * 255)


def test_no_error_map_without_pair():
  panel = panels.comparison_panel({"a": np.zeros((3, 3)), "b": np.ones((6, 6))}, error_pair=None,
                                  annotate=False)
  assert panel.shape == (6, 14)  # a is resized to the largest size; no error tile
  panel = panels.comparison_panel({"SR": np.zeros((3, 3))}, annotate=False)
  assert panel.shape == (3, 3)
  titled = panels.comparison_panel({"SR": np.zeros((3, 3))}, zoom=1)
  assert titled.shape[1:] == (3, 3) and titled.shape[0] > 3  # a title strip, no error tile


def test_bad_inputs():
  with pytest.raises(ValueError, match="same shape"):
    panels.comparison_panel({"SR": np.zeros((3, 3)), "HR": np.zeros((6, 6))})
  with pytest.raises(ValueError, match=r"\(H, W\)"):
    panels.comparison_panel({"SR": np.zeros((3, 3, 3))})
  with pytest.raises(ValueError):
    panels.comparison_panel({})


def test_stack_rows():
  a = np.zeros((3, 5), np.uint8)
  out = panels.stack_rows([a, a + 7])
  assert out.shape == (8, 5)
  assert (out[3:5] == 255).all() and (out[5:] == 7).all()


def test_save_png_atomic_round_trip(tmp_path):
  panel = panels.comparison_panel(_images(np.random.default_rng(1)))
  assert panel.ndim == 3 and panel.shape[-1] == 3  # annotated: RGB
  path = tmp_path / "samples" / "step_1.png"
  panels.save_png(path, panel)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), panel)
  rgb = np.random.default_rng(2).integers(0, 256, (4, 5, 3), dtype=np.uint8)
  panels.save_png(path, rgb)  # overwrite in place
  np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
  assert os.listdir(path.parent) == ["step_1.png"]  # no temporary files left
  with pytest.raises(ValueError):
    panels.save_png(tmp_path / "bad.png", np.zeros((4, 4, 2), np.uint8))
  assert not (tmp_path / "bad.png").exists()


def test_write_report_panels_every_channel_of_multichannel_slices(tmp_path):
  """A 2-channel (multi-modal) test set gets one panel per channel instead of an error."""
  from medsr_jax import evaluate  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  hr = rng.random((3, 16, 16, 2)).astype(np.float32)
  lr, sr = hr[:, ::2, ::2], (0.9 * hr).astype(np.float32)
  scores = {"bicubic": evaluate.score_slices(hr, sr, 2), "model": evaluate.score_slices(hr, sr, 2)}
  _, written = evaluate.write_report(tmp_path, scores, {"lr": lr, "bicubic": sr, "sr": sr, "hr": hr},
                                     scale=2, model_label="m", num_panels=2)
  assert sorted(written) == ["panel_000_c0", "panel_000_c1", "panel_002_c0", "panel_002_c1"]
  assert (tmp_path / "panel_002_c1.png").is_file()


# ---------------------------------------------------------------------------------------------
# Annotated panels: titles, PSNR / SSIM, colour error map and colour bar.


def _slice_set(rng, h=32, w=24, scale=4):
  yy, xx = np.mgrid[0:h, 0:w]
  hr = (0.5 + 0.4 * np.sin(xx / 3.0) * np.cos(yy / 5.0)).astype(np.float32)
  lr = hr[::scale, ::scale]
  bic = np.clip(hr + rng.normal(0, 0.05, hr.shape), 0, 1).astype(np.float32)
  sr = (hr + rng.normal(0, 0.02, hr.shape)).astype(np.float32)  # not clipped: scored as is
  sr[0, 0] = 1.3
  return {"LR": lr, "bicubic": bic, "SR": sr, "HR": hr}


def test_panel_scores_are_the_results_table_numbers():
  images = _slice_set(np.random.default_rng(0))
  for scale in (4, 2.5):
    found = panels.panel_scores(images, scale=scale)
    assert sorted(found) == ["SR", "bicubic"]  # LR (other size) and HR itself are not scored
    for name in found:
      expected = image_quality.slice_scores(images["HR"], images[name], scale)
      assert found[name] == expected  # same crop (ceil(s)), data range, no clipping
  # Inferred scale: HR height / LR height, rounded to 0.1 (32 / 8 = 4; 32 / 13 -> 2.5).
  assert panels.panel_scores(images) == panels.panel_scores(images, scale=4)
  images_25 = dict(images, LR=images["HR"][:13, :10])
  assert panels.panel_scores(images_25) == panels.panel_scores(images, scale=2.5)
  # Given scores are shown as they are; a tiny image gets none; no reference: nothing.
  found = panels.panel_scores(images, scale=4, given={"SR": (30, 0.9), "other": (1, 1)})
  assert found["SR"] == (30.0, 0.9) and "other" not in found
  tiny = {"SR": np.zeros((8, 8)), "HR": np.ones((8, 8))}
  assert panels.panel_scores(tiny, scale=2) == {}
  assert panels.panel_scores({"SR": images["SR"]}) == {}
  identical = panels.panel_scores({"SR": images["HR"], "HR": images["HR"]}, scale=2)
  assert math.isinf(identical["SR"][0]) and identical["SR"][1] == pytest.approx(1.0)


def _strip_height(panel, tile_h):
  return panel.shape[0] - tile_h


def test_annotated_layout_tiles_titles_error_colours():
  images = _slice_set(np.random.default_rng(1))
  h, w = images["HR"].shape
  panel = panels.comparison_panel(images, scale=4, labels={"SR": "RDST"})
  zoom = -(-panels.MIN_TILE_WIDTH // w)  # 24 px tiles are magnified x6
  assert zoom == 6
  tw = w * zoom
  strip = _strip_height(panel, h * zoom)
  assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[-1] == 3
  assert strip > 20  # three text lines (title, PSNR, SSIM) fit
  bare = panels.comparison_panel(images, annotate=False)
  bare_tiles = _tiles(bare, w, 5)
  for i in range(5):  # each tile under its title strip: the bare tile, magnified
    x = i * (tw + 2)
    column = panel[:, x:x + tw]
    tile = column[strip:]
    assert column[:strip].any()  # some text was drawn in the title strip
    assert (column[:strip] == 0).mean() > 0.5  # ... on black
    if i < 4:  # greyscale tiles: R = G = B = the bare tile, nearest-neighbour magnified
      expected = np.repeat(np.repeat(bare_tiles[i], zoom, 0), zoom, 1)
      for c in range(3):
        np.testing.assert_array_equal(tile[..., c], expected)
    else:  # the error map in colour: inferno of the bare error map
      lut = panels._colormap(panels.ERROR_CMAP)  # pylint: disable=protected-access
      np.testing.assert_array_equal(tile[::zoom, ::zoom], lut[bare_tiles[4]])
      assert tuple(lut[0]) == (0, 0, 4)  # no error is (near) black
    if i < 4:
      assert (panel[:, x + tw:x + tw + 2] == 255).all()  # white separators
  # The colour bar after the error tile: a column of colours from full scale (top) to zero.
  bar = panel[strip:, 5 * (tw + 2):]
  lut = panels._colormap(panels.ERROR_CMAP)  # pylint: disable=protected-access
  np.testing.assert_array_equal(bar[0, 0], lut[255])
  np.testing.assert_array_equal(bar[-1, 0], lut[0])
  no_bar = panels.comparison_panel(images, scale=4, colorbar=False)
  assert no_bar.shape[1] == 5 * tw + 4 * 2 and panel.shape[1] > no_bar.shape[1]


def test_titles_differ_with_labels_and_scores():
  images = _slice_set(np.random.default_rng(2))
  a = panels.comparison_panel(images, scale=4)
  b = panels.comparison_panel(images, scale=4, labels={"SR": "RDST"})
  c = panels.comparison_panel(images, scale=4, scores={"SR": (12.34, 0.5)})
  strip = _strip_height(a, 32 * 6)
  assert a.shape == b.shape == c.shape
  np.testing.assert_array_equal(a[strip:], b[strip:])  # only the text changes
  sr_title = slice(2 * (24 * 6 + 2), 3 * (24 * 6 + 2))
  assert (a[:strip, sr_title] != b[:strip, sr_title]).any()
  assert (a[:strip, sr_title] != c[:strip, sr_title]).any()
  np.testing.assert_array_equal(a[:strip, :24 * 6], b[:strip, :24 * 6])  # LR title unchanged
  unzoomed = panels.comparison_panel(images, zoom=1)  # tiles at their own size
  bare = panels.comparison_panel(images, annotate=False)
  np.testing.assert_array_equal(unzoomed[-32:, :4 * 26, 0], bare[:, :4 * 26])
  assert unzoomed.shape[1] < a.shape[1]


def test_annotated_rendering_is_fast():
  rng = np.random.default_rng(3)
  images = {"LR": rng.random((64, 64)), "bicubic": rng.random((256, 256)),
            "SR": rng.random((256, 256)), "HR": rng.random((256, 256))}
  panels.comparison_panel(images, scale=4)  # first call: font and colour map tables
  start = time.perf_counter()
  rows = [panels.comparison_panel(images, scale=4, labels={"SR": "RDST"}) for _ in range(4)]
  assert time.perf_counter() - start < 2.0  # about 0.1 s each on one slow core
  stacked = panels.stack_rows(rows)
  assert stacked.shape == (4 * rows[0].shape[0] + 3 * 2, rows[0].shape[1], 3)


def test_stack_rows_mixed_grey_and_rgb():
  grey = np.full((2, 4), 9, np.uint8)
  rgb = np.zeros((3, 4, 3), np.uint8)
  out = panels.stack_rows([grey, rgb], separator=1)
  assert out.shape == (6, 4, 3)
  assert (out[:2] == 9).all() and (out[2] == 255).all() and not out[3:].any()
