"""Dice of super-resolved test slices through a segmentation U-Net (thesis §5.3.2, Tables 5.1-5.4,
5.8; Figs 5.4-5.7), added to a fixed-scale run's final evaluation.

When the run names a trained `unet_seg` export (`config.eval.unet`, or the fine-tuning's
`config.train.frozen.unet`), the test table gains, for bicubic, every extra generator (the L1
stage, the GAN warm-up) and the model, the Dice of the U-Net's prediction on each output against
the ground-truth label and against its prediction on the HR slice, per region of the dataset
(`metrics.dice.REGIONS`: OASIS T, GM, WM, CSF; BraTS ET, TC, WT; ACDC T, LV, RV, MC; COVID T, LL,
RL, lesion), mean (std) over slices, plus the medical Fréchet distance of U-Net encoder features
(`evaluate.segmentation`). `results.md` gets the tables, `results.json` a 'dice' entry, and
`seg_panel_*.png` show the labels and the errors in red.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_rdst_finetune.py
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping, Optional

import numpy as np

from medsr_jax import export
from medsr_jax.data import manifest as manifest_lib
from medsr_jax.data import sources
from medsr_jax.errors import InputError

SAMPLE_DATASET = "oasis"  # the embedded sample's labels follow the OASIS FAST convention


def unet_directory(config) -> str:
  """The U-Net export that scores the run ('' when none is configured)."""
  return str(config.eval.get("unet", "") or config.train.get("frozen", {}).get("unet", "") or "")


def dataset_name(config) -> str:
  """`eval.dataset`, else the shards' dataset, else the embedded sample's ('oasis')."""
  if config.eval.get("dataset", ""):
    return str(config.eval.dataset)
  path = str(config.data.get("path", "") or "")
  return manifest_lib.read_manifest(path).dataset if path else SAMPLE_DATASET


def test_labels(config, split: str = "test") -> tuple[np.ndarray, Any]:
  """(labels (N, H, W), subjects) of a split's slices, in the order of `eval_pairs`."""
  source = sources.source_from_config(config.data, split, with_label=True)
  labels = getattr(source, "labels", None)
  if labels is None:
    raise InputError(f"Dice evaluation needs label maps, but the {split} slices have none "
                     "(data_prep shards built with labels, or the embedded sample)")
  return np.asarray(labels), getattr(source, "subject", None)


def dice_section(config, workdir: Optional[pathlib.Path], hr: np.ndarray,
                 outputs: Mapping[str, np.ndarray], *, batch_size: int, num_panels: int,
                 write: bool, split: str = "test") -> tuple[str, dict]:
  """(markdown, JSON-ready report) of the Dice evaluation of `outputs` ({row: SR images}) of the
  `split`'s slices."""
  from medsr_jax.evaluate import segmentation  # pylint: disable=import-outside-toplevel
  directory = unet_directory(config)
  module, variables, unet_config = export.load_export(directory)
  if unet_config["model"] != "unet_seg":
    raise InputError(f"{directory} holds {unet_config['model']!r}, not a 'unet_seg' export")
  labels, subjects = test_labels(config, split)
  if labels.shape != hr.shape[:3]:
    raise InputError(f"the test labels {labels.shape} do not match the HR slices {hr.shape[:3]}")
  dataset = dataset_name(config)
  segmenter = segmentation.Segmenter(module, variables, batch_size)
  report = segmentation.dice_report(segmenter, hr, labels, dict(outputs), dataset=dataset,
                                    subjects=subjects)
  tables = "\n\n".join(segmentation.dice_table_markdown(report, against=against)
                       for against in ("vs_gt", "vs_hr"))
  if write and workdir is not None and num_panels:
    picks = np.linspace(0, len(hr) - 1, num=min(num_panels, len(hr))).astype(int)
    segmentation.dice_panels(workdir, hr, labels, dict(outputs), segmenter,
                             indices=[int(i) for i in picks], dataset=dataset)
  return tables, report


def dice_scalars(report: dict) -> dict[str, float]:
  """TensorBoard scalars: `test_dice_<method>_<region>` (against the ground truth) and
  `test_mfd_<method>`; undefined values (None) are left out."""
  scalars = {}
  for method, entry in report["results"].items():
    key = method.replace(" ", "_").replace("(", "").replace(")", "")
    for region, value in entry["vs_gt"].items():
      if value["mean"] is not None:
        scalars[f"test_dice_{key}_{region}"] = float(value["mean"])
    if entry["mfd"]["value"] is not None:
      scalars[f"test_mfd_{key}"] = float(entry["mfd"]["value"])
  return scalars
