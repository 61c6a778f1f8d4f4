"""Random-access sources of training slices for grain (`grain.MapDataset.source(...)`).

A source is anything with `__len__` and `__getitem__(i) -> (H, W, C) float32 slice in [0, 1]`.
The pipeline (`medsr_jax.data.pipeline`) only relies on those two methods, so the in-memory
`ArraySliceSource` used for the embedded sample and the TFRecord-shard source (written by
`data_prep`, read with an offset index: `medsr_jax.data.shards.ShardSource`) are
interchangeable. Sources must pickle cheaply enough to be sent to grain worker processes
(`mp_prefetch`).

Imports run one way: this module -> `shards` -> `array_source` (where `ArraySliceSource` lives;
it is re-exported here), so neither `shards` nor `array_source` imports this module.

`source_from_config(config.data, split)` picks the source named by the config:
  path=DIR         a data_prep shard directory (any `source`): the train split is read lazily
                   from the shards, val / test come from the manifest's splits, in memory;
  source='sample'  (no path) the embedded single-subject slices (`medsr_jax.data.sample`),
                   cropped to `crop_hw` (160x128: the OASIS protocol of reference spec §4.2).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_pipeline.py tests/test_shards.py
"""

from __future__ import annotations

from typing import Any

from medsr_jax.data import shards
from medsr_jax.data.array_source import ArraySliceSource
from medsr_jax.errors import InputError

__all__ = ["SPLITS", "ArraySliceSource", "source_from_config"]

SPLITS = ("train", "val", "test")


def source_from_config(data_config: Any, split: str, *, with_label: bool = False) -> Any:
  """The random-access source of `split` ('train', 'val' or 'test') named by `data_config`.

  Fields read: `path` (a shard directory: selects the shards whatever `source` says), `source`
  ('sample' without a path), `crop_hw` (the in-plane size of the sample slices; shards keep the
  size data_prep wrote) and `modalities` (channels to pick from the shards, all when empty).
  From shards, 'train' is a lazy `shards.ShardSource` and 'val' / 'test' are read into memory
  (`shards.load_split`, with slice indices and subjects for the reports).
  `with_label`: items are {'image', 'label'} (lesion-focused ROI crops, the lesion detector);
  the embedded sample's labels are its tissue classes.
  """
  if split not in SPLITS:
    raise InputError(f"unknown data split {split!r}; expected one of {SPLITS}")
  path = str(data_config.get("path", "") or "")
  if path:
    modalities = tuple(data_config.get("modalities", ()) or ())
    if split == "train":
      return shards.ShardSource(path, split, modalities=modalities, with_label=with_label)
    return shards.load_split(path, split, modalities=modalities, with_label=with_label)
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
                          subject=getattr(chosen, "subject", None),
                          labels=getattr(chosen, "labels", None),
                          with_label=with_label)
