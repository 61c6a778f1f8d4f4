"""Random-access sources of training slices for grain (`grain.MapDataset.source(...)`).

A source is anything with `__len__` and `__getitem__(i) -> (H, W, C) float32 slice in [0, 1]`.
The pipeline (`medsr_jax.data.pipeline`) only relies on those two methods, so the in-memory
`ArraySliceSource` used for the embedded sample and the TFRecord-shard source (written by
`data_prep`, read with an offset index: `medsr_jax.data.shards.ShardSource`) are
interchangeable. Sources must pickle cheaply enough to be sent to grain worker processes
(`mp_prefetch`).

`source_from_config(config.data, split)` picks the source named by the config:
  path=DIR         a data_prep shard directory (any `source`): the train split is read lazily
                   from the shards, val / test come from the manifest's splits, in memory;
  source='sample'  (no path) the embedded single-subject slices (`medsr_jax.data.sample`),
                   cropped to `crop_hw` (160x128: the OASIS protocol of reference spec §4.2).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_pipeline.py
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from medsr_jax.errors import InputError

SPLITS = ("train", "val", "test")


class ArraySliceSource:
  """In-memory slices (N, H, W, C) as a grain random-access source.

  `source[i]` is the (H, W, C) float32 slice i (a read-only view, no copy). Negative indices
  count from the end, like a list; indices outside [-N, N) raise IndexError. Optional metadata
  for evaluation reports: `slice_index` ((N,) position of each slice in its volume) and
  `subject` (a subject id, or one per slice); the pipeline does not use them.
  """

  def __init__(self, images: np.ndarray, *, slice_index: Optional[np.ndarray] = None,
               subject: Any = None):
    images = np.asarray(images)
    if images.ndim != 4:
      raise InputError(
          f"ArraySliceSource expects slices shaped (N, H, W, C), got shape {images.shape}")
    if images.shape[0] == 0:
      raise InputError("ArraySliceSource needs at least one slice, got 0")
    if not np.issubdtype(images.dtype, np.floating):
      raise InputError(f"ArraySliceSource expects float images in [0, 1], got {images.dtype}")
    images = np.ascontiguousarray(images, dtype=np.float32)
    images.setflags(write=False)
    self._images = images
    if slice_index is not None:
      slice_index = np.asarray(slice_index)
      if slice_index.shape != (images.shape[0],):
        raise InputError(f"slice_index has shape {slice_index.shape}, expected "
                         f"({images.shape[0]},)")
    self.slice_index = slice_index
    self.subject = subject

  def __len__(self) -> int:
    return int(self._images.shape[0])

  def __getitem__(self, index: int) -> np.ndarray:
    return self._images[int(index)]

  @property
  def slice_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of every slice."""
    return tuple(int(v) for v in self._images.shape[1:])

  def __repr__(self) -> str:
    return f"ArraySliceSource(num_slices={len(self)}, slice_shape={self.slice_shape})"

  # Pickle the array itself (grain sends sources to worker processes); the read-only flag is
  # restored on load.
  def __getstate__(self) -> dict[str, Any]:
    return {"images": self._images, "slice_index": self.slice_index, "subject": self.subject}

  def __setstate__(self, state: dict[str, Any]) -> None:
    images = np.asarray(state["images"])
    images.setflags(write=False)
    self._images = images
    self.slice_index = state.get("slice_index")
    self.subject = state.get("subject")


def source_from_config(data_config: Any, split: str) -> Any:
  """The random-access source of `split` ('train', 'val' or 'test') named by `data_config`.

  Fields read: `path` (a shard directory: selects the shards whatever `source` says), `source`
  ('sample' without a path), `crop_hw` (the in-plane size of the sample slices; shards keep the
  size data_prep wrote) and `modalities` (channels to pick from the shards, all when empty).
  From shards, 'train' is a lazy `shards.ShardSource` and 'val' / 'test' are read into memory
  (`shards.load_split`, with slice indices and subjects for the reports).
  """
  if split not in SPLITS:
    raise InputError(f"unknown data split {split!r}; expected one of {SPLITS}")
  path = str(data_config.get("path", "") or "")
  if path:
    from medsr_jax.data import shards  # pylint: disable=g-import-not-at-top  (import cycle)
    modalities = tuple(data_config.get("modalities", ()) or ())
    if split == "train":
      return shards.ShardSource(path, split, modalities=modalities)
    return shards.load_split(path, split, modalities=modalities)
  kind = data_config.source
  if kind != "sample":
    raise InputError(f"data source {kind!r} needs --config.data.path=SHARD_DIR (a data_prep "
                     "shard directory); without a path only 'sample' (the embedded slices) is "
                     "available")
  from medsr_jax.data import sample  # pylint: disable=g-import-not-at-top  (loads files)
  crop_hw = tuple(int(v) for v in data_config.crop_hw)
  sets = sample.load_sample(crop_hw=crop_hw)
  chosen = sets[split]
  return ArraySliceSource(chosen.images, slice_index=getattr(chosen, "slice_index", None),
                          subject=getattr(chosen, "subject", None))
