"""Shard directories for tests, written directly in the data_prep format from the embedded sample.

`write_shards(directory, ...)` writes what `data_prep` writes (manifest.json, TFRecord shards of
slice records, one offset index per shard) from `medsr_jax.data.sample`, without data_prep:
records via `records.encode_slice`, framing via `io.tfrecord.TFRecordWriter`, offsets via
`np.save`, the manifest via `manifest.write_manifest`. It returns the slices it wrote per split,
in record order, for comparison.

Multi-channel fixtures (BraTS-like) derive extra channels from the T1 (`synthetic_channels`).
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np

from medsr_jax.data import manifest as manifest_lib
from medsr_jax.data import records, sample
from medsr_jax.io import tfrecord


def synthetic_channels(t1: np.ndarray, modalities: Sequence[str]) -> np.ndarray:
  """(N, H, W, 1) T1 -> (N, H, W, len(modalities)): T1, its square, 1 - T1, sqrt(T1), ..."""
  makers = [lambda x: x, np.square, lambda x: 1.0 - x, np.sqrt]
  chans = [makers[k % len(makers)](t1[..., 0]) for k in range(len(modalities))]
  return np.stack(chans, axis=-1).astype(np.float32)


def write_split_shards(directory: str, split: str, n_shards: int, images: np.ndarray,
                       labels: np.ndarray | None, slice_index: Sequence[int], *, subject: str,
                       modalities: Sequence[str], dataset: str) -> list:
  """Writes one split's slices as `n_shards` TFRecord shards with offset indexes; returns the
  manifest's `Shard` entries."""
  shards = []
  for i, rows in enumerate(np.array_split(np.arange(len(images)), n_shards)):
    name = manifest_lib.shard_name(split, i, n_shards)
    path = os.path.join(directory, name)
    with tfrecord.TFRecordWriter(path) as writer:
      offsets = [writer.write(records.encode_slice(records.SliceRecord(
          image=images[r], subject=subject, slice_index=int(slice_index[r]),
          spacing=(1.0, 1.0, 1.0), affine=np.eye(4), orientation='RAS',
          modalities=list(modalities), intensity=(0.0, 1.0), dataset=dataset,
          label=None if labels is None else labels[r]))) for r in rows]
    np.save(path + manifest_lib.INDEX_SUFFIX, np.asarray(offsets, np.int64))
    with open(path, 'rb') as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    shards.append(manifest_lib.Shard(name, name + manifest_lib.INDEX_SUFFIX, len(rows), digest))
  return shards


def write_shards(directory: str | os.PathLike, *, crop_hw: Sequence[int] = (32, 32),
                 num_shards: dict[str, int] | None = None, dataset: str = 'oasis',
                 protocol: str = 'rdst', modalities: Sequence[str] = ('t1',),
                 with_labels: bool = True, complete: bool = True,
                 max_slices: dict[str, int] | None = None,
                 repeat: int = 1) -> dict[str, np.ndarray]:
  """Writes a shard directory of the sample's train/val/test slices; returns {split: images}.

  `repeat` > 1 writes every split's slices that many times over (a larger fixture for the
  benchmark); `max_slices` then caps the count.
  """
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  num_shards = num_shards or {'train': 3, 'val': 1, 'test': 1}
  sets = sample.load_sample(crop_hw=tuple(crop_hw))
  splits, written = {}, {}
  for split, n_shards in num_shards.items():
    chosen = sets[split]
    n = len(chosen) * repeat
    if max_slices and split in max_slices:
      n = min(n, max_slices[split])
    rows_of = np.arange(n) % len(chosen)
    images = synthetic_channels(chosen.images[rows_of], modalities)
    labels, slice_index = chosen.labels[rows_of], chosen.slice_index[rows_of]
    shards = write_split_shards(directory, split, n_shards, images,
                                labels if with_labels else None, slice_index,
                                subject=sample.SUBJECT, modalities=modalities, dataset=dataset)
    splits[split] = manifest_lib.Split([sample.SUBJECT], n, shards)
    written[split] = images
  m = manifest_lib.Manifest(
      dataset=dataset, protocol=protocol, settings={'crop_hw': list(crop_hw), 'fixture': True},
      channels=len(modalities), modalities=list(modalities), has_labels=with_labels,
      slice_shape=[int(crop_hw[0]), int(crop_hw[1]), len(modalities)], splits=splits,
      sources=[str(sample.SAMPLE_DIR)], complete=complete)
  manifest_lib.write_manifest(directory, m)
  return written
