"""PSNR / SSIM aggregated over evaluation batches and hosts with `clu.metrics`.

`ImageQuality` is a `clu.metrics.Collection`:

  psnr, ssim   `HostAverage`: clu's `Average` (total and count, merged by adding) kept as float64
               numpy on the host, like the scores themselves (`metrics.image_quality` is float64
               numpy; clu's own Average would round them to float32 jax arrays)
  slices       `SliceScores`: clu's `CollectingMetric` of every slice's subject id, slice index,
               PSNR and SSIM (merged by concatenating), for the per-slice and per-subject results

Each evaluation batch gives one collection (`batch_scores`: `image_quality.slice_scores` per
slice, i.e. the ceil(scale) border crop, data range 1, no clipping), merged with clu's
`Collection.merge` in batch order. Each host scores its own share of the test set;
`merge_across_processes` gathers every host's collection (one all-gather of the sizes, one of
the bytes, so float64 and subject names travel exactly) and merges them with the same `merge` in
process order, so every host ends with the same collection. `summary` gives the numbers a results
file needs: pooled mean (the Average) and std (numpy's population std of the slices, as
`image_quality.summarise`), per subject, and per slice sorted by (subject, slice index), so the
per-slice and per-subject output does not depend on batching or on the number of hosts.

Usage (evaluation, one collection per method):
  metrics = aggregate.ImageQuality.empty()
  for hr, sr, subjects, slice_ids in batches:           # this host's share
    metrics = metrics.merge(aggregate.batch_scores(hr, sr, scale, subjects=subjects,
                                                   slice_indices=slice_ids))
  metrics = aggregate.merge_across_processes(metrics)   # no-op on one process
  results = aggregate.summary(metrics)                  # pooled / per_subject / per_slice

Run: .venv/bin/python -m pytest -q tests/test_aggregate.py
"""

# No `from __future__ import annotations`: clu's Collection reads its metric classes from
# `__annotations__`, which must hold the classes themselves.

import math
from typing import Any, Callable, Optional, Sequence

import flax
import jax
import numpy as np
from clu import metrics as clu_metrics

from medsr_jax.errors import InputError
from medsr_jax.metrics import image_quality


@flax.struct.dataclass
class HostAverage(clu_metrics.Average):
  """clu's `Average` with a float64 total and an int64 count as numpy scalars (host side)."""

  @classmethod
  def empty(cls) -> "HostAverage":
    return cls(total=np.zeros((), np.float64), count=np.zeros((), np.int64))

  @classmethod
  def from_values(cls, values) -> "HostAverage":
    values = np.asarray(values, np.float64).reshape(-1)
    return cls(total=np.asarray(values.sum(), np.float64), count=np.asarray(values.size, np.int64))

  def compute(self) -> float:
    count = int(self.count)
    return float(self.total) / count if count else math.nan


@flax.struct.dataclass
class PSNRAverage(HostAverage):
  """Mean PSNR (dB) over slices: `from_model_output(psnr=...)`."""

  @classmethod
  def from_model_output(cls, *, psnr, **_) -> "PSNRAverage":
    return cls.from_values(psnr)


@flax.struct.dataclass
class SSIMAverage(HostAverage):
  """Mean SSIM over slices: `from_model_output(ssim=...)`."""

  @classmethod
  def from_model_output(cls, *, ssim, **_) -> "SSIMAverage":
    return cls.from_values(ssim)


_SLICE_FIELDS = {"subject": np.str_, "slice_index": np.int64, "psnr": np.float64,
                 "ssim": np.float64}


@flax.struct.dataclass
class SliceScores(clu_metrics.CollectingMetric):
  """clu's `CollectingMetric` of (subject, slice_index, psnr, ssim) per slice, numpy on the host
  (float64 scores, str subject ids)."""

  @classmethod
  def empty(cls) -> "SliceScores":
    return cls(values={k: (np.zeros((0,), t),) for k, t in _SLICE_FIELDS.items()})

  @classmethod
  def from_model_output(cls, *, subject, slice_index, psnr, ssim, **_) -> "SliceScores":
    given = {"subject": subject, "slice_index": slice_index, "psnr": psnr, "ssim": ssim}
    arrays = {k: np.asarray(v, _SLICE_FIELDS[k]).reshape(-1) for k, v in given.items()}
    if len({a.shape for a in arrays.values()}) != 1:
      raise InputError("subject, slice_index, psnr and ssim need one entry per slice, got "
                       f"{ {k: a.size for k, a in arrays.items()} }")
    return cls(values={k: (a,) for k, a in arrays.items()})

  def compute(self) -> dict[str, np.ndarray]:
    return {k: np.concatenate([np.asarray(v, _SLICE_FIELDS[k]) for v in self.values[k]])
            for k in _SLICE_FIELDS}


@flax.struct.dataclass
class ImageQuality(clu_metrics.Collection):
  """Pooled PSNR / SSIM means and the per-slice scores (see the module docstring)."""
  psnr: PSNRAverage
  ssim: SSIMAverage
  slices: SliceScores


def batch_scores(gt, pred, scale: float, *, subjects: Sequence[str],
                 slice_indices: Sequence[int]) -> ImageQuality:
  """The collection of one batch: `image_quality.slice_scores(gt[i], pred[i], scale)` per slice
  of the (N, H, W[, C]) arrays, with each slice's subject id and slice index."""
  gt, pred = np.asarray(gt), np.asarray(pred)
  if gt.shape != pred.shape or gt.ndim not in (3, 4):
    raise InputError(f"batch_scores needs two equal (N, H, W[, C]) batches, got {gt.shape} and "
                     f"{pred.shape}")
  pairs = [image_quality.slice_scores(g, p, scale) for g, p in zip(gt, pred)]
  return ImageQuality.single_from_model_output(
      psnr=np.array([p for p, _ in pairs], np.float64),
      ssim=np.array([s for _, s in pairs], np.float64),
      subject=np.asarray([str(s) for s in subjects], np.str_),
      slice_index=np.asarray(slice_indices, np.int64))


def from_scores(psnr, ssim, *, subjects: Sequence[str], slice_indices: Sequence[int]
                ) -> ImageQuality:
  """The collection of already computed per-slice scores (e.g. `evaluate.Scores`)."""
  return ImageQuality.single_from_model_output(
      psnr=np.asarray(psnr, np.float64), ssim=np.asarray(ssim, np.float64),
      subject=np.asarray([str(s) for s in subjects], np.str_),
      slice_index=np.asarray(slice_indices, np.int64))


# ---------------------------------------------------------------------------------------------
# Across hosts.

Gather = Callable[[np.ndarray], np.ndarray]  # local (...) -> (num_processes, ...), all hosts


def _default_gather(x: np.ndarray) -> np.ndarray:
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(x, tiled=False))


def _to_arrays(c: ImageQuality) -> list[np.ndarray]:
  slices = c.slices.compute()
  return ([np.reshape(np.asarray(m.total, np.float64), 1) for m in (c.psnr, c.ssim)] +
          [np.reshape(np.asarray(m.count, np.int64), 1) for m in (c.psnr, c.ssim)] +
          [slices[k] for k in _SLICE_FIELDS])


def _from_arrays(a: list[np.ndarray]) -> ImageQuality:
  psnr_total, ssim_total, psnr_count, ssim_count = (x[0] for x in a[:4])
  slices = dict(zip(_SLICE_FIELDS, a[4:]))
  counter = ImageQuality.empty()._reduction_counter  # pylint: disable=protected-access
  return ImageQuality(
      _reduction_counter=counter,
      psnr=PSNRAverage(total=np.asarray(psnr_total), count=np.asarray(psnr_count)),
      ssim=SSIMAverage(total=np.asarray(ssim_total), count=np.asarray(ssim_count)),
      slices=SliceScores(values={k: (v,) for k, v in slices.items()}))


def allgather_arrays(arrays: Sequence[np.ndarray], gather: Gather) -> list[list[np.ndarray]]:
  """Every process's `arrays` (1-D numpy arrays of any length; numbers or str), exactly: their
  bytes are gathered, so float64 and int64 survive a JAX without x64. Two collectives (sizes,
  then the padded bytes). Returns [process][array]."""
  arrays = [np.ascontiguousarray(np.asarray(a).reshape(-1)) for a in arrays]
  meta = np.array([[a.shape[0], a.dtype.itemsize] for a in arrays], np.int32)
  metas = np.asarray(gather(meta))  # (P, k, 2)
  dtypes = []
  for i, a in enumerate(arrays):
    widest = int(metas[:, i, 1].max())
    if a.dtype.kind == "U":
      dtypes.append(np.dtype(f"<U{max(1, widest // 4)}"))
    elif a.dtype.kind == "S":
      dtypes.append(np.dtype(f"S{max(1, widest)}"))
    else:
      dtypes.append(a.dtype)
  lengths = [sum(int(m[i, 0]) * dtypes[i].itemsize for i in range(len(arrays))) for m in metas]
  buf = np.zeros(max(1, max(lengths)), np.uint8)
  local = b"".join(a.astype(d).tobytes() for a, d in zip(arrays, dtypes))
  buf[:len(local)] = np.frombuffer(local, np.uint8)
  bufs = np.asarray(gather(buf))  # (P, max_len)
  out = []
  for m, b in zip(metas, bufs):
    pos, parts = 0, []
    for i, d in enumerate(dtypes):
      n = int(m[i, 0]) * d.itemsize
      parts.append(np.frombuffer(b[pos:pos + n].tobytes(), d).copy())
      pos += n
    out.append(parts)
  return out


def merge_across_processes(collection: ImageQuality, *, gather: Optional[Gather] = None
                           ) -> ImageQuality:
  """Every host's collection merged (clu's `merge`, in process order) on every host.

  One process and no `gather`: the collection itself. `gather(x)` must return every process's
  `x` stacked on a new first axis (default: `jax.experimental.multihost_utils.process_allgather`,
  which every process must call).
  """
  if gather is None:
    if jax.process_count() == 1:
      return collection
    gather = _default_gather
  merged = None
  for arrays in allgather_arrays(_to_arrays(collection), gather):
    part = _from_arrays(arrays)
    merged = part if merged is None else merged.merge(part)
  return merged


# ---------------------------------------------------------------------------------------------
# Results.


def _stats(psnr: np.ndarray, ssim: np.ndarray) -> dict[str, Any]:
  return {"psnr_mean": float(np.mean(psnr)) if psnr.size else math.nan,
          "psnr_std": float(np.std(psnr)) if psnr.size else math.nan,
          "ssim_mean": float(np.mean(ssim)) if ssim.size else math.nan,
          "ssim_std": float(np.std(ssim)) if ssim.size else math.nan,
          "slices": int(psnr.size)}


def summary(collection: ImageQuality) -> dict[str, Any]:
  """{'pooled': {psnr_mean, psnr_std, ssim_mean, ssim_std, slices},
      'per_subject': {subject: the same over its slices},   (subjects sorted)
      'per_slice': {'subject', 'slice_index', 'psnr', 'ssim': lists sorted by subject, slice}}

  The pooled means are the clu Averages (batch sums, float64); the stds numpy's population std
  of the collected slices (`image_quality.summarise`).
  """
  values = collection.compute()
  s = values["slices"]
  order = np.lexsort((s["slice_index"], s["subject"]))  # last key first: subject, then slice
  s = {k: v[order] for k, v in s.items()}
  pooled = _stats(s["psnr"], s["ssim"])
  pooled["psnr_mean"], pooled["ssim_mean"] = values["psnr"], values["ssim"]
  pooled["slices"] = int(collection.psnr.count)
  per_subject = {}
  for subject in sorted(set(s["subject"].tolist())):
    mask = s["subject"] == subject
    per_subject[subject] = _stats(s["psnr"][mask], s["ssim"][mask])
  return {"pooled": pooled, "per_subject": per_subject,
          "per_slice": {"subject": s["subject"].tolist(),
                        "slice_index": [int(i) for i in s["slice_index"]],
                        "psnr": [float(v) for v in s["psnr"]],
                        "ssim": [float(v) for v in s["ssim"]]}}
