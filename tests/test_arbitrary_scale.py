"""Tests of the arbitrary-scale batches (medsr_jax.data.arbitrary_scale) and multi-scale test pairs.

  .venv/bin/python -m pytest -q tests/test_arbitrary_scale.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax.data import arbitrary_scale as ars
from medsr_jax.data import degradation, pipeline, sources
from medsr_jax.errors import InputError


def _source(n=5, h=100, w=100, seed=0):
  return sources.ArraySliceSource(
      np.random.default_rng(seed).random((n, h, w, 1), dtype=np.float32))


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_thesis_scales_and_patch_sizes():
  assert ars.THESIS_SCALES == (1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1, 2.2, 2.3,
                               2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6,
                               3.7, 3.8, 3.9, 4.0)
  # Reference spec §4.3 examples.
  assert ars.patch_sizes(96, 2.3) == (41, 94)
  assert ars.patch_sizes(96, 1.1) == (87, 95)
  assert ars.patch_sizes(96, 4.0) == (24, 96)
  shapes = {(v['lr'], v['hr']) for v in ars.batch_shapes(16).values()}
  assert len(shapes) == 30


def test_permutation_schedule_covers_every_scale_each_epoch():
  sched = ars.ScaleSchedule(seed=3)
  epochs = [[sched(k) for k in range(e * 30, (e + 1) * 30)] for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(ars.THESIS_SCALES)
  assert epochs[0] != epochs[1] != epochs[2]
  assert [ars.ScaleSchedule(seed=3)(k) for k in range(30)] == epochs[0]
  assert [ars.ScaleSchedule(seed=4)(k) for k in range(30)] != epochs[0]


def test_iid_schedule_is_seeded_and_not_balanced():
  a = [ars.ScaleSchedule(seed=1, mode='iid')(k) for k in range(300)]
  assert a == [ars.ScaleSchedule(seed=1, mode='iid')(k) for k in range(300)]
  assert set(a) <= set(ars.THESIS_SCALES)
  assert len(set(a[:30])) < 30  # iid draws repeat scales within 30 batches (seed-specific)


@pytest.mark.parametrize('kwargs', [dict(scales=()), dict(scales=(2.0, 2.0)),
                                    dict(scales=(-1.0,)), dict(mode='cyclic')])
def test_bad_schedules(kwargs):
  with pytest.raises(InputError):
    ars.ScaleSchedule(**kwargs)


def test_elements_follow_the_reference_synthesis():
  image = np.random.default_rng(1).random((1, 96, 96, 1), dtype=np.float32)
  ds = ars.make_train_dataset(sources.ArraySliceSource(image), global_batch_size=2, seed=0)
  sched = ars.ScaleSchedule(seed=ars.schedule_seed(0))
  for k in range(4):
    batch = ds[k]
    s = sched(k)
    l, h = ars.patch_sizes(96, s)
    assert batch['lr'].shape == (2, l, l, 1) and batch['hr'].shape == (2, h, h, 1)
    np.testing.assert_array_equal(batch['scale'], np.float32([s, s]))
    # The slice is the whole 96x96 patch (exclusive randint(0, 0) -> 0).
    lr = degradation.gaussian_blur_3x3(degradation.resize_bicubic(image[0], (l, l)))
    hr = image[0] if h == 96 else degradation.resize_bicubic(image[0], (h, h))
    np.testing.assert_allclose(batch['lr'][0], lr, atol=1e-6)
    np.testing.assert_allclose(batch['hr'][1], hr, atol=1e-6)


def test_crop_excludes_the_last_position_like_the_reference():
  image = (np.arange(97 * 96, dtype=np.float32) / (97 * 96)).reshape(1, 97, 96, 1)
  ds = ars.train_elements(sources.ArraySliceSource(image), global_batch_size=1, seed=0,
                          scales=(4.0,))
  assert all(ds[i]['hr'][0, 0, 0] == 0 for i in range(16))  # top 0 only: randint(0, 1)
  ds = ars.train_elements(sources.ArraySliceSource(image), global_batch_size=1, seed=0,
                          scales=(4.0,), include_last=True)
  assert any(ds[i]['hr'][0, 0, 0] > 0 for i in range(16))


def test_compiles_are_bounded_by_the_scales_and_done_after_one_epoch():
  traces = []

  @jax.jit
  def step(w, batch):
    """A tiny conv + meta-style resize to the HR grid: every shape follows the batch."""
    traces.append(batch['lr'].shape)
    feat = jax.lax.conv_general_dilated(batch['lr'], w, (1, 1), 'SAME',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    sr = jax.image.resize(feat, batch['hr'].shape, 'nearest') * batch['scale'][:, None, None,
                                                                                 None]
    return jnp.mean((sr - batch['hr']) ** 2)

  w = jnp.ones((3, 3, 1, 1), jnp.float32) / 9
  ds = ars.make_train_dataset(_source(), global_batch_size=2, seed=0)
  it = pipeline.train_iterator(ds)
  shapes = set()
  for _ in range(30):
    batch = next(it)
    shapes.add((batch['lr'].shape, batch['hr'].shape))
    step(w, batch)
  assert len(shapes) == 30 and len(traces) == 30  # every scale in the first epoch of scales
  for _ in range(30):
    step(w, next(it))
  assert len(traces) == 30  # no compile after the first epoch of scales


def test_process_counts_give_the_same_global_batches():
  src = _source()
  single = _take(pipeline.train_iterator(ars.make_train_dataset(src, global_batch_size=4,
                                                                seed=2)), 3)
  iters = [pipeline.train_iterator(ars.make_train_dataset(src, global_batch_size=4, seed=2,
                                                          process_index=p, process_count=2))
           for p in range(2)]
  for k in range(3):
    local = [next(it) for it in iters]
    for key in ('lr', 'hr', 'scale'):
      np.testing.assert_array_equal(np.concatenate([b[key] for b in local]), single[k][key])


def test_iterator_state_resumes_exactly():
  src = _source()
  it = pipeline.train_iterator(ars.make_train_dataset(src, global_batch_size=2, seed=1,
                                                      schedule='iid'), num_threads=2)
  _take(it, 5)
  state = it.get_state()
  expected = _take(it, 3)
  fresh = pipeline.train_iterator(ars.make_train_dataset(src, global_batch_size=2, seed=1,
                                                         schedule='iid'))
  fresh.set_state(state)
  for x, y in zip(_take(fresh, 3), expected):
    for key in ('lr', 'hr', 'scale'):
      np.testing.assert_array_equal(x[key], y[key])


def test_dataset_from_config():
  import ml_collections  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict(dict(scales=(2.0, 4.0), scale_schedule='permutation',
                                       lr_patch=6, global_batch_size=2, blur=True,
                                       noise_sigma=0.0))
  ds = ars.dataset_from_config(cfg, _source(h=40, w=40), seed=0)
  sizes = {ds[k]['hr'].shape[1] for k in range(2)}
  assert sizes == {24} and {ds[k]['lr'].shape[1] for k in range(2)} == {6, 12}


# ---------------------------------------------------------------- multi-scale test pairs


def test_rdst_test_pairs_one_lr_for_every_scale():
  hr = np.random.default_rng(3).random((2, 160, 128, 1), dtype=np.float32)
  lr, gts = pipeline.rdst_test_pairs(hr, ars.TEST_SCALES)
  assert lr.shape == (2, 40, 32, 1)
  np.testing.assert_allclose(lr, degradation.resize_bicubic(hr, (40, 32)), atol=1e-7)
  assert {s: g.shape[1:3] for s, g in gts.items()} == {
      1.5: (60, 48), 2.0: (80, 64), 2.5: (100, 80), 3.0: (120, 96), 3.5: (140, 112),
      4.0: (160, 128)}
  np.testing.assert_array_equal(gts[4.0], hr)
  np.testing.assert_allclose(gts[2.5], degradation.resize_bicubic(hr, (100, 80)), atol=1e-7)


def test_miassr_test_pairs_per_scale_with_blur():
  hr = np.random.default_rng(4).random((1, 180, 144, 1), dtype=np.float32)
  pairs = pipeline.miassr_test_pairs(hr, ars.TEST_SCALES)
  shapes = {s: (lr.shape[1:3], gt.shape[1:3]) for s, (lr, gt) in pairs.items()}
  # Reference spec §4.4 (180x144).
  assert shapes[1.5] == ((120, 96), (180, 144))
  assert shapes[2.5] == ((72, 57), (180, 142))
  assert shapes[3.5] == ((51, 41), (178, 143))
  assert shapes[4.0] == ((45, 36), (180, 144))
  lr, gt = pairs[2.5]
  np.testing.assert_allclose(
      lr, degradation.gaussian_blur_3x3(degradation.resize_bicubic(hr, (72, 57))), atol=1e-7)
  np.testing.assert_allclose(gt, degradation.resize_bicubic(hr, (180, 142)), atol=1e-7)
