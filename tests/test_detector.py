"""Lesion detector (thesis §3.2.2, §3.4.2, Table 3.2): accuracy levels, the trainer, the detect CLI.

  (a) `metrics.roi_detection` on hand-made masks and boxes: the level boundaries (100 % perfect,
      96 % acceptable, exactly 95 % bad), empty masks, clamped boxes, the normalised-target round
      trip;
  (b) a tiny detector trained by the real trainer through `main.run` on a synthetic shard set of
      32 x 32 slices with one bright disc each (its label the lesion, known centre; a few train
      slices have none and must be skipped) until its validation centre error is a few pixels;
      the export loads and results.md has the Table 3.2 rows;
  (c) `python -m medsr_jax.detect` writes the centres CSV for those shards and the sample,
      `data.centres.read_centres` reads it back in HR pixels, and the error cases.

Run: .venv/bin/python -m pytest -q tests/test_detector.py
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from medsr_jax import config_lib
from medsr_jax import main as main_lib
from medsr_jax.data import centres as centres_lib
from medsr_jax.data import manifest as manifest_lib
from medsr_jax.errors import InputError
from medsr_jax.metrics import roi_detection as rd
from tests import shard_fixtures

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = 32
RADIUS = 3.5
N_TRAIN = 1000  # enough distinct positions that a 4.7k-parameter detector generalises
STEPS = 300


# ----------------------------------------------------------------------------------------------
# (a) accuracy levels and coordinates.


def _mask(hw, pixels):
  m = np.zeros(hw, bool)
  for r, c in pixels:
    m[r, c] = True
  return m


def test_levels_on_hand_made_boxes():
  # 100 lesion pixels in a 10x10 block at rows 10-19, cols 20-29.
  mask = np.zeros((40, 40), bool)
  mask[10:20, 20:30] = True
  assert rd.coverage(mask, (10, 20, 10, 10)) == 1.0
  assert rd.accuracy_level(rd.coverage(mask, (0, 0, 40, 40))) == rd.PERFECT
  # 96 of 100 lesion pixels inside the box.
  mask96 = np.zeros((40, 40), bool)
  mask96[10:20, 20:30] = True
  mask96[10, 20:24] = False   # 96 inside the box ...
  mask96[25, 0:4] = True      # ... and 4 outside: 96 / 100
  box = (10, 20, 10, 10)
  assert rd.coverage(mask96, box) == 0.96
  assert rd.accuracy_level(rd.coverage(mask96, box)) == rd.ACCEPTABLE
  mask95 = mask96.copy()
  mask95[11, 20] = False
  mask95[26, 0] = True        # 95 inside, 5 outside: exactly 95 % is bad (> 95 % acceptable)
  assert rd.coverage(mask95, box) == 0.95
  assert rd.accuracy_level(rd.coverage(mask95, box)) == rd.BAD
  assert rd.accuracy_level(19 / 20) == rd.BAD
  assert rd.accuracy_level(0.0) == rd.BAD
  assert rd.accuracy_level(0.9500001) == rd.ACCEPTABLE
  assert rd.accuracy_level(0.9999999) == rd.ACCEPTABLE
  # A box reaching outside the image counts only its inside part.
  corner = _mask((8, 8), [(0, 0), (0, 1), (7, 7), (1, 0)])
  assert rd.coverage(corner, (-3, -3, 5, 5)) == 0.75
  # Empty masks have no coverage; their level is refused.
  assert np.isnan(rd.coverage(np.zeros((5, 5), bool), (0, 0, 2, 2)))
  with pytest.raises(InputError, match="without lesion"):
    rd.accuracy_level(float("nan"))
  with pytest.raises(InputError):
    rd.accuracy_level(1.2)
  assert rd.level_counts(["bad", "perfect", "perfect"]) == {"perfect": 2, "acceptable": 0,
                                                              "bad": 1}
  with pytest.raises(InputError):
    rd.level_counts(["good"])


def test_report_boxes_are_the_clamped_training_crop():
  masks = np.zeros((2, 20, 16), bool)
  masks[0, 0:3, 0:3] = True             # lesion in the corner
  masks[1, 8:12, 6:10] = True
  true = np.array([[1.0, 1.0], [9.5, 7.5]])
  pred = np.array([[0.0, 0.0], [9.5, 14.0]])
  rep = rd.detection_report(pred, true, masks, (6, 6))
  np.testing.assert_array_equal(rep["box"], [[0, 0, 6, 6], [7, 10, 6, 6]])  # clamped left
  np.testing.assert_allclose(rep["coverage"], [1.0, 0.0])
  assert list(rep["level"]) == ["perfect", "bad"]
  np.testing.assert_allclose(rep["error"], [np.sqrt(2), 6.5])
  s = rd.summary(rep)
  assert (s["perfect"], s["bad"], s["perfect_fraction"]) == (1, 1, 0.5)
  table = rd.markdown_table({"x4": s})
  assert "| x4 | 1 (50.0%) | 0 (0.0%) | 1 (50.0%) | 2 |" in table


def test_normalised_targets_round_trip():
  rc = np.array([[0.0, 0.0], [239.0, 119.5], [12.25, 3.0]])
  xy = rd.normalised_targets(rc, (240, 120))
  np.testing.assert_allclose(xy[0], [0.5 / 120, 0.5 / 240], rtol=1e-6)
  np.testing.assert_allclose(xy[1], [1.0, 239.5 / 240], atol=1e-6)
  np.testing.assert_allclose(rd.centres_from_normalised(xy, (240, 120)), rc, atol=1e-4)
  # The same normalised centre is the same place in an image half the size (half-pixel grid).
  np.testing.assert_allclose(rd.centres_from_normalised(xy, (120, 60)),
                             (rc + 0.5) / 2 - 0.5, atol=1e-4)
  with pytest.raises(InputError):
    rd.normalised_targets(np.zeros((3, 3)), (4, 4))


# ----------------------------------------------------------------------------------------------
# Synthetic data: 32 x 32 slices with one bright disc (the lesion, label 1).


def blob_set(n, seed, empty=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:SIZE, 0:SIZE]
  images = rng.uniform(0.0, 0.15, (n, SIZE, SIZE, 1)).astype(np.float32)
  labels = np.zeros((n, SIZE, SIZE), np.uint8)
  for i in range(n - empty):
    cy, cx = rng.uniform(7, SIZE - 8, 2)
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    images[i, ..., 0] += np.clip(RADIUS + 0.5 - d, 0, 1) * 0.8
    labels[i] = d <= RADIUS
  return images, labels


def write_blob_shards(directory, sizes=None):
  """A data_prep-format shard directory of `blob_set`s (train in 2 shards); returns the sets."""
  sizes = sizes or {"train": (N_TRAIN, 4), "val": (16, 0), "test": (16, 0)}
  os.makedirs(directory, exist_ok=True)
  splits, sets = {}, {}
  for k, (split, (n, empty)) in enumerate(sizes.items()):
    images, labels = blob_set(n, seed=k, empty=empty)
    sets[split] = (images, labels)
    n_shards = 2 if split == "train" else 1
    shards = shard_fixtures.write_split_shards(
        str(directory), split, n_shards, images, labels, range(n), subject="blobs",
        modalities=["t1"], dataset="brats")
    splits[split] = manifest_lib.Split(["blobs"], n, shards)
  manifest_lib.write_manifest(directory, manifest_lib.Manifest(
      dataset="brats", protocol="msgan", settings={"fixture": True}, channels=1,
      modalities=["t1"], has_labels=True, slice_shape=[SIZE, SIZE, 1], splits=splits,
      sources=[], complete=True))
  return sets


def tiny_config(data_path, steps):
  c = config_lib.load_config(f"{ROOT}/configs/lesion_detector.py:tiny,epochs=0,eval_scale=2")
  c.data.path = str(data_path)
  c.data.global_batch_size = 16
  c.data.roi.size = (12, 12)
  c.data.roi.lesion_labels = (1,)
  c.data.num_threads = 0
  c.train.stages = [config_lib.stage("l2", steps=steps, learning_rate=1e-3, loss="mse")]
  c.train.eval_every = 100
  c.train.checkpoint_every = steps
  c.train.log_every = 50
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("detector")
  sets = write_blob_shards(root / "shards")
  workdir = root / "run"
  summary = main_lib.run(tiny_config(root / "shards", steps=STEPS), str(workdir))
  return root, sets, workdir, summary


# ----------------------------------------------------------------------------------------------
# (b) training with the real trainer.


def test_trainer_learns_centres_and_reports_table(trained, capsys):
  _, _, workdir, summary = trained
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  val = [r for r in rows if "val_centre_error" in r]
  assert [r["step"] for r in val] == [100, 200, 300]
  assert val[-1]["val_centre_error"] < 3.0, val
  for r in val:
    assert abs(r["val_perfect"] + r["val_acceptable"] + r["val_bad"] - 1) < 1e-9
    assert r["val_accuracy"] == r["val_perfect"]
  assert summary["x2"]["centre_error"] < 3.0
  md = (workdir / "results.md").read_text()
  assert "| | Perfect Detection | Acceptable Detection | Bad Detection |" in md
  for label in ("| x2 |", "| x4 |", "| label centre (reference) |"):
    assert label in md
  res = json.loads((workdir / "results.json").read_text())
  slices = res["scales"]["x2"]["slices"]
  assert len(slices) == 16 and res["target_convention"] == rd.TARGET_CONVENTION
  assert {"coverage", "level", "pred_centre", "true_centre"} <= set(slices[0])
  assert sum(s["level"] == "perfect" for s in slices) == res["scales"]["x2"]["summary"]["perfect"]

  from medsr_jax import export  # the export loads and predicts the same as the trainer did
  module, variables, cfg = export.load_export(str(workdir / "export"))
  assert cfg["model"] == "lesion_detector"
  assert cfg["extra"]["lesion_labels"] == [1] and cfg["extra"]["roi_size"] == [12, 12]
  assert cfg["extra"]["target_convention"] == "normalised (x, y), half-pixel"
  out = module.apply(variables, np.zeros((2, 16, 16, 1), np.float32), train=False)
  assert out.shape == (2, 2)
  del capsys


def test_trainer_skips_lesion_free_slices_and_refuses_none(trained, tmp_path):
  root, sets, _, _ = trained
  from medsr_jax.data import shards
  from medsr_jax.trainers import detector
  src = shards.ShardSource(root / "shards", "train", with_label=True)
  idx, rc, hw = detector.lesion_slices(src, (1,))
  assert hw == (SIZE, SIZE) and len(idx) == N_TRAIN - 4 and N_TRAIN - 1 not in idx
  np.testing.assert_allclose(rc[0], np.argwhere(sets["train"][1][0] == 1).mean(0))
  c = tiny_config(root / "shards", steps=1)
  c.data.roi.lesion_labels = (7,)
  with pytest.raises(InputError, match="no training slice has lesion pixels"):
    main_lib.run(c, str(tmp_path / "none"))


# ----------------------------------------------------------------------------------------------
# (c) the detect CLI and the centres file.


def _detect(*args):
  return subprocess.run([sys.executable, "-m", "medsr_jax.detect", *args], cwd=ROOT,
                        capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_detect_cli_writes_centres_read_back_in_hr_pixels(trained, tmp_path):
  root, sets, workdir, _ = trained
  out = tmp_path / "centres.csv"
  r = _detect(f"--model_dir={workdir / 'export'}", f"--data={root / 'shards'}", f"--out={out}",
              "--scale=2", "--splits=train,test")
  assert r.returncode == 0, r.stderr
  rows = list(csv.DictReader(out.open()))
  assert tuple(rows[0]) == centres_lib.HEADER
  train = [x for x in rows if x["split"] == "train"]
  assert [int(x["index"]) for x in train] == list(range(N_TRAIN))
  assert {x["shard"] for x in train[:N_TRAIN // 2]} == {manifest_lib.shard_name("train", 0, 2)}
  assert train[-1]["shard"] == manifest_lib.shard_name("train", 1, 2)
  assert {(x["height"], x["width"]) for x in rows} == {("16", "16")}
  assert not any(x["split"] == "val" for x in rows)
  hr = centres_lib.read_centres(out, "test", (SIZE, SIZE), 16)
  test_rows = [x for x in rows if x["split"] == "test"]
  np.testing.assert_allclose(hr[:, 0], [(float(x["row"]) + 0.5) * 2 - 0.5 for x in test_rows],
                             atol=1e-3)
  res = json.loads((workdir / "results.json").read_text())["scales"]["x2"]["slices"]
  np.testing.assert_allclose(hr, [s["pred_centre"] for s in res], atol=2e-3)
  true = np.stack([np.argwhere(l == 1).mean(0) for l in sets["test"][1]])
  assert np.mean(np.linalg.norm(hr - true, axis=1)) < 3.0

  # The embedded sample (160 x 128 slices, scale 4 -> 40 x 32), in-process.
  from medsr_jax import detect
  counts = detect.run(str(workdir / "export"), "sample", str(tmp_path / "s.csv"), scale=4,
                      splits=["val"])
  assert counts == {"val": 8}
  rc = centres_lib.read_centres(tmp_path / "s.csv", "val", (160, 128), 8)
  assert rc.shape == (8, 2) and np.all(np.isfinite(rc))


def test_detect_and_read_centres_errors(trained, tmp_path):
  root, _, workdir, _ = trained
  out = tmp_path / "c.csv"
  r = _detect(f"--model_dir={tmp_path / 'missing'}", "--data=sample", f"--out={out}")
  assert r.returncode == 2 and r.stderr.startswith("error:") and not out.exists()
  from medsr_jax import detect
  with pytest.raises(InputError, match="--splits"):
    detect.run(str(workdir / "export"), "sample", str(out), splits=["training"])
  with pytest.raises(InputError, match="shard directory"):
    detect.run(str(workdir / "export"), str(tmp_path / "nowhere"), str(out))
  assert not out.exists()

  with pytest.raises(InputError, match="not found"):
    centres_lib.read_centres(tmp_path / "none.csv", "train", (8, 8), 1)
  bad = tmp_path / "bad.csv"
  bad.write_text("split,index,row\ntrain,0,1\n")
  with pytest.raises(InputError, match="header"):
    centres_lib.read_centres(bad, "train", (8, 8), 1)
  good = tmp_path / "good.csv"
  centres_lib.write_centres(good, [("train", "s", 0, 1.0, 2.0, 4, 4),
                                   {"split": "train", "shard": "s", "index": 2, "row": 0.0,
                                    "col": 0.0, "height": 4, "width": 4}])
  np.testing.assert_allclose(centres_lib.read_centres(good, "train", (8, 8), 1), [[2.5, 4.5]])
  with pytest.raises(InputError, match="no centre for index 1"):
    centres_lib.read_centres(good, "train", (8, 8), 3)
  with pytest.raises(InputError, match="no centres for split 'val'"):
    centres_lib.read_centres(good, "val", (8, 8), 1)
  del root
