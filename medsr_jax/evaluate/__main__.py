"""`python -m medsr_jax.evaluate`: evaluate trained models at any scale (thesis ch. 4, §4.4).

  python -m medsr_jax.evaluate --workdir=runs/miassr
  python -m medsr_jax.evaluate --workdir=runs/miassr --scales=1.1:4.0:0.1 --split=test
  python -m medsr_jax.evaluate --workdir=runs/miassr,runs/meta_rdn,runs/edsr_x4 \\
      --scales=1.5,2,2.5,3,3.5,4 --plot=figs/fig_4_5.png
  python -m medsr_jax.evaluate --model_dir=exports/edsr_x4 --scales=1.5,2.5,3.5 --blur=false

A RUN is a training run directory (`python -m medsr_jax.main --workdir=RUN`): its config.json
names the data (the `data` section: `sources.source_from_config`) and RUN/export/ holds the
trained model. `--model_dir=EXPORT` evaluates that export instead: on the RUN's data when one
`--workdir` is given too, else on the embedded sample slices (data.source='sample', 160x128).

Per scale the thesis' chapter-4 test protocol runs for bicubic and the model (the library is
`medsr_jax.evaluate.scales`: per-scale blurred bicubic LR, GT resized to int(H // s * s), ceil(s)
border, no clipping; meta models at s, MDSR and fixed-scale models through the up-and-down of
§4.3.4). Defaults: `--scales` the run's config.data.scales when set, the thesis' 30 scales
1.1, ..., 4.0 for an 'arbitrary_scale' run without them, else the model's own scale; `--blur` the
run's config.data.blur (else the export's recorded protocol; else true, the chapter-4 protocol).

`--metrics=psnr,ssim,fid,dice,mfd` picks the metrics (default psnr,ssim, which are always
computed): 'fid' needs the pytorch-fid Inception weights (`--fid_weights=FILE`, or the
MEDSR_FID_WEIGHTS environment variable; converted by `python -m medsr_jax.export
--model=fid_inception ...`), FID per test subject and channel, averaged (`metrics.fid`);
'dice' and 'mfd' need a trained `unet_seg` export (`--unet=DIR`, default the run's eval.unet or
train.frozen.unet) and label maps in the split, and are computed at the scales whose GT is the HR
slice itself (`evaluate.segmentation.dice_report`).

Writes, per run, RUN/eval/<split>/results.json (schema `medsr_jax.eval.results` v1,
`evaluate/results_schema.json`, docs/EVALUATION.md: per slice, per subject and pooled scores at
every scale, the protocol, the config's and data manifest's sha256 and the code version) and
results.md (the table: one row per scale, the mean over scales, one table per channel for
multi-channel data, FID and Dice tables when asked for), and a plot of PSNR / SSIM against the
scale:
RUN/eval/<split>/scales.png for one run; for several runs one comparison plot, a line per run
labelled by its directory name, at the first run's eval dir as scales_compare.png. `--out=DIR`
writes to DIR (several runs: DIR/<run name>), `--plot=PATH` puts the plot there. Without a RUN
the outputs go to EXPORT/eval/<split>/. Files are written atomically once every run has been
evaluated; bad input (a missing run or export, an unknown split, bad scales, a scale a
fixed-scale model cannot reach, an unknown metric, FID without weights, Dice without a U-Net or
labels) gives one `error: ...` line, exit code 2 and no files.

The flags are defined when this command runs (`define_flags`), never on import, so that their
names stay free for the other commands (infer, export, detect). Run the checks with:
  .venv/bin/python -m pytest -q tests/test_evaluate_scales.py tests/test_evaluate_results.py
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex
import sys
from typing import Any, Callable, Sequence

from absl import app, flags, logging

from medsr_jax import errors
from medsr_jax.errors import InputError

SPLITS = ("train", "val", "test")
COMMAND = "python -m medsr_jax.evaluate"
METRICS = ("psnr", "ssim", "fid", "dice", "mfd")
ALWAYS = ("psnr", "ssim")
FID_WEIGHTS_ENV = "MEDSR_FID_WEIGHTS"


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the command's flags on `flag_values` (the global FLAGS when the command runs; tests
  pass their own `flags.FlagValues()`)."""
  fv = dict(flag_values=flag_values)
  flags.DEFINE_list("workdir", None, "Training run directories RUN[,RUN2,...] (config.json + "
                    "export/).", **fv)
  flags.DEFINE_string("model_dir", None, "Export directory to evaluate instead of RUN/export "
                      "(without --workdir: on the embedded sample slices).", **fv)
  flags.DEFINE_string("scales", None, "START:STOP:STEP (1.1:4.0:0.1) or a list (1.5,2,2.5); "
                      "default: the run's data.scales, 1.1:4.0:0.1 for an arbitrary_scale run "
                      "without them, else the model's scale.", **fv)
  flags.DEFINE_string("split", "test", "Data split: train, val or test.", **fv)
  flags.DEFINE_integer("batch_size", 8, "Slices per forward pass.", **fv)
  flags.DEFINE_bool("blur", None, "MIASSR's 3x3 blur on the LR (default: the run's "
                    "data.blur; without a run: true).", **fv)
  flags.DEFINE_string("out", None, "Output directory (default RUN/eval/<split>; several runs: "
                      "DIR/<run name>).", **fv)
  flags.DEFINE_string("plot", None, "PNG of PSNR / SSIM against scale (default scales.png in "
                      "the output directory; several runs: scales_compare.png of the first).",
                      **fv)
  flags.DEFINE_string("metrics", "psnr,ssim", f"Comma-separated, from {', '.join(METRICS)} "
                      "(psnr and ssim are always computed).", **fv)
  flags.DEFINE_string("fid_weights", None, "pytorch-fid Inception weights for 'fid' (.npz, "
                      f".safetensors or .pth); default ${FID_WEIGHTS_ENV}.", **fv)
  flags.DEFINE_string("unet", None, "Trained unet_seg export for 'dice' / 'mfd' (default: the "
                      "run's eval.unet or train.frozen.unet).", **fv)


@dataclasses.dataclass
class _Run:
  """One model to evaluate, with its data and where its results go."""
  label: str
  workdir: pathlib.Path | None
  export_dir: pathlib.Path
  model: Any
  variables: Any
  export_config: dict
  images: Any
  subjects: Any
  slice_index: Any
  channels: list
  scales: tuple
  blur: bool
  provenance: dict
  dice_config: Any
  out_dir: pathlib.Path


def parse_metrics(text: str) -> tuple[str, ...]:
  """'psnr,ssim,fid' -> ('psnr', 'ssim', 'fid'): psnr and ssim first (always computed), then the
  others in METRICS order; InputError for an unknown or repeated name."""
  names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise InputError(f"--metrics: unknown metric {unknown[0]!r}; expected some of "
                     f"{', '.join(METRICS)}")
  if len(set(names)) != len(names):
    raise InputError(f"--metrics: a metric is listed twice in {text!r}")
  return tuple(m for m in METRICS if m in ALWAYS or m in names)


def _run_config(workdir: pathlib.Path) -> tuple[dict, Any]:
  """(config.json of a run as a dict, its data section as a ConfigDict)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from medsr_jax.io import json_files  # pylint: disable=import-outside-toplevel
  path, config = json_files.read_json_object(workdir, "config.json", "run directory",
                                             "a training run directory")
  data = config.get("data")
  if not isinstance(data, dict):
    raise InputError(f"{path}: no 'data' section")
  return config, ml_collections.ConfigDict(data)


def _recorded_protocol(export_config: dict) -> dict:
  """The test protocol an export recorded at training time (`SRTrainer.export_extra`)."""
  protocol = (export_config.get("extra") or {}).get("protocol")
  return protocol if isinstance(protocol, dict) else {}


def _default_scales(run_config: dict | None, data_config: Any, export_config: dict
                    ) -> tuple[float, ...]:
  from medsr_jax.data import arbitrary_scale  # pylint: disable=import-outside-toplevel
  listed = tuple(data_config.get("scales", ()) or ())
  if not listed and run_config is None:
    listed = tuple(_recorded_protocol(export_config).get("scales", ()) or ())
  if listed:
    return tuple(round(float(s), 6) for s in listed)
  if run_config is not None and run_config.get("trainer") == "arbitrary_scale":
    return tuple(arbitrary_scale.THESIS_SCALES)
  return (float(export_config["scale"]),)


def _label(workdir: pathlib.Path | None, export_dir: pathlib.Path) -> str:
  if workdir is not None:
    return workdir.resolve().name
  path = export_dir.resolve()
  return path.parent.name if path.name == "export" and path.parent.name else path.name


def _unique(labels: Sequence[str]) -> list[str]:
  seen: dict[str, int] = {}
  out = []
  for label in labels:
    seen[label] = seen.get(label, 0) + 1
    out.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
  return out


def _dice_config(run_config: dict | None, unet: str | None, split: str) -> Any:
  """The config `trainers.segmentation_report` reads (eval.unet, eval.dataset, data), with the
  U-Net of --unet; InputError when there is none or the split has no label maps."""
  # pylint: disable=import-outside-toplevel
  import ml_collections
  from medsr_jax import config_lib
  from medsr_jax.trainers import segmentation_report
  config = config_lib.base_sr_config()
  if run_config is not None:
    config = ml_collections.ConfigDict(run_config)
  if unet:
    config.eval.unet = str(unet)
  if not segmentation_report.unet_directory(config):
    raise InputError("--metrics=dice/mfd needs a trained unet_seg export: --unet=DIR (or a run "
                     "with eval.unet / train.frozen.unet)")
  segmentation_report.test_labels(config, split)  # labels present: checked before any work
  return config


def _prepare(workdir: pathlib.Path | None, model_dir: str | None, *, split: str,
             scales: tuple[float, ...] | None, blur: bool | None, metrics: Sequence[str],
             unet: str | None) -> dict:
  """Loads a run's config, export and data (everything that can fail on bad input)."""
  # pylint: disable=import-outside-toplevel
  from medsr_jax import config_lib, export
  from medsr_jax.data import sources
  from medsr_jax.evaluate import results as results_lib
  from medsr_jax.evaluate import scales as scales_lib
  import numpy as np

  run_config = None
  if workdir is not None:
    run_config, data_config = _run_config(workdir)
  else:
    data_config = config_lib.base_sr_config().data
  export_dir = pathlib.Path(model_dir) if model_dir else workdir / "export"
  if not model_dir and not export_dir.is_dir():
    raise InputError(f"{workdir}: no export/ directory (the run has not finished, or give "
                     "--model_dir=EXPORT)")
  model, variables, export_config = export.load_export(str(export_dir))
  run_scales = scales or _default_scales(run_config, data_config, export_config)
  for s in run_scales:  # a scale the model cannot reach fails here, before anything runs
    scales_lib._plan(model, s)  # pylint: disable=protected-access
  source = sources.source_from_config(data_config, split)
  if len(source) == 0:
    raise InputError(f"split {split!r} of {workdir or 'the sample'} has no slices")
  images = np.stack([np.asarray(source[i]) for i in range(len(source))]).astype(np.float32)
  channels = images.shape[-1]
  if int(export_config["in_channels"]) != channels:
    raise InputError(f"{export_dir}: the model takes {export_config['in_channels']} channel(s); "
                     f"the {split} slices have {channels}")
  modalities = [str(m) for m in (data_config.get("modalities", ()) or ())]
  names = modalities if len(modalities) == channels else [f"c{i}" for i in range(channels)]
  if blur is None:  # the run's own setting, else the export's record, else the chapter-4 protocol
    if workdir is not None:
      blur = bool(data_config.get("blur", False))
    else:
      blur = bool(_recorded_protocol(export_config).get("blur", True))
  dice_config = (_dice_config(run_config, unet, split)
                 if {"dice", "mfd"} & set(metrics) else None)
  return dict(workdir=workdir, export_dir=export_dir, model=model, variables=variables,
              export_config=export_config, images=images,
              subjects=getattr(source, "subject", None),
              slice_index=getattr(source, "slice_index", None), channels=names,
              scales=tuple(run_scales), blur=bool(blur), dice_config=dice_config,
              provenance=results_lib.provenance(run_config=run_config,
                                                export_config=export_config,
                                                data_config=data_config))


def _command(workdirs, model_dir, scales_text, split, batch_size, blur, out, plot, metrics,
             fid_weights, unet) -> str:
  args = []
  for name, value in (("workdir", ",".join(workdirs) if workdirs else None),
                      ("model_dir", model_dir), ("scales", scales_text), ("split", split),
                      ("batch_size", batch_size), ("out", out), ("plot", plot),
                      ("metrics", metrics), ("fid_weights", fid_weights), ("unet", unet)):
    if value is not None:
      args.append(f"--{name}={value}")
  if blur is not None:
    args.append(f"--blur={'true' if blur else 'false'}")
  return f"{COMMAND} {shlex.join(args)}"


def _fid_weights(fid_weights: str | None) -> Any:
  """The FID Inception's variables (InputError in one line when they are missing)."""
  import os  # pylint: disable=import-outside-toplevel
  path = fid_weights or os.environ.get(FID_WEIGHTS_ENV, "")
  if not path:
    raise InputError(f"--metrics=fid needs the pytorch-fid Inception weights: --fid_weights=FILE "
                     f"or ${FID_WEIGHTS_ENV} (convert them with python -m medsr_jax.export "
                     "--model=fid_inception)")
  from medsr_jax.metrics import fid  # pylint: disable=import-outside-toplevel
  return fid.load_fid_inception(path)


def _extra_metrics(r: _Run, metrics: Sequence[str], fid_variables: Any, batch_size: int,
                   split: str, dice_tables: dict[str, str]) -> Callable[..., tuple[dict, dict]]:
  """The `evaluate_scales` hook computing FID (per subject and channel, averaged) and Dice / MFD
  (at the scales whose GT is the HR slice; their markdown goes to `dice_tables`)."""
  # pylint: disable=import-outside-toplevel
  from medsr_jax.evaluate import scales as scales_lib
  from medsr_jax.trainers import segmentation_report

  def hook(scale, gt, outputs):
    per_method: dict[str, dict] = {}
    per_scale: dict[str, Any] = {}
    if "fid" in metrics:
      from medsr_jax.metrics import fid  # pylint: disable=import-outside-toplevel
      for method, images in outputs.items():
        # Whole slices, as the author's testers pass them to pytorch-fid (spec §8.4).
        per_method[method] = {"fid": fid.fid_per_subject(gt, images, fid_variables,
                                                         subjects=r.subjects,
                                                         batch_size=batch_size)}
    if r.dice_config is not None and tuple(gt.shape[1:3]) == tuple(r.images.shape[1:3]):
      rows = {(r.export_config["model"] if k == "model" else k): v for k, v in outputs.items()}
      tables, report = segmentation_report.dice_section(
          r.dice_config, None, gt, rows, batch_size=batch_size, num_panels=0, write=False,
          split=split)
      per_scale["dice"] = report
      dice_tables[scales_lib._key(scale)] = tables  # pylint: disable=protected-access
    return per_method, per_scale

  return hook


def _document(r: _Run, result: dict, *, split: str, command: str, metrics: Sequence[str],
              skipped: dict[str, str]) -> dict:
  """The results.json document (schema `medsr_jax.eval.results` v1) of one evaluated run."""
  from medsr_jax.evaluate import results as results_lib  # pylint: disable=import-outside-toplevel
  per_scale = {k: {f: v for f, v in e.items() if f != "seconds"}
               for k, e in result["per_scale"].items()}
  pooled = {}
  for method in ("bicubic", "model"):
    entries = [e[method] for e in per_scale.values()]
    pooled[method] = {f"{m}_mean": float(sum(e[f"{m}_mean"] for e in entries) / len(entries))
                      for m in ALWAYS}
    fids = [e["fid"]["value"] for e in entries if e.get("fid", {}).get("value") is not None]
    if fids:
      pooled[method]["fid_mean"] = float(sum(fids) / len(fids))
  document = {
      "schema": results_lib.SCHEMA_NAME, "schema_version": results_lib.SCHEMA_VERSION,
      "label": r.label, "model": r.export_config["model"], "export": str(r.export_dir.resolve()),
      "workdir": None if r.workdir is None else str(r.workdir.resolve()), "split": split,
      "command": command, "provenance": r.provenance,
      "protocol": {"degradation": "bicubic", "blur": result["blur"], "border": "ceil(scale)",
                   "clipped": False, "scales": result["scales"], "notes": result["notes"]},
      "metrics": list(metrics), "channels": result["channels"], "slices": result["slices"],
      "hr_hw": result["hr_hw"], "subjects": result["subjects"], "per_scale": per_scale,
      "pooled": pooled,
  }
  if skipped:
    document["skipped"] = dict(skipped)
  if "slice_index" in result:
    document["slice_index"] = result["slice_index"]
  results_lib.check(document)  # a bug here must not leave an invalid file
  return document


def _fid_table(result: dict, model_label: str) -> str:
  lines = [f"| scale | bicubic FID | {model_label} FID |", "|---|---|---|"]
  for entry in sorted(result["per_scale"].values(), key=lambda e: e["scale"]):
    cells = [entry[m]["fid"]["value"] for m in ("bicubic", "model")]
    lines.append(f"| x{entry['scale']:g} | " + " | ".join(
        "-" if v is None else f"{v:.2f}" for v in cells) + " |")
  return "FID (pool3 features, per subject and channel, averaged):\n\n" + "\n".join(lines)


def run(workdirs: Sequence[str] | None = None, *, model_dir: str | None = None,
        scales: str | None = None, split: str = "test", batch_size: int = 8,
        blur: bool | None = None, out: str | None = None, plot: str | None = None,
        metrics: str = "psnr,ssim", fid_weights: str | None = None, unet: str | None = None,
        command: str | None = None, log: Callable[[str], None] | None = None) -> dict[str, dict]:
  """Evaluates each run (or the export) at every scale and writes the outputs.

  Returns {run label: the results.json document}. InputError for bad input, before any file is
  written.
  """
  # pylint: disable=import-outside-toplevel
  from medsr_jax.evaluate import scales as scales_lib
  from medsr_jax.io import text_files

  log = log or (lambda m: print(m, flush=True))
  workdirs = [w.strip() for w in (workdirs or []) if w and w.strip()]
  if not workdirs and not model_dir:
    raise InputError("give --workdir=RUN[,RUN2,...] or --model_dir=EXPORT")
  if model_dir and len(workdirs) > 1:
    raise InputError("--model_dir takes at most one --workdir (the data to evaluate it on)")
  if split not in SPLITS:
    raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
  if int(batch_size) < 1:
    raise InputError(f"--batch_size must be >= 1, got {batch_size}")
  chosen = scales_lib.parse_scales(scales) if scales is not None else None
  wanted = parse_metrics(metrics)
  command = command or _command(workdirs, model_dir, scales, split, batch_size, blur, out, plot,
                                metrics, fid_weights, unet)

  paths = [pathlib.Path(w) for w in workdirs] or [None]
  for path in paths:
    if path is not None and not path.is_dir():
      raise InputError(f"{path}: run directory not found")
  fid_variables = _fid_weights(fid_weights) if "fid" in wanted else None
  prepared = [_prepare(p, model_dir, split=split, scales=chosen, blur=blur, metrics=wanted,
                       unet=unet) for p in paths]
  labels = _unique([_label(p["workdir"], p["export_dir"]) for p in prepared])
  runs = []
  for label, p in zip(labels, prepared):
    if out:
      out_dir = pathlib.Path(out) / label if len(prepared) > 1 else pathlib.Path(out)
    else:
      base = p["workdir"] if p["workdir"] is not None else p["export_dir"]
      out_dir = base / "eval" / split
    runs.append(_Run(label=label, out_dir=out_dir, **p))
  if plot:
    plot_path = pathlib.Path(plot)
  else:
    plot_path = runs[0].out_dir / ("scales.png" if len(runs) == 1 else "scales_compare.png")

  results, documents, tables = {}, {}, {}
  for r in runs:
    h, w, c = r.images.shape[1:]
    log(f"{r.label}: {r.export_config['model']} from {r.export_dir}, {split} split, "
        f"{len(r.images)} slices of {h}x{w}x{c}, {len(r.scales)} scale(s), "
        f"blur {'on' if r.blur else 'off'}, metrics {','.join(wanted)}")
    dice_tables: dict[str, str] = {}
    hook = (_extra_metrics(r, wanted, fid_variables, batch_size, split, dice_tables)
            if set(wanted) - set(ALWAYS) else None)
    results[r.label] = scales_lib.evaluate_scales(
        r.model, r.variables, r.images, r.scales, blur=r.blur, batch_size=batch_size,
        subjects=r.subjects, channel_names=r.channels, slice_index=r.slice_index,
        log=lambda m: log(f"  {m}"), extra_metrics=hook)
    skipped = {}
    if r.dice_config is not None and not dice_tables:
      skipped = {m: "no evaluated scale has the HR slice as its ground truth"
                 for m in ("dice", "mfd") if m in wanted}
    documents[r.label] = _document(r, results[r.label], split=split, command=command,
                                   metrics=wanted, skipped=skipped)
    model_label = r.export_config["model"]
    parts = [scales_lib.scale_table_markdown(results[r.label], model_label=model_label)]
    if "fid" in wanted:
      parts.append(_fid_table(results[r.label], model_label))
    parts += [f"Dice at x{key}:\n\n{text}" for key, text in dice_tables.items()]
    parts += [f"Note: {m} skipped: {why}" for m, why in skipped.items()]
    tables[r.label] = "\n\n".join(parts)

  for r in runs:
    try:
      r.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise InputError(f"{r.out_dir}: cannot create the output directory "
                       f"({e.strerror or e})") from e
    text_files.write_text_atomic(r.out_dir / "results.json",
                                 json.dumps(documents[r.label], indent=1) + "\n")
    text_files.write_text_atomic(r.out_dir / "results.md", f"# {r.label}, {split} split\n\n"
                                 f"{tables[r.label]}\n")
    log(f"\n{r.label} ({r.export_config['model']}), {split} split:\n{tables[r.label]}\n"
        f"wrote {r.out_dir / 'results.json'} and {r.out_dir / 'results.md'}")
  scales_lib.plot_vs_scale(results, plot_path)
  log(f"wrote {plot_path}")
  return documents


def run_flags(flag_values: flags.FlagValues, command: str | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, dict]:
  """`run` with the values of parsed flags (see `define_flags`)."""
  f = flag_values
  return run(f.workdir, model_dir=f.model_dir, scales=f.scales, split=f.split,
             batch_size=f.batch_size, blur=f.blur, out=f.out, plot=f.plot, metrics=f.metrics,
             fid_weights=f.fid_weights, unet=f.unet, command=command, log=log)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  command = f"{COMMAND} {shlex.join(sys.argv[1:])}"
  errors.cli_main(lambda: run_flags(flags.FLAGS, command=command))


if __name__ == "__main__":
  define_flags()
  sys.exit(app.run(main))
