"""Tests for medsr_jax.metrics.aggregate: clu.metrics collections of PSNR / SSIM over batches
and hosts.

Run: .venv/bin/python -m pytest -q tests/test_aggregate.py
"""

import threading

import numpy as np
import pytest

from medsr_jax.errors import InputError
from medsr_jax.metrics import aggregate, image_quality


def _data(n=7, seed=0):
  rng = np.random.default_rng(seed)
  hr = rng.random((n, 16, 16, 1))
  sr = np.clip(hr + rng.normal(0, 0.05, hr.shape), -0.1, 1.1)
  subjects = ["OAS1_0001_MR1"] * 3 + ["s2"] * (n - 3)
  slices = list(range(10, 13)) + list(range(n - 3))
  return hr, sr, subjects, slices


def _collect(hr, sr, subjects, slices, batch, order=None):
  order = list(range(0, len(hr), batch)) if order is None else order
  metrics = aggregate.ImageQuality.empty()
  for i in order:
    part = slice(i, i + batch)
    metrics = metrics.merge(aggregate.batch_scores(hr[part], sr[part], 2, subjects=subjects[part],
                                                   slice_indices=slices[part]))
  return metrics


def test_batches_merge_to_the_whole_set():
  hr, sr, subjects, slices = _data()
  pairs = [image_quality.slice_scores(g, p, 2) for g, p in zip(hr, sr)]
  psnr, ssim = np.array([p for p, _ in pairs]), np.array([s for _, s in pairs])
  result = aggregate.summary(_collect(hr, sr, subjects, slices, batch=3))
  pooled = result["pooled"]
  assert pooled["slices"] == 7
  assert pooled["psnr_mean"] == pytest.approx(np.mean(psnr), rel=1e-13)
  assert pooled["ssim_mean"] == pytest.approx(np.mean(ssim), rel=1e-13)
  assert pooled["psnr_std"] == image_quality.summarise(psnr)[1]
  assert pooled["ssim_std"] == image_quality.summarise(ssim)[1]
  assert list(result["per_subject"]) == ["OAS1_0001_MR1", "s2"]
  s2 = result["per_subject"]["s2"]
  assert s2["slices"] == 4 and s2["psnr_mean"] == np.mean(psnr[3:])
  per_slice = result["per_slice"]
  assert per_slice["psnr"] == psnr.tolist() and per_slice["ssim"] == ssim.tolist()
  # Another batching, batches in another order: the per-slice output is the same (sorted).
  shuffled = aggregate.summary(_collect(hr, sr, subjects, slices, batch=2, order=[6, 2, 0, 4]))
  assert shuffled["per_slice"] == per_slice
  assert shuffled["per_subject"] == result["per_subject"]
  assert shuffled["pooled"]["psnr_mean"] == pytest.approx(pooled["psnr_mean"], rel=1e-13)


def test_scores_given_and_empty_collection():
  c = aggregate.from_scores([30.0, 32.0], [0.9, 0.8], subjects=["a", "a"], slice_indices=[1, 0])
  result = aggregate.summary(c)
  assert result["pooled"]["psnr_mean"] == 31.0 and result["pooled"]["slices"] == 2
  assert result["per_slice"]["slice_index"] == [0, 1] and result["per_slice"]["psnr"] == [32, 30]
  empty = aggregate.summary(aggregate.ImageQuality.empty())
  assert empty["pooled"]["slices"] == 0 and np.isnan(empty["pooled"]["psnr_mean"])
  with pytest.raises(InputError, match="one entry per slice"):
    aggregate.from_scores([1.0], [1.0, 2.0], subjects=["a"], slice_indices=[0])
  with pytest.raises(InputError, match="equal"):
    aggregate.batch_scores(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)), 2, subjects=["a", "a"],
                           slice_indices=[0, 1])


class _FakeProcesses:
  """An all-gather between threads: each thread is one 'process'."""

  def __init__(self, n):
    self.barrier = threading.Barrier(n)
    self.slots = [None] * n

  def gather(self, rank):
    def fn(x):
      self.slots[rank] = np.asarray(x)
      self.barrier.wait()
      out = np.stack(self.slots)  # equal shapes, as a real all-gather requires
      self.barrier.wait()  # everyone has read before the next call overwrites
      return out
    return fn


def test_merge_across_processes_equals_one_process():
  hr, sr, subjects, slices = _data(n=9, seed=1)
  subjects = subjects[:3] + ["a-much-longer-subject-id"] * 6  # str widths differ per host
  whole = aggregate.summary(_collect(hr, sr, subjects, slices, batch=4))
  shares = [(0, 2), (2, 2), (2, 9)]  # host 1 has no slices at all
  fake = _FakeProcesses(len(shares))
  results = [None] * len(shares)

  def run(rank):
    lo, hi = shares[rank]
    local = _collect(hr[lo:hi], sr[lo:hi], subjects[lo:hi], slices[lo:hi], batch=2)
    merged = aggregate.merge_across_processes(local, gather=fake.gather(rank))
    results[rank] = aggregate.summary(merged)

  threads = [threading.Thread(target=run, args=(r,)) for r in range(len(shares))]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=30)
  for result in results:
    assert result == results[0]  # every host ends with the same numbers
    assert result["per_slice"] == whole["per_slice"]
    assert result["per_subject"] == whole["per_subject"]
    assert result["pooled"]["slices"] == 9
    assert result["pooled"]["psnr_mean"] == pytest.approx(whole["pooled"]["psnr_mean"], rel=1e-13)


def test_one_process_and_the_real_all_gather_keep_float64_and_names():
  c = aggregate.from_scores([1 / 3, 40.125], [0.1, 2 / 3], subjects=["ü-subject", "b"],
                            slice_indices=[2**40, 3])
  assert aggregate.merge_across_processes(c) is c  # one process: nothing to do
  gathered = aggregate.merge_across_processes(
      c, gather=aggregate._default_gather)  # pylint: disable=protected-access
  assert aggregate.summary(gathered) == aggregate.summary(c)  # bit-exact through jax (no x64)
