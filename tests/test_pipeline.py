"""Tests of the grain training pipeline and the whole-slice test pairs (medsr_jax.data.pipeline).

  .venv/bin/python -m pytest -q tests/test_pipeline.py
"""

import pathlib
import pickle
import subprocess
import sys
import types

import grain
import ml_collections
import numpy as np
import pytest

import medsr_jax.data
from medsr_jax.data import degradation
from medsr_jax.data import pipeline
from medsr_jax.data import sources
from medsr_jax.errors import InputError


def _random_source(n=6, h=40, w=32, c=1, seed=0):
  rng = np.random.default_rng(seed)
  return sources.ArraySliceSource(rng.random((n, h, w, c), dtype=np.float32))


def _dataset(source, **overrides):
  kwargs = dict(global_batch_size=4, lr_patch=6, scale=4, seed=3)
  kwargs.update(overrides)
  return pipeline.make_train_dataset(source, **kwargs)


def _assert_batches_equal(a, b):
  assert sorted(a) == sorted(b) == ["hr", "lr"]
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def _take(it, n):
  return [next(it) for _ in range(n)]


# ---------------------------------------------------------------- sources


def test_array_slice_source_len_getitem_pickle():
  images = np.random.default_rng(1).random((3, 5, 4, 2)).astype(np.float64)
  src = sources.ArraySliceSource(images)
  assert len(src) == 3
  assert src.slice_shape == (5, 4, 2)
  assert src[1].dtype == np.float32 and src[1].shape == (5, 4, 2)
  np.testing.assert_allclose(src[2], images[2].astype(np.float32))
  src2 = pickle.loads(pickle.dumps(src))
  assert len(src2) == 3
  np.testing.assert_array_equal(src2[0], src[0])
  with pytest.raises(IndexError):
    src[3]  # pylint: disable=pointless-statement


@pytest.mark.parametrize("bad", [np.zeros((4, 5, 5)), np.zeros((0, 5, 5, 1)),
                                 np.zeros((2, 5, 5, 1), np.uint8)])
def test_array_slice_source_rejects_bad_arrays(bad):
  with pytest.raises(InputError):
    sources.ArraySliceSource(bad)


def test_source_from_config_sample(monkeypatch):
  calls = []

  class _Set:
    def __init__(self, n):
      self.images = np.full((n, 8, 6, 1), 0.5, np.float32)
      self.slice_index = np.arange(10, 10 + n)
      self.subject = "colin27"

  def fake_load_sample(crop_hw=(160, 128)):
    calls.append(crop_hw)
    return {"train": _Set(5), "val": _Set(2), "test": _Set(3)}

  fake = types.ModuleType("medsr_jax.data.sample")
  fake.load_sample = fake_load_sample
  monkeypatch.setitem(sys.modules, "medsr_jax.data.sample", fake)
  monkeypatch.setattr(medsr_jax.data, "sample", fake, raising=False)
  cfg = ml_collections.ConfigDict(dict(source="sample", crop_hw=[8, 6]))
  src = sources.source_from_config(cfg, "val")
  assert isinstance(src, sources.ArraySliceSource) and len(src) == 2
  assert calls == [(8, 6)]
  np.testing.assert_array_equal(src.slice_index, [10, 11])
  assert src.subject == "colin27"
  assert pickle.loads(pickle.dumps(src)).subject == "colin27"
  with pytest.raises(InputError):
    sources.source_from_config(cfg, "training")


def test_source_from_config_other_sources_are_a_clear_error():
  cfg = ml_collections.ConfigDict(dict(source="tfrecord", crop_hw=(160, 128)))
  with pytest.raises(InputError, match="only 'sample'"):
    sources.source_from_config(cfg, "train")


# ---------------------------------------------------------------- training batches


def test_batch_shapes_dtypes_and_range():
  src = _random_source()
  batch = _dataset(src)[0]
  assert batch["lr"].shape == (4, 6, 6, 1) and batch["hr"].shape == (4, 24, 24, 1)
  assert batch["lr"].dtype == batch["hr"].dtype == np.float32
  assert 0.0 <= batch["hr"].min() and batch["hr"].max() <= 1.0
  # Bicubic (a = -0.75) may overshoot [0, 1] a little; nothing is clipped.
  assert -0.3 < batch["lr"].min() and batch["lr"].max() < 1.3
  assert pipeline.batch_shapes(4, 6, 4) == {"lr": (4, 6, 6, 1), "hr": (4, 24, 24, 1)}


def test_non_integer_scale_patch_size():
  batch = _dataset(_random_source(), lr_patch=6, scale=2.5)[0]
  assert batch["hr"].shape == (4, 15, 15, 1) and batch["lr"].shape == (4, 6, 6, 1)


def _find_crop(source, hr):
  """(slice, top, left) of `hr` inside `source`, or None."""
  p = hr.shape[0]
  for n in range(len(source)):
    image = source[n]
    for top in range(image.shape[0] - p + 1):
      for left in range(image.shape[1] - p + 1):
        if np.array_equal(image[top:top + p, left:left + p], hr):
          return n, top, left
  return None


@pytest.mark.parametrize("blur", [False, True])
def test_hr_is_a_crop_and_lr_is_its_degradation(blur):
  src = _random_source(n=3, h=20, w=16)
  batch = _dataset(src, lr_patch=3, scale=4, blur=blur)[1]
  for hr, lr in zip(batch["hr"], batch["lr"]):
    assert _find_crop(src, hr) is not None
    expected = degradation.degrade(hr, 4, blur=blur, lr_hw=(3, 3))
    np.testing.assert_array_equal(lr, expected)


def test_noise_is_added_per_element_and_reproducible():
  src = _random_source()
  clean = _dataset(src, global_batch_size=8)[0]
  noisy = _dataset(src, global_batch_size=8, noise_sigma=0.05)[0]
  np.testing.assert_array_equal(clean["hr"], noisy["hr"])  # Noise is drawn after the crop.
  residual = noisy["lr"] - clean["lr"]
  assert 0.035 < residual.std() < 0.065
  assert not np.allclose(residual[0], residual[1])
  _assert_batches_equal(noisy, _dataset(src, global_batch_size=8, noise_sigma=0.05)[0])


def test_last_crop_position_is_reachable():
  image = (np.arange(25, dtype=np.float32) / 24).reshape(1, 5, 5, 1)
  src = sources.ArraySliceSource(image)
  ds = pipeline.train_elements(src, lr_patch=1, scale=4, seed=0)
  offsets = set()
  for i in range(64):
    hr = ds[i]["hr"]
    assert hr.shape == (4, 4, 1)
    top, left = divmod(int(round(hr[0, 0, 0] * 24)), 5)
    np.testing.assert_array_equal(hr, image[0, top:top + 4, left:left + 4])
    offsets.add((top, left))
  assert offsets == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_small_slices_are_edge_padded():
  image = np.random.default_rng(2).random((1, 3, 2, 1), dtype=np.float32)
  src = sources.ArraySliceSource(image)
  hr = pipeline.train_elements(src, lr_patch=1, scale=4, seed=0)[0]["hr"]
  expected = np.pad(image[0], ((0, 1), (1, 1), (0, 0)), mode="edge")
  np.testing.assert_array_equal(hr, expected)


def test_every_epoch_is_a_new_permutation():
  n = 8
  images = np.broadcast_to((np.arange(n, dtype=np.float32) / n)[:, None, None, None],
                           (n, 8, 8, 1))
  ds = pipeline.train_elements(sources.ArraySliceSource(images), lr_patch=2, scale=2, seed=5)
  order = [int(round(ds[i]["hr"][0, 0, 0] * n)) for i in range(3 * n)]
  epochs = [order[e * n:(e + 1) * n] for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(n))
  assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_same_seed_same_batches_other_seed_different():
  src = _random_source()
  a = _take(pipeline.train_iterator(_dataset(src, seed=7)), 3)
  b = _take(pipeline.train_iterator(_dataset(src, seed=7)), 3)
  c = _take(pipeline.train_iterator(_dataset(src, seed=8)), 3)
  for x, y in zip(a, b):
    _assert_batches_equal(x, y)
  assert not any(np.array_equal(x["hr"], z["hr"]) for x, z in zip(a, c))


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shares_concatenate_to_the_global_batch(process_count):
  src = _random_source()
  single = _take(pipeline.train_iterator(_dataset(src, global_batch_size=8)), 3)
  iters = [pipeline.train_iterator(_dataset(src, global_batch_size=8, process_index=p,
                                            process_count=process_count))
           for p in range(process_count)]
  for k in range(3):
    local = [next(it) for it in iters]
    assert local[0]["hr"].shape[0] == 8 // process_count
    merged = {key: np.concatenate([b[key] for b in local]) for key in ("lr", "hr")}
    _assert_batches_equal(merged, single[k])


def test_batches_match_the_element_stream():
  src = _random_source()
  elements = pipeline.train_elements(src, lr_patch=6, scale=4, seed=3)
  batch = _dataset(src, global_batch_size=4, process_index=1, process_count=2)[2]
  # Local batch k of process p holds global elements [k*B + p*b, k*B + (p+1)*b).
  for j, i in enumerate(range(2 * 4 + 1 * 2, 2 * 4 + 2 * 2)):
    np.testing.assert_array_equal(batch["hr"][j], elements[i]["hr"])
    np.testing.assert_array_equal(batch["lr"][j], elements[i]["lr"])


def test_iterator_state_round_trip():
  src = _random_source()
  ds = _dataset(src, noise_sigma=0.01)
  it = pipeline.train_iterator(ds)
  _take(it, 3)
  state = it.get_state()
  assert state == {"next_index": 3}
  expected = _take(it, 2)
  fresh = pipeline.train_iterator(_dataset(src, noise_sigma=0.01))
  fresh.set_state(state)
  for x, y in zip(_take(fresh, 2), expected):
    _assert_batches_equal(x, y)


def test_prefetch_threads_do_not_change_the_stream():
  src = _random_source()
  plain = _take(pipeline.train_iterator(_dataset(src)), 4)
  threaded = pipeline.train_iterator(_dataset(src), num_threads=2, prefetch_buffer_size=3)
  for x, y in zip(_take(threaded, 4), plain):
    _assert_batches_equal(x, y)
  assert threaded.get_state() == {"next_index": 4}


def test_orbax_composite_checkpoint_restores_the_iterator(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  src = _random_source()
  it = pipeline.train_iterator(_dataset(src), num_threads=2)
  _take(it, 3)
  with ocp.CheckpointManager(tmp_path) as mngr:
    mngr.save(3, args=ocp.args.Composite(
        step=ocp.args.JsonSave({"step": 3}),
        data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  expected = next(it)
  fresh = pipeline.train_iterator(_dataset(src), num_threads=2)
  with ocp.CheckpointManager(tmp_path) as mngr:
    restored = mngr.restore(3, args=ocp.args.Composite(
        step=ocp.args.JsonRestore(),
        data_iter=grain.checkpoint.CheckpointRestore(fresh)))
  assert restored.step == {"step": 3}
  assert fresh.get_state() == {"next_index": 3}
  _assert_batches_equal(next(fresh), expected)


@pytest.mark.parametrize("kwargs", [
    dict(global_batch_size=6, process_count=4),
    dict(process_index=2, process_count=2),
    dict(seed=-1),
    dict(lr_patch=0),
    dict(scale=0),
    dict(noise_sigma=-0.1),
])
def test_bad_settings_raise_input_error(kwargs):
  with pytest.raises(InputError):
    _dataset(_random_source(), **kwargs)


# ---------------------------------------------------------------- test pairs


def test_test_pairs_rdst_x4_gt_is_hr():
  hr = np.random.default_rng(3).random((2, 160, 128, 1), dtype=np.float32)
  lr, gt = pipeline.make_test_pairs(hr, 4)
  assert lr.shape == (2, 40, 32, 1) and lr.dtype == np.float32
  np.testing.assert_array_equal(gt, hr)
  np.testing.assert_allclose(lr, degradation.resize_bicubic(hr, (40, 32)), rtol=0, atol=1e-7)


def test_test_pairs_non_integer_scale_resizes_gt():
  hr = np.random.default_rng(4).random((1, 180, 144, 1), dtype=np.float32)
  lr, gt = pipeline.make_test_pairs(hr, 2.5)
  assert lr.shape == (1, 72, 57, 1) and gt.shape == (1, 180, 142, 1)
  np.testing.assert_allclose(gt, degradation.resize_bicubic(hr, (180, 142)), atol=1e-7)


def test_test_pairs_blur():
  hr = np.random.default_rng(5).random((1, 48, 40, 1), dtype=np.float32)
  lr, _ = pipeline.make_test_pairs(hr, 4, blur=True)
  expected = degradation.gaussian_blur_3x3(degradation.resize_bicubic(hr, (12, 10)))
  np.testing.assert_allclose(lr, expected, atol=1e-7)
  plain, _ = pipeline.make_test_pairs(hr, 4)
  assert not np.allclose(lr, plain)


def test_test_pairs_bad_input():
  with pytest.raises(InputError):
    pipeline.make_test_pairs(np.zeros((16, 16, 1), np.float32), 4)


def test_worker_processes_give_the_same_batches():
  root = pathlib.Path(__file__).resolve().parents[1]
  r = subprocess.run([sys.executable, "-m", "tests.mp_pipeline_check"], cwd=root,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0 and "same batches" in r.stdout, r.stdout + r.stderr[-2000:]
