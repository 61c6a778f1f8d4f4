"""tensorflow-datasets builders over `data_prep`'s shards, for tfds-based pipelines (optional).

Training never needs this: it reads the shards directly with grain (`medsr_jax.data.shards`).
Users whose pipelines load data with `tfds` can turn a shard directory that `data_prep.build`
wrote into a tfds dataset, one builder per public dataset, one config per data_prep protocol:

  medsr_oasis/{rdst,miassr}     medsr_brats/{rdst,miassr,msgan}
  medsr_acdc/{rdst,miassr}      medsr_covid_ct/{rdst,miassr}

The datasets need a manual, registered download, so the builders do not download: their manual
directory is the shard directory (its manifest must name the builder's dataset and protocol and
be complete), and preparing copies every split's slices, in data_prep's order, into tfds files.
The default file format is ArrayRecord, which tfds writes and reads without TensorFlow (tfds needs
no TensorFlow at import either); `file_format='tfrecord'` and `tfds.load` / `as_dataset`
(tf.data) need TensorFlow installed.

Install: `pip install -r requirements-tfds.txt`. Then either

  python -m data_prep.tfds_builders --shards=/data/shards/oasis_rdst [--data_dir=DIR]

or in Python

  from data_prep import tfds_builders
  builder = tfds_builders.prepare("/data/shards/oasis_rdst", data_dir=DIR)
  test = tfds.data_source("medsr_oasis/rdst", data_dir=DIR)["test"]   # random access, no TF
  test[0]["image"]                       # (H, W, C) float32 in [0, 1], as in the shards

Features (one example per slice; `medsr_jax.data.records` has the meaning of each field):
image (H, W, C) float32; label (H, W) uint8, (0, 0) when the record has none (has_label
False); subject, volume, orientation (text); slice_index int64; spacing (3,) and affine (4, 4)
float32; modalities (one text per channel); intensity (C, 2) float32; source_shape and
crop_offset (2,) int64; lesion_centre (2,) float64, NaN when not recorded. The manifest's
dataset, protocol, settings and every shard's sha256 are in the dataset info's metadata.

Run: .venv/bin/python -m pytest -q tests/test_tfds_builders.py   (skipped without tfds)
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterator, Optional

import numpy as np

from medsr_jax.data import manifest as manifest_lib
from medsr_jax.data import shards as shards_lib
from medsr_jax.errors import InputError

try:
  import tensorflow_datasets as tfds
except ImportError as e:  # pragma: no cover - the optional extra is not installed
  raise InputError("data_prep.tfds_builders needs tensorflow-datasets: "
                   "pip install -r requirements-tfds.txt") from e

if __name__ == "__main__":
  # Run the builders of the imported module, not ones defined in __main__: tfds registers each
  # builder name once and looks for a builder's files next to its module.
  from data_prep import tfds_builders as _module  # pylint: disable=import-self
  sys.exit(_module.main())

PROTOCOLS = {"oasis": ("rdst", "miassr"), "brats": ("rdst", "miassr", "msgan"),
             "acdc": ("rdst", "miassr"), "covid_ct": ("rdst", "miassr")}

_NO_CENTRE = (float("nan"), float("nan"))


class _ShardsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A data_prep shard directory (the manual dir) as a tfds dataset; subclasses name DATASET."""

  DATASET = ""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Slices of data_prep's shards (manifest format version 1)."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Build the shards first: python -m data_prep.build --dataset=DATASET --src=DIR "
      "--out=SHARDS [--protocol=...]; the manual dir is SHARDS "
      "(tfds.download.DownloadConfig(manual_dir=SHARDS), or data_prep.tfds_builders.prepare).")

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")  # written and read without TensorFlow
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    tensor = tfds.features.Tensor
    return self.dataset_info_from_configs(
        description=f"{self.DATASET} slices preprocessed by data_prep "
                    f"(protocol {self.builder_config.name}).",
        features=tfds.features.FeaturesDict({
            "image": tensor(shape=(None, None, None), dtype=np.float32, encoding="zlib"),
            "label": tensor(shape=(None, None), dtype=np.uint8, encoding="zlib"),
            "has_label": np.bool_,
            "subject": tfds.features.Text(),
            "volume": tfds.features.Text(),
            "slice_index": np.int64,
            "spacing": tensor(shape=(3,), dtype=np.float32),
            "affine": tensor(shape=(4, 4), dtype=np.float32),
            "orientation": tfds.features.Text(),
            "modalities": tfds.features.Sequence(tfds.features.Text()),
            "intensity": tensor(shape=(None, 2), dtype=np.float32),
            "source_shape": tensor(shape=(2,), dtype=np.int64),
            "crop_offset": tensor(shape=(2,), dtype=np.int64),
            "lesion_centre": tensor(shape=(2,), dtype=np.float64),
        }),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # keep data_prep's order (subject, then slice)
    )

  def _split_generators(self, dl_manager):
    directory = os.fspath(dl_manager.manual_dir)
    m = manifest_lib.read_manifest(directory)
    protocol = self.builder_config.name
    if m.dataset != self.DATASET or m.protocol != protocol:
      raise InputError(f"{directory}: the shards are dataset {m.dataset!r}, protocol "
                       f"{m.protocol!r}; builder {self.name}/{protocol} needs "
                       f"{self.DATASET!r}/{protocol!r}")
    if not m.complete:
      raise InputError(f"{directory}: the shard build is not complete; finish data_prep first")
    self.info.metadata.update({
        "dataset": m.dataset, "protocol": m.protocol, "settings": m.settings,
        "modalities": m.modalities, "channels": m.channels,
        "shards": {split: {s.file: s.sha256 for s in sp.shards} for split, sp in m.splits.items()},
    })
    return {split: self._generate_examples(directory, split)
            for split, sp in m.splits.items() if sp.num_records}

  def _generate_examples(self, directory: str, split: str) -> Iterator[tuple[int, dict]]:
    source = shards_lib.ShardSource(directory, split)  # checks the CRCs of every record
    for i in range(len(source)):
      yield i, _example(source.record(i))


def _example(rec) -> dict[str, Any]:
  label = rec.label if rec.label is not None else np.zeros((0, 0), np.uint8)
  return {
      "image": np.asarray(rec.image, np.float32),
      "label": np.asarray(label, np.uint8),
      "has_label": rec.label is not None,
      "subject": rec.subject, "volume": rec.volume or rec.subject,
      "slice_index": int(rec.slice_index),
      "spacing": np.asarray(rec.spacing, np.float32),
      "affine": np.asarray(rec.affine, np.float32),
      "orientation": rec.orientation,
      "modalities": list(rec.modalities),
      "intensity": np.asarray(rec.intensity, np.float32).reshape(-1, 2),
      "source_shape": np.asarray(rec.source_shape or rec.image.shape[:2], np.int64),
      "crop_offset": np.asarray(rec.crop_offset, np.int64),
      "lesion_centre": np.asarray(rec.lesion_centre or _NO_CENTRE, np.float64),
  }


def _configs(dataset: str) -> list:
  return [tfds.core.BuilderConfig(name=p, description=f"data_prep --protocol={p}")
          for p in PROTOCOLS[dataset]]


class MedsrOasis(_ShardsBuilder):
  """OASIS-1 brain MRI slices (data_prep --dataset=oasis)."""
  DATASET = "oasis"
  BUILDER_CONFIGS = _configs("oasis")


class MedsrBrats(_ShardsBuilder):
  """BraTS brain tumour MRI slices, four modalities (data_prep --dataset=brats)."""
  DATASET = "brats"
  BUILDER_CONFIGS = _configs("brats")


class MedsrAcdc(_ShardsBuilder):
  """ACDC cardiac MRI slices (data_prep --dataset=acdc)."""
  DATASET = "acdc"
  BUILDER_CONFIGS = _configs("acdc")


class MedsrCovidCt(_ShardsBuilder):
  """COVID-19 CT slices (data_prep --dataset=covid_ct)."""
  DATASET = "covid_ct"
  BUILDER_CONFIGS = _configs("covid_ct")


BUILDERS = {b.DATASET: b for b in (MedsrOasis, MedsrBrats, MedsrAcdc, MedsrCovidCt)}


def builder_for(shards: str | os.PathLike, *, data_dir: Optional[str] = None,
                **kwargs) -> tfds.core.DatasetBuilder:
  """The builder (and config) that a shard directory's manifest names."""
  m = manifest_lib.read_manifest(os.fspath(shards))
  if m.dataset not in BUILDERS:
    raise InputError(f"{shards}: no tfds builder for dataset {m.dataset!r} "
                     f"(have {', '.join(BUILDERS)})")
  if m.protocol not in PROTOCOLS[m.dataset]:
    raise InputError(f"{shards}: no tfds config for protocol {m.protocol!r} of {m.dataset!r}")
  return BUILDERS[m.dataset](config=m.protocol, data_dir=data_dir, **kwargs)


def prepare(shards: str | os.PathLike, *, data_dir: Optional[str] = None,
            **kwargs) -> tfds.core.DatasetBuilder:
  """Prepares the tfds dataset of a shard directory (a no-op when already prepared)."""
  builder = builder_for(shards, data_dir=data_dir, **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(shards)))
  return builder


def main(argv: Optional[list[str]] = None) -> int:
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog="python -m data_prep.tfds_builders",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--shards", required=True, help="a data_prep output directory")
  parser.add_argument("--data_dir", default=None, help="tfds data dir (default: tfds's own)")
  parser.add_argument("--file_format", default="array_record",
                      help="array_record (no TensorFlow needed) or tfrecord (needs TensorFlow)")
  args = parser.parse_args(argv)
  try:
    builder = prepare(args.shards, data_dir=args.data_dir, file_format=args.file_format)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  splits = ", ".join(f"{k} {v.num_examples}" for k, v in builder.info.splits.items())
  print(f"{builder.info.full_name} in {builder.data_dir}: {splits}")
  return 0
