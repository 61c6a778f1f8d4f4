"""Chapter-3 evaluation of a lesion-focused run: ROI and whole-slice scores of every method.

  python -m medsr_jax.main --config=configs/lfsr.py:demo --workdir=runs/lfsr_demo

Used by the SR and GAN trainers when `config.data.roi.size` is set (`data/lesion.py`). On the
test slices (`lesion.EvalSet`: whole LR / HR slices, the ROI box around each slice's centre, the
LR / HR ROIs, the noise of Table 3.3 when `data.kspace_sigma` > 0) it scores, as Tables 3.3 and
3.5 report them (mean (std) over the test slices):

  * the interpolation baselines bicubic, bilinear and bilinear + non-local-means denoising
    (B+NLD, `medsr_jax.baselines`), and every generator of the run (the GAN trainer adds its
    warm-up generator), each given the same input as the model;
  * the ROI: a model trained on ROIs (LFSR, MS-GAN: `data.roi.train`) super-resolves the LR ROI
    (thesis eq. 3.7: LD crops LR and HR); a model trained on whole slices (the SRResNet / SRGAN
    rows of Table 3.3) super-resolves the whole LR slice and its output's ROI box is scored
    ("both SRResNet and SRGAN conduct on the whole slice, but only the ROIs are evaluated",
    §3.4.3);
  * the whole slice: every method on the whole LR slice (the fully convolutional generators run
    on any size).

Scores are PSNR / SSIM with the usual `ceil(scale)` border crop (`evaluate.score_slices`).
Outputs in the workdir: `results.md` (both tables), `results.json` (per-slice scores, sample ids,
ROI boxes), `boxplot_roi.png` (slice-wise PSNR / SSIM per method, Figs 3.13/3.14),
`roi_panel_*.png` (the slice with the ROI box, then the ROI of the ground truth and of each
method with its PSNR / SSIM, Fig. 3.17) and `predictions/test.npz` (the model's ROI outputs for
the blinded MOS kit, `python -m experiments.mos`).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_lesion_focused.py
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Mapping

import jax
import numpy as np

from medsr_jax import baselines, evaluate
from medsr_jax.data import lesion
from medsr_jax.io import predictions as predictions_io
from medsr_jax.io import text_files
from medsr_jax.logging import panels, plots

REGIONS = ("roi", "slice")


Runner = Callable[[np.ndarray, Any], np.ndarray]  # run(lr, hr_hw) -> sr


def roi_outputs(run: Runner, ev: lesion.EvalSet, *, on_roi: bool,
                whole: np.ndarray | None = None) -> np.ndarray:
  """The ROI outputs (N, h, w, C) of one method (module docstring: the LR ROI for ROI-trained
  models, else the ROI box of the whole-slice output `whole`, computed if not given)."""
  if on_roi:
    return run(ev.lr_roi, ev.hr_roi.shape[1:3])
  if whole is None:
    whole = run(ev.lr, ev.hr.shape[1:3])
  return ev.crop_rois(whole)


def method_outputs(run: Runner, ev: lesion.EvalSet, *, on_roi: bool) -> dict[str, np.ndarray]:
  """{'roi': ROI outputs, 'slice': whole-slice outputs} of one method `run(lr, hr_hw) -> sr`."""
  whole = run(ev.lr, ev.hr.shape[1:3])
  return {"roi": roi_outputs(run, ev, on_roi=on_roi, whole=whole), "slice": whole}


def score(outputs: Mapping[str, np.ndarray], ev: lesion.EvalSet, scale: float
          ) -> dict[str, evaluate.Scores]:
  """ROI and whole-slice scores of one method's outputs."""
  return {"roi": evaluate.score_slices(ev.hr_roi, outputs["roi"], scale),
          "slice": evaluate.score_slices(ev.hr, outputs["slice"], scale)}


def markdown_table(rows: Mapping[str, Mapping[str, evaluate.Scores]], *, scale: float) -> str:
  """Tables 3.3 / 3.5 layout: one row per method, ROI and whole-slice PSNR / SSIM mean (std)."""
  lines = [f"| method (x{scale:g}) | ROI PSNR (dB) | ROI SSIM | slice PSNR (dB) | slice SSIM "
           "| slices |", "|---|---|---|---|---|---|"]
  for label, by_region in rows.items():
    cells = []
    for region in REGIONS:
      s = by_region[region].summary()
      cells += [f"{s['psnr_mean']:.2f} ({s['psnr_std']:.2f})",
                f"{s['ssim_mean']:.4f} ({s['ssim_std']:.4f})"]
    lines.append(f"| {label} | {' | '.join(cells)} | {by_region['roi'].summary()['slices']} |")
  return "\n".join(lines)


def final_evaluation(trainer, writer, step: int, ev: lesion.EvalSet) -> dict[str, Any]:
  """Scores every method on `ev`, writes the reports (module docstring), prints the table."""
  settings, scale = trainer.roi, trainer.scale
  on_roi = settings.train_on_roi
  roi_hw = ev.hr_roi.shape[1:3]
  outputs = {name: method_outputs(fn, ev, on_roi=on_roi)
             for name, fn in baselines.INTERPOLATION_BASELINES.items()}
  model_label = (trainer.config.eval.get("method_label", "")
                 or trainer.config.model.name + (" (ROI-trained)" if on_roi else ""))
  generators = {**trainer.extra_generators(), model_label: trainer.eval_params()}
  for label, variables in generators.items():
    outputs[label] = method_outputs(lambda lr, _, v=variables: trainer.predict(v, lr), ev,
                                    on_roi=on_roi)
  rows = {label: score(out, ev, scale) for label, out in outputs.items()}
  table = markdown_table(rows, scale=scale)
  summary = {label: {region: s.summary() for region, s in by.items()}
             for label, by in rows.items()}
  if jax.process_index() == 0:
    _write_files(trainer.workdir, rows, outputs, ev, table, trainer, model_label)
  writer.write_scalars(step, {f"test_{region}_{m}": summary[model_label][region][f"{m}_mean"]
                              for region in REGIONS for m in ("psnr", "ssim")})
  noise = (f", k-space noise sigma {trainer.config.data.kspace_sigma:g} (raw units)"
           if settings.kspace_sigma else "")
  print(f"\nTest slices ({len(ev.hr)}), x{scale:g}, ROI {roi_hw[0]}x{roi_hw[1]} "
        f"({'LR ROI input' if on_roi else 'ROI of the whole-slice output'}){noise}:\n{table}",
        flush=True)
  return {"model": summary[model_label], **summary}


def _write_files(workdir: pathlib.Path, rows, outputs, ev: lesion.EvalSet, table: str, trainer,
                 model_label: str) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  notes = "".join(f"\nNote: {n}\n" for n in trainer.notes)
  text_files.write_text_atomic(workdir / "results.md", table + "\n" + notes, what="results")
  per_slice = {label: {region: {"psnr": s.psnr.tolist(), "ssim": s.ssim.tolist(), **s.summary()}
                       for region, s in by.items()} for label, by in rows.items()}
  per_slice["ids"] = list(ev.ids)
  per_slice["roi_boxes"] = ev.boxes.tolist()
  text_files.write_text_atomic(workdir / "results.json", json.dumps(per_slice, indent=1),
                               what="results")
  plots.box_plots({label: {"psnr": by["roi"].psnr, "ssim": by["roi"].ssim}
                   for label, by in rows.items()}, workdir / "boxplot_roi.png",
                  title=f"ROI, x{trainer.scale:g}")
  n = len(ev.hr)
  shown = [label for label in outputs if label != "bilinear"]
  for i in np.linspace(0, n - 1, num=min(trainer.config.eval.num_panels, n)).astype(int):
    rois = {"HR": ev.hr_roi[i], **{label: outputs[label]["roi"][i] for label in shown}}
    scores = {label: (float(rows[label]["roi"].psnr[i]), float(rows[label]["roi"].ssim[i]))
              for label in shown}
    image = panels.roi_panel(ev.hr[i], tuple(int(v) for v in ev.boxes[i]), rois, scores)
    panels.save_png(workdir / f"roi_panel_{int(i):03d}.png", image)
  predictions_io.write_predictions(workdir, method=model_label, ids=ev.ids,
                                   sr=outputs[model_label]["roi"], hr=ev.hr_roi)
