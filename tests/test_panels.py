"""Tests for medsr_jax.logging.panels: comparison panel layout, error map, PNG saving."""

import os

import numpy as np
from PIL import Image
import pytest

from medsr_jax.logging import panels


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
  panel = panels.comparison_panel(images)
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
  panel = panels.comparison_panel({"SR": sr, "HR": hr}, separator=1)
  assert panel.shape == (4, 3 * 4 + 2)
  err = panel[:, 10:]
  assert err[0, 0] == round(0.625 * 255)
  assert err[1, 1] == 255
  assert int(err.sum()) == round(0.625 * 255) + 255
  panel5 = panels.comparison_panel({"SR": sr, "HR": hr}, error_scale=5.0)
  assert panel5[0, 12] == round(0.3125 * 255)


def test_no_error_map_without_pair():
  panel = panels.comparison_panel({"a": np.zeros((3, 3)), "b": np.ones((6, 6))}, error_pair=None)
  assert panel.shape == (6, 14)  # a is resized to the largest size; no error tile
  panel = panels.comparison_panel({"SR": np.zeros((3, 3))})
  assert panel.shape == (3, 3)


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
