"""`ArraySliceSource`: in-memory (N, H, W, C) slices as a grain random-access source.

Its own module so that the shard reader (`medsr_jax.data.shards.load_split` returns one) need
not import `medsr_jax.data.sources`, whose `source_from_config` imports the shard reader:
imports run one way, sources -> shards -> array_source. `medsr_jax.data.sources.ArraySliceSource`
is the same class (re-exported there).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_pipeline.py tests/test_shards.py
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from medsr_jax.errors import InputError


class ArraySliceSource:
  """In-memory slices (N, H, W, C) as a grain random-access source.

  `source[i]` is the (H, W, C) float32 slice i (a read-only view, no copy). Negative indices
  count from the end, like a list; indices outside [-N, N) raise IndexError. Optional metadata
  for evaluation reports: `slice_index` ((N,) position of each slice in its volume) and
  `subject` (a subject id, or one per slice); the pipeline does not use them.

  Labels (lesion-focused ROI crops, thesis §3.2.2): `labels` (N, H, W) uint8 maps on the slices'
  grid. With `with_label=True`, `source[i]` is {'image': slice, 'label': label map} instead, the
  item of `shards.ShardSource(..., with_label=True)`.
  """

  def __init__(self, images: np.ndarray, *, slice_index: Optional[np.ndarray] = None,
               subject: Any = None, labels: Optional[np.ndarray] = None,
               with_label: bool = False):
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
    if labels is not None:
      labels = np.asarray(labels)
      if labels.shape != images.shape[:3] or labels.dtype != np.uint8:
        raise InputError(f"labels must be uint8 {images.shape[:3]}, got {labels.dtype} "
                         f"{labels.shape}")
      labels.setflags(write=False)
    elif with_label:
      raise InputError("with_label=True needs the label maps (labels=...)")
    self.labels, self.with_label = labels, bool(with_label)

  def with_labels(self) -> "ArraySliceSource":
    """The same slices as a source of {'image', 'label'} items."""
    return ArraySliceSource(self._images, slice_index=self.slice_index, subject=self.subject,
                            labels=self.labels, with_label=True)

  def __len__(self) -> int:
    return int(self._images.shape[0])

  def __getitem__(self, index: int) -> Any:
    if self.with_label:
      return {"image": self._images[int(index)], "label": self.labels[int(index)]}
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
    return {"images": self._images, "slice_index": self.slice_index, "subject": self.subject,
            "labels": self.labels, "with_label": self.with_label}

  def __setstate__(self, state: dict[str, Any]) -> None:
    images = np.asarray(state["images"])
    images.setflags(write=False)
    self._images = images
    self.slice_index = state.get("slice_index")
    self.subject = state.get("subject")
    self.labels, self.with_label = state.get("labels"), bool(state.get("with_label", False))
    if self.labels is not None:
      self.labels = np.asarray(self.labels)
      self.labels.setflags(write=False)
