"""The arbitrary-scale trainer (`config.trainer = 'arbitrary_scale'`): MIASSR and the Meta-* models.

  python -m medsr_jax.main --config=configs/miassr.py --workdir=runs/miassr \\
      --config.data.path=/data/shards/oasis_miassr --config.train.frozen.vgg=weights/vgg19
  python -m medsr_jax.main --config=configs/miassr.py:demo --workdir=runs/miassr_demo

Thesis ch. 4 (§4.3.3, Eq. 4.18; reference spec §4.3): every batch has one scale s of
`config.data.scales` (empty: the thesis' 30 scales 1.1, 1.2, ..., 4.0), LR patches int(P / s)
and HR patches int(int(P / s) * s) for the HR patch side P = int(lr_patch * max(scales)) = 96,
LR = blur(bicubic(HR patch)) (`data/arbitrary_scale.py`). The model takes the nominal s as a
static argument, so the train step is compiled once per (stage, scale) — and, for a GAN stage,
per kind of iteration (D only / D + G). The scale of global batch k is a pure function of
(seed, k) (`arbitrary_scale.ScaleSchedule`), so the trainer picks the compiled step on the host
from the step number alone, without reading the batch; with the default 'permutation'
schedule every scale appears in the first len(scales) batches of a stage's first pass over them,
and nothing compiles afterwards. A resumed run restores the data iterator and the step, so it
continues with the same scale sequence.

Stages without 'adv' train the generator alone (the L1 warm-up, the feature-extractor ablation
of Fig. 4.8); with a `config.gan` section and an 'adv' stage the run is the GAN trainer's
(`trainers/gan.py`: WGAN-GP by default, the reference code's vanilla GAN as a switch, and the
code's 'scalegan' labels 1 / (HR size / LR size) of the batch, spec §7.4). The discriminator
takes the HR patches of every scale (92..96 pixels: the same 6 x 6 final map, spec §5.15).

Validation and the final evaluation run the thesis' test protocol at each of `config.eval.scales`
(default the six test scales 1.5, 2, ..., 4; spec §4.4: per scale its own blurred LR, the GT
resized to int(H // s * s), ceil(s) border, no clipping) through `medsr_jax.evaluate.scales`;
validation PSNR / SSIM are the means over those scales. The end of the run writes `results.md`
(bicubic vs the model, mean (std) per scale, per channel for multi-modal data: Table 4.2),
`results.json` (the per-scale, per-subject scores, and the means over scales as 'bicubic' /
'model'), `scales.json` and one PNG panel per scale of one test slice (Fig. 4.3).

Transfer learning (thesis §4.3.3, §4.4): `--config.init_from=RUN_OR_EXPORT` starts the generator
from another run's weights; `--config.train.freeze=feature_extractor` keeps the feature extractor
fixed (zero updates, no Adam state; spec §2.2 `train_meta_feature_extractor=False`).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_arbitrary_scale_trainer.py
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import numpy as np

from medsr_jax import evaluate, models
from medsr_jax.data import arbitrary_scale, pipeline, sources
from medsr_jax.errors import InputError
from medsr_jax.io import text_files
from medsr_jax.logging import panels
from medsr_jax.trainers import gan, sr

SCALE_ARGS = ("required", "optional")  # meta models; MDSR (integer scales)


def _scales_module():
  from medsr_jax.evaluate import scales  # pylint: disable=import-outside-toplevel
  return scales


class ArbitraryScaleMixin:
  """What arbitrary-scale training changes in `sr.SRTrainer` (and `gan.GANTrainer`)."""

  name = "arbitrary_scale"
  per_batch_scales = True

  # ----- config -----------------------------------------------------------------------------
  def check_scales(self) -> None:
    c = self.config
    self.train_scales = arbitrary_scale.scales_from_config(c.data)
    self.schedule = arbitrary_scale.schedule_from_config(c.data, c.seed)
    if min(self.train_scales) < 1:
      raise InputError(f"super-resolution scales must be at least 1; data.scales is "
                       f"{self.train_scales}")
    hr_patch = arbitrary_scale.hr_patch_from_config(c.data)
    for s in self.train_scales:
      arbitrary_scale.patch_sizes(hr_patch, s)
    convention = models.registry.convention_of(sr.build_model(c.model))
    if convention.scale_arg not in SCALE_ARGS:
      raise InputError(f"trainer 'arbitrary_scale' needs a model that takes a scale (miassr, "
                       f"meta_*, or mdsr with integer scales); {c.model.name!r} is a fixed-scale "
                       "model: use --config.trainer=sr")
    if convention.scale_arg == "optional" and any(s != int(s) for s in self.train_scales):
      raise InputError(f"{c.model.name!r} takes integer scales only; data.scales is "
                       f"{self.train_scales}")
    if any(int(v) for v in c.data.roi.size):
      raise InputError("trainer 'arbitrary_scale' trains on random patches: clear data.roi.size")
    self.eval_scales = tuple(float(s) for s in c.eval.get("scales", ())) or \
        arbitrary_scale.TEST_SCALES
    self._predictors: dict = {}

  def step_scale(self, step: int) -> float:
    return float(self.schedule(step))

  def batch_size_ratio(self, step: int) -> float:
    l, h = arbitrary_scale.patch_sizes(arbitrary_scale.hr_patch_from_config(self.config.data),
                                       self.step_scale(step))
    return h / l

  # ----- data -------------------------------------------------------------------------------
  def hr_train_hw(self) -> tuple[int, int]:
    p = arbitrary_scale.hr_patch_from_config(self.config.data)
    return p, p

  def lr_train_hw(self) -> tuple[int, int]:
    p = arbitrary_scale.hr_patch_from_config(self.config.data)
    l, _ = arbitrary_scale.patch_sizes(p, max(self.train_scales))
    return l, l

  def batch_keys(self) -> tuple[str, ...]:
    return ("lr", "hr", "scale")

  def _make_train_iterator(self):
    c = self.config.data
    source = sources.source_from_config(c, "train")
    sr._check_channels(source, self.config.model.in_channels)  # pylint: disable=protected-access
    dataset = arbitrary_scale.dataset_from_config(
        c, source, seed=self.config.seed, process_index=jax.process_index(),
        process_count=jax.process_count())
    return pipeline.train_iterator(dataset, num_threads=c.num_threads,
                                   prefetch_buffer_size=c.prefetch_buffer_size,
                                   num_workers=c.num_workers)

  def eval_split(self, split: str):
    """(images (N, H, W, C), slice ids, subjects) of a whole split."""
    source = sources.source_from_config(self.config.data, split)
    images = np.stack([source[i] for i in range(len(source))]).astype(np.float32)
    return images, getattr(source, "slice_index", None), getattr(source, "subject", None)

  def load_validation(self) -> None:
    self.val_images, _, _ = self.eval_split("val")

  # ----- validation and evaluation ------------------------------------------------------------
  def predict_at(self, variables, lr: np.ndarray, scale: float) -> np.ndarray:
    return _scales_module().predict_at_scale(
        self.model, variables, lr, scale, batch_size=self.config.data.eval_batch_size,
        cache=self._predictors)

  def _evaluate(self, images, variables, *, subjects=None, slice_index=None, log=None) -> dict:
    modalities = tuple(self.config.data.modalities) or None
    return _scales_module().evaluate_scales(
        self.model, variables, images, self.eval_scales, blur=bool(self.config.data.blur),
        batch_size=self.config.data.eval_batch_size, subjects=subjects,
        channel_names=modalities, slice_index=slice_index, log=log,
        cache=self._predictors)

  def validate(self) -> dict[str, float]:
    result = self._evaluate(self.val_images, self.eval_params())
    means = _means_over_scales(result)["model"]
    out = {"val_psnr": means["psnr_mean"], "val_ssim": means["ssim_mean"]}
    for s, entry in result["per_scale"].items():
      out[f"val_psnr_x{float(s):g}"] = entry["model"]["psnr_mean"]
    return out

  def validation_line(self, val: dict) -> str:
    per_scale = ", ".join(f"{k[len('val_psnr_'):]} {v:.2f}" for k, v in val.items()
                          if k.startswith("val_psnr_x"))
    return (f"validation PSNR {val['val_psnr']:.2f} dB, SSIM {val['val_ssim']:.4f} (mean over "
            f"scales; PSNR {per_scale})")

  def final_evaluation(self, writer, step: int) -> dict[str, Any]:
    images, slice_ids, subjects = self.eval_split("test")
    variables = self.eval_params()
    scales_lib = _scales_module()
    result = self._evaluate(images, variables, subjects=subjects, slice_index=slice_ids,
                            log=lambda m: print(f"  test {m}", flush=True))
    label = self.config.eval.get("method_label", "") or self.config.model.name
    table = scales_lib.scale_table_markdown(result, model_label=label)
    means = _means_over_scales(result)
    summary = {"bicubic": means["bicubic"], "model": means["model"]}
    if jax.process_index() == 0:
      notes = "".join(f"\nNote: {n}\n" for n in self.notes)
      text_files.write_text_atomic(self.workdir / "results.md", table + "\n" + notes,
                                   what="results")
      text_files.write_text_atomic(self.workdir / "results.json",
                                   json.dumps({**summary, **result}, indent=1), what="results")
      written = self._write_panels(images, variables)
      writer.write_images(step, {f"test/{k}": v for k, v in written.items()})
    writer.write_scalars(step, {f"test_{k}_{m}": summary[k][f"{m}_mean"]
                                for k in summary for m in ("psnr", "ssim")})
    gain = summary["model"]["psnr_mean"] - summary["bicubic"]["psnr_mean"]
    print(f"\nTest slices ({len(images)}), whole-slice at scales "
          f"{', '.join(f'{s:g}' for s in self.eval_scales)}, ceil(s) border cropped:\n{table}\n"
          f"PSNR gain over bicubic (mean over scales): {gain:+.2f} dB", flush=True)
    return summary

  def _write_panels(self, images: np.ndarray, variables) -> dict[str, np.ndarray]:
    """One panel per evaluation scale (and modality) of the middle test slice (thesis Figs 4.3,
    4.7)."""
    if not self.config.eval.num_panels:
      return {}
    i = len(images) // 2
    channels = images.shape[-1]
    names = tuple(self.config.data.modalities) or tuple(f"c{c}" for c in range(channels))
    written = {}
    for s in self.eval_scales:
      lr, gt = pipeline.make_test_pairs(images[i:i + 1], s, blur=bool(self.config.data.blur))
      sr_image = self.predict_at(variables, lr, s)
      bicubic = evaluate.bicubic_baseline(lr, gt.shape[1:3])
      for c in range(channels):
        name = f"panel_{i:03d}_x{s:g}" + (f"_{names[c]}" if channels > 1 else "")
        written[name] = panels.comparison_panel(
            {k: v[0, ..., c] for k, v in (("LR", lr), ("bicubic", bicubic), ("SR", sr_image),
                                          ("HR", gt))},
            scale=s, labels={"SR": self.config.eval.get("method_label", "") or
                             self.config.model.name})
        panels.save_png(self.workdir / f"{name}.png", written[name])
    return written

  def describe(self) -> str:
    scales = self.train_scales
    return (f"{super().describe()}; {len(scales)} training scales {scales[0]:g}..{scales[-1]:g} "
            f"({self.schedule.mode} schedule, at most {len(scales)} compiled steps per stage)")

  def export_extra(self) -> dict:
    return {**super().export_extra(), "train_scales": list(self.train_scales),
            "eval_scales": list(self.eval_scales)}


def _means_over_scales(result: dict) -> dict[str, dict[str, float]]:
  """{'bicubic' | 'model': mean over scales of the per-scale means (thesis Table 4.1)}."""
  out = {}
  for method in ("bicubic", "model"):
    entries = [e[method] for e in result["per_scale"].values()]
    out[method] = {f"{m}_{k}": float(np.mean([e[f"{m}_{k}"] for e in entries]))
                   for m in ("psnr", "ssim") for k in ("mean", "std")}
    out[method]["scales"] = len(entries)
  return out


class ArbitraryScaleSRTrainer(ArbitraryScaleMixin, sr.SRTrainer):
  """L1 (+ VGG) arbitrary-scale training of the generator alone."""


class ArbitraryScaleGANTrainer(ArbitraryScaleMixin, gan.GANTrainer):
  """Arbitrary-scale training with a discriminator (MIASSR's L1 + VGG22 + adversarial stage)."""

  loss_terms = gan.GANTrainer.loss_terms


def Trainer(config, workdir: pathlib.Path):  # pylint: disable=invalid-name
  """The GAN variant when the config has a `gan` section, else the generator-only one."""
  if "gan" in config:
    return ArbitraryScaleGANTrainer(config, workdir)
  return ArbitraryScaleSRTrainer(config, workdir)

