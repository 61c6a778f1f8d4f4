"""Tests for data_prep.tfds_builders: data_prep shards as tfds datasets, without TensorFlow.

Skipped when tensorflow-datasets (requirements-tfds.txt, optional) is not installed.
Run: .venv/bin/python -m pytest -q tests/test_tfds_builders.py
"""

import importlib.util
import math
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from data_prep import tfds_builders  # noqa: E402  pylint: disable=wrong-import-position
from medsr_jax.data import shards as shards_lib  # noqa: E402  pylint: disable=wrong-import-position
from medsr_jax.errors import InputError  # noqa: E402  pylint: disable=wrong-import-position
from tests import shard_fixtures  # noqa: E402  pylint: disable=wrong-import-position

_SMALL = {"train": 5, "val": 2, "test": 4}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  shard_fixtures.write_shards(root / "shards", num_shards={"train": 2, "val": 1, "test": 1},
                              max_slices=_SMALL)
  builder = tfds_builders.prepare(root / "shards", data_dir=str(root / "data"))
  return root, builder


def test_prepared_dataset_holds_every_record_in_order(prepared):
  root, builder = prepared
  assert builder.info.full_name == "medsr_oasis/rdst/1.0.0"
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == _SMALL
  sources = tfds.data_source("medsr_oasis/rdst", data_dir=str(root / "data"))
  for split, n in _SMALL.items():
    shards = shards_lib.ShardSource(root / "shards", split)
    assert len(sources[split]) == n
    for i in range(n):
      ex, rec = sources[split][i], shards.record(i)
      np.testing.assert_array_equal(ex["image"], rec.image)  # float32, bit for bit
      assert ex["image"].dtype == np.float32
      assert ex["has_label"] and np.array_equal(ex["label"], rec.label)
      assert ex["subject"] == rec.subject.encode() and ex["slice_index"] == rec.slice_index
      assert [m.decode() for m in ex["modalities"]] == list(rec.modalities)
      assert all(math.isnan(v) for v in ex["lesion_centre"])  # not recorded by protocol rdst
      np.testing.assert_array_equal(ex["affine"], np.eye(4, dtype=np.float32))
  if importlib.util.find_spec("tensorflow") is None:
    assert "tensorflow" not in sys.modules  # built and read without TensorFlow


def test_metadata_and_reopening(prepared):
  root, _ = prepared
  again = tfds_builders.builder_for(root / "shards", data_dir=str(root / "data"))
  assert again.is_prepared()
  meta = again.info.metadata
  assert meta["dataset"] == "oasis" and meta["protocol"] == "rdst" and meta["channels"] == 1
  assert set(meta["shards"]["train"]) == {"train-00000-of-00002.tfrecord",
                                          "train-00001-of-00002.tfrecord"}


def test_wrong_dataset_and_cli(prepared, tmp_path, capsys):
  root, _ = prepared
  brats = tmp_path / "brats"
  shard_fixtures.write_shards(brats, num_shards={"test": 1}, dataset="brats", max_slices=_SMALL)
  builder = tfds_builders.MedsrOasis(config="rdst", data_dir=str(tmp_path / "data"))
  with pytest.raises(InputError, match="builder medsr_oasis/rdst needs 'oasis'"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(brats)))
  assert tfds_builders.builder_for(brats).name == "medsr_brats"
  assert tfds_builders.main(["--shards", str(tmp_path / "none")]) == 2
  assert "error:" in capsys.readouterr().err
  assert tfds_builders.main(["--shards", str(root / "shards"),
                             "--data_dir", str(root / "data")]) == 0  # already prepared
  assert "medsr_oasis/rdst/1.0.0" in capsys.readouterr().out
