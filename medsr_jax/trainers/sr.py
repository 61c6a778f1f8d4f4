"""The fixed-scale SR trainer (`config.trainer = 'sr'`): one player, pixel (+ VGG) losses.

  python -m medsr_jax.main --config=configs/rdst.py --workdir=runs/rdst

Trains the generator on every stage of `config.train.stages` (thesis §5.3.3) with the stage's
weighted loss terms (`trainers/objectives.py`), validates PSNR/SSIM on whole validation slices,
then evaluates bicubic and the model on the test slices and exports the parameters to
`workdir/export/`. The loop itself (resume, logging, checkpoints) is `trainers/loop.py`; the GAN
trainer (`trainers/gan.py`) extends this class with a discriminator player.

Lesion-focused runs (thesis ch. 3: `config.data.roi.size` set, `data/lesion.py`) train on whole
ROIs around each slice's lesion centre (LFSR, MS-GAN; the multi-scale generators' 'mse_x2' term
gets the HR downsampled x2 in the batch), validate PSNR/SSIM on the validation ROIs, and end
with the chapter's evaluation (`trainers/lesion_report.py`: ROI and whole-slice tables with the
interpolation baselines, box plots, ROI panels, the MOS predictions file).

`config.init_from` (a run directory or an export directory) starts the generator from another
run's exported weights instead of a random init, so ablation grids branch from one shared
warm-up (thesis Tables 4.5/4.6, 5.6/5.9). With `config.init_from_players='all'` (a run
directory) every player (the GAN's discriminator too) starts from the params, model state and EMA
of that run's latest checkpoint; optimiser states, counters and the data order start afresh.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax import config_lib, cpu_compile, evaluate, export, models, sharding
from medsr_jax.data import lesion, pipeline, sources
from medsr_jax.errors import InputError
from medsr_jax.io import text_files
from medsr_jax.metrics import image_quality
from medsr_jax.trainers import objectives
from medsr_jax.trainers import state as state_lib
from medsr_jax.trainers import step as step_lib

G = state_lib.GENERATOR
STAGE_EXPORT_PREFIX = "export_after_"  # the generator at the end of an earlier stage


def build_model(model_config):
  return models.build(model_config.name, scale=model_config.scale,
                      in_channels=model_config.in_channels, **model_config.kwargs.to_dict())


def _check_channels(source, in_channels: int) -> None:
  """InputError unless the data's channel count is the model's `in_channels`."""
  item = source[0]
  channels = int(np.shape(item["image"] if isinstance(item, dict) else item)[-1])
  if channels != in_channels:
    raise InputError(f"the training slices have {channels} channel(s) but model.in_channels is "
                     f"{in_channels}: set --config.model.in_channels={channels} or pick channels "
                     "with --config.data.modalities")


def init_from_variables(directory: str, model_name: str) -> dict:
  """The exported variables of `directory` (an export dir, or a run dir with `export/`)."""
  path = pathlib.Path(directory)
  if (path / "export" / export.CONFIG_FILE).is_file():  # a run directory (its own config.json
    path = path / "export"                              # is the run's, not an export's)
  _, variables, cfg = export.load_export(str(path))
  if cfg["model"] != model_name:
    raise InputError(f"init_from {path} holds model {cfg['model']!r}, this run trains "
                     f"{model_name!r}")
  return variables


class SRTrainer:
  """Fixed-scale super-resolution: the generator player 'g' and its stages."""

  name = "sr"
  best_metric, best_mode = "val_psnr", "max"
  per_batch_scales = False  # the arbitrary-scale trainer: one static scale per batch
  loss_terms = (objectives.PIXEL_TERMS + (objectives.INTERMEDIATE_TERM,)
                + objectives.PERCEPTUAL_TERMS + objectives.UNET_TERMS)

  def __init__(self, config, workdir: pathlib.Path):
    self.config, self.workdir = config, workdir
    self.check_config()
    self.roi = lesion.settings_from_config(config) if lesion.roi_enabled(config.data) else None
    self.mesh = sharding.make_mesh(config.mesh.shape, config.mesh.axis_names)
    self.model = build_model(config.model)
    self.notes: list[str] = []  # printed now, and appended to results.md at the end
    self.stages = self._stages_for_run()
    self._check_intermediate()
    self.total_steps = config_lib.total_steps(config)
    self.scale = float(config.model.scale)
    self.train_iter = self._make_train_iterator()
    self.load_validation()
    self.predict = evaluate.Predictor(self.model, config.data.eval_batch_size)
    self.frozen = self._load_frozen()
    self.state = self._init_state()
    self.state_shardings = jax.tree.map(lambda x: x.sharding, self.state)
    self.best_checkpoint = None
    self._steps: dict[Any, Any] = {}

  # ----- config -----------------------------------------------------------------------------
  def check_config(self) -> None:
    """InputError for config fields this trainer would silently ignore."""
    self.check_scales()
    objectives.check_terms(self.config.train.stages, self.loss_terms, self.name)
    if self.name == "sr" and "gan" in self.config:
      raise InputError("the config has a 'gan' section but trainer 'sr' trains no "
                       "discriminator: set --config.trainer=gan")

  def check_scales(self) -> None:
    """A fixed-scale trainer has no `data.scales` (the arbitrary-scale trainer overrides this)."""
    if tuple(self.config.data.scales):
      raise InputError(f"data.scales is set ({tuple(self.config.data.scales)}) but trainer "
                       f"{self.name!r} trains one fixed scale (model.scale); clear data.scales "
                       "or use --config.trainer=arbitrary_scale")

  def _check_intermediate(self) -> None:
    """The 'mse_x2' term needs a multi-scale generator and ROI batches (which carry 'hr2')."""
    if not objectives.needs_intermediate(self.stages):
      return
    if models.registry.convention_of(self.model).output != "tuple":
      raise InputError(f"loss term 'mse_x2' needs a multi-scale generator (ms_gan, ms_srresnet); "
                       f"{self.config.model.name!r} has one output")
    if self.roi is None or not self.roi.train_on_roi:
      raise InputError("loss term 'mse_x2' trains on lesion ROIs (thesis §3.3.1): set "
                       "--config.data.roi.size='(h, w)'")

  def _stages_for_run(self) -> list:
    """The config's stages; a demo without a VGG export runs with the VGG weights set to 0."""
    stages = [s.copy_and_resolve_references() for s in self.config.train.stages]
    vgg_dir = self.config.train.frozen.get(objectives.VGG, "")
    if self.config.get("demo_without_vgg", False) and not vgg_dir:
      for s in stages:
        dropped = [t for t in objectives.PERCEPTUAL_TERMS if s.losses.get(t, 0.0)]
        for t in dropped:
          s.losses[t] = 0.0
        if dropped:
          self.notes.append(f"Stage {s.name!r} runs WITHOUT its VGG term(s) {dropped} (weight set "
                            "to 0): no VGG-19 export was given (--config.train.frozen.vgg=DIR, see "
                            "README).")
    for note in self.notes:
      print(f"note: {note}", flush=True)
    return stages

  # ----- data -------------------------------------------------------------------------------
  def roi_source(self, split: str) -> lesion.CentredSource:
    """The labelled slices of `split` with their ROI centres (`config.data.roi.centres`)."""
    source = sources.source_from_config(self.config.data, split, with_label=True)
    centres = None
    mode = self.roi.centres
    if mode not in lesion.CENTRE_MODES:  # a file of `python -m medsr_jax.detect`
      from medsr_jax.data import centres as centres_lib  # pylint: disable=import-outside-toplevel
      hw = self._slice_hw(source)
      centres = centres_lib.read_centres(mode, split, hw, len(source))
    elif mode == "detector":
      from medsr_jax import detect  # pylint: disable=import-outside-toplevel
      centres = detect.centres_for_source(self.config.train.frozen.detector, source, self.scale)
    return lesion.CentredSource(source, self.roi.lesion_labels, centres)

  @staticmethod
  def _slice_hw(source) -> tuple[int, int]:
    shape = getattr(source, "slice_shape", None)
    if shape is None:
      raise InputError("ROI centres from a file need slices of one size")
    return int(shape[0]), int(shape[1])

  def lr_train_hw(self) -> tuple[int, int]:
    """(h, w) of the LR training inputs: the patch, or the LR ROI."""
    if self.roi is not None and self.roi.train_on_roi:
      return self.roi.lr_size()
    return int(self.config.data.lr_patch), int(self.config.data.lr_patch)

  def hr_train_hw(self) -> tuple[int, int]:
    """(h, w) of the HR training targets: the patch, or the ROI."""
    if self.roi is not None and self.roi.train_on_roi:
      return self.roi.size
    p = pipeline.hr_patch_size(self.config.data.lr_patch, self.config.model.scale)
    return p, p

  def batch_keys(self) -> tuple[str, ...]:
    return ("lr", "hr2", "hr") if objectives.needs_intermediate(self.stages) else ("lr", "hr")

  def _make_train_iterator(self):
    c = self.config.data
    if self.roi is not None and self.roi.train_on_roi:
      source = self.roi_source("train")
      _check_channels(source, self.config.model.in_channels)
      dataset = lesion.train_dataset(
          source, self.roi, with_hr2=objectives.needs_intermediate(self.stages),
          global_batch_size=c.global_batch_size, seed=self.config.seed,
          process_index=jax.process_index(), process_count=jax.process_count())
      return pipeline.train_iterator(dataset, num_threads=c.num_threads,
                                     prefetch_buffer_size=c.prefetch_buffer_size,
                                     num_workers=c.num_workers)
    source = sources.source_from_config(c, "train")
    _check_channels(source, self.config.model.in_channels)
    dataset = pipeline.make_train_dataset(
        source, global_batch_size=c.global_batch_size,
        lr_patch=c.lr_patch, scale=self.scale, seed=self.config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        blur=c.blur, noise_sigma=c.noise_sigma,
        kspace_sigma=self.roi.kspace_sigma if self.roi is not None else 0.0)
    return pipeline.train_iterator(dataset, num_threads=c.num_threads,
                                   prefetch_buffer_size=c.prefetch_buffer_size,
                                   num_workers=c.num_workers)

  def load_validation(self) -> None:
    """The validation data `validate` scores: ROIs, or whole-slice (LR, HR) pairs."""
    if self.roi is not None:
      self.val_set = lesion.eval_set(self.roi_source("val"), self.roi)
    else:
      self.val_lr, self.val_hr, _ = self.eval_pairs("val")

  def eval_pairs(self, split: str):
    """Whole-slice (LR, HR, slice ids) of a split, by the thesis' test protocol (spec §4.4)."""
    source = sources.source_from_config(self.config.data, split)
    images = np.stack([source[i] for i in range(len(source))])
    lr, hr = pipeline.make_test_pairs(images, self.scale, blur=self.config.data.blur)
    return lr, hr, getattr(source, "slice_index", None)

  def _load_frozen(self) -> dict:
    frozen = objectives.load_frozen(self.config, self.stages)
    return jax.device_put(frozen, sharding.replicated(self.mesh))

  # ----- state ------------------------------------------------------------------------------
  def optimizer(self, player: str, stage_idx: int):
    """The optimiser of `player` for stage `stage_idx`."""
    freeze = step_lib.parse_freeze(self.config.train.get("freeze", "")) if player == G else ()
    return step_lib.make_optimizer(self.config.train, self.stages[stage_idx], freeze=freeze)

  def init_players(self, rng: jax.Array, start: dict | None) -> dict[str, dict]:
    """The players at step 0 (traced inside `jax.jit`); subclasses add theirs. `start`: the
    generator's variables from `config.init_from`, or None for a random init."""
    c = self.config
    dummy = jnp.zeros((1, *self.lr_train_hw(), c.model.in_channels), jnp.float32)
    variables = self.model.init(rng, dummy) if start is None else start
    params, model_state = step_lib.split_variables(variables)
    return {G: state_lib.init_player(params, self.optimizer(G, 0), ema=c.train.ema_decay > 0,
                                     model_state=model_state)}

  def _init_state(self):
    c = self.config
    players = c.get("init_from_players", "g")
    if players not in ("g", "all"):
      raise InputError(f"init_from_players must be 'g' or 'all', got {players!r}")
    if players == "all" and not c.get("init_from", ""):
      raise InputError("init_from_players='all' needs --config.init_from=RUN_DIR")
    start = (init_from_variables(c.init_from, c.model.name)
             if c.get("init_from", "") and players == "g" else None)
    if start is not None:
      print(f"generator initialised from {c.init_from}", flush=True)
    rng_init, rng_train = jax.random.split(jax.random.key(c.seed))

    def init(start):  # the start weights are an argument, never constants of the program
      return state_lib.init_state(self.init_players(rng_init, start), rng_train)

    shardings = sharding.tree_shardings(jax.eval_shape(init, start), self.mesh,
                                        c.mesh.fsdp_min_size)
    state = jax.jit(init, out_shardings=shardings)(start)
    if c.get("init_from_players", "g") == "all":
      state = self._players_from_run(state, c.init_from)
    self._report_freeze(state["players"][G]["params"])
    return state

  def _report_freeze(self, params) -> None:
    """Checks `train.freeze` against the model and says how much of it still trains."""
    freeze = step_lib.parse_freeze(self.config.train.get("freeze", ""))
    if not freeze:
      return
    step_lib.check_freeze(params, freeze)
    labels = step_lib.freeze_labels(params, freeze)
    frozen = sum(int(np.prod(p.shape)) for p, l in zip(jax.tree.leaves(params),
                                                        jax.tree.leaves(labels)) if l == "frozen")
    total = models.count_params(params)
    print(f"frozen: {', '.join(freeze)} ({frozen:,} of {total:,} generator parameters); "
          f"training {total - frozen:,}", flush=True)

  def _players_from_run(self, state: dict, run_dir: str) -> dict:
    """Every player's params, model state and EMA from `run_dir`'s latest checkpoint."""
    from medsr_jax import checkpoint as checkpoint_lib  # pylint: disable=import-outside-toplevel
    directory = pathlib.Path(run_dir) / "checkpoints"
    ckpt = checkpoint_lib.Checkpointer(directory, async_save=False) if directory.is_dir() else None
    step = ckpt.latest_step() if ckpt else None
    if step is None:
      raise InputError(f"init_from_players='all' needs a run directory with checkpoints; "
                       f"{run_dir} has none")
    try:
      restored = ckpt.restore_state(step, checkpoint_lib.abstract_like(state))
    except InputError:  # a damaged checkpoint: already one line
      raise
    except (ValueError, KeyError, TypeError) as e:
      raise InputError(f"the checkpoint at step {step} of {run_dir} does not have this run's "
                       f"players and shapes: {str(e).strip().splitlines()[0][:200]}") from e
    finally:
      ckpt.close()
    kept = ("params", "model_state", "ema")
    players = {name: {**player, **{k: restored["players"][name][k] for k in kept if k in player}}
               for name, player in state["players"].items()}
    print(f"players {sorted(players)} initialised from {directory}/{step}", flush=True)
    return dict(state, players=players)

  def start_stage(self, stage_idx: int) -> None:
    """A stage starts with fresh optimiser states (its own learning-rate schedules); the
    generator of the stage before is exported first (`export_stage_end`)."""
    if stage_idx > 0:
      self.export_stage_end(stage_idx - 1)
    for name, player in self.state["players"].items():
      tx = self.optimizer(name, stage_idx)
      opt_sh = self.state_shardings["players"][name]["opt_state"]
      player["opt_state"] = jax.jit(tx.init, out_shardings=opt_sh)(player["params"])
    self.state["stage"] = jax.device_put(jnp.asarray(stage_idx, jnp.int32),
                                         self.state_shardings["stage"])

  def export_stage_end(self, stage_idx: int) -> None:
    """The generator at the end of stage `stage_idx`, for the test table (e.g. RDST's L1 stage
    beside the fine-tuned model, thesis Table 5.6)."""
    name = self.stages[stage_idx].name
    self.export(self.workdir / f"{STAGE_EXPORT_PREFIX}{name}", self.counter("step"))

  # ----- steps ------------------------------------------------------------------------------
  def jit(self, raw_step):
    """`raw_step(state, batch, frozen)` jitted with this run's shardings, state donated."""
    batch_sh = sharding.batch_sharding(self.mesh)
    frozen_sh = jax.tree.map(lambda _: sharding.replicated(self.mesh), self.frozen)
    jitted = step_lib.jit_step(raw_step, self.state_shardings,
                               {k: batch_sh for k in self.batch_keys()},
                               sharding.replicated(self.mesh), frozen_sh,
                               policy=step_lib.policy_from_config(self.config.train),
                               compiler_options=cpu_compile.compiler_options(self.model))
    return lambda state, batch: jitted(state, batch, self.frozen)

  def generator_objective(self, stage_idx: int, scale: float | None = None):
    return objectives.generator_objective(
        self.model, objectives.stage_terms(self.stages[stage_idx]),
        self.config.train.get("perceptual", {}), scale=scale,
        unet_options=self.config.train.get("unet_loss", {}))

  def step_scale(self, step: int) -> float | None:
    """The static scale the model runs at in global `step` (None: its own; the arbitrary-scale
    trainer returns the batch's scale)."""
    del step
    return None

  @staticmethod
  def step_name(stage_idx: int, scale: float | None, suffix: str = "") -> str:
    """The step's name in `step.TRACE_COUNTS`: 'stage0', 'stage1_dg', 'stage1_x2.5_d', ..."""
    return f"stage{stage_idx}" + ("" if scale is None else f"_x{scale:g}") + suffix

  def train_step(self, stage_idx: int, step: int):
    """The jitted step of a stage (and scale), compiled once and reused."""
    scale = self.step_scale(step)
    key = (stage_idx, scale)
    if key not in self._steps:
      raw = step_lib.make_train_step(
          self.generator_objective(stage_idx, scale), self.optimizer(G, stage_idx),
          loss_threshold=self.config.train.loss_threshold,
          ema_decay=self.config.train.ema_decay, name=self.step_name(stage_idx, scale))
      self._steps[key] = self.jit(raw)
    return self._steps[key]

  def progress_fields(self, metrics: dict) -> dict:
    return dict(loss=float(metrics["loss"]), lr=float(metrics["learning_rate"]))

  def describe(self) -> str:
    n_params = models.count_params(self.state["players"][G]["params"])
    return (f"model {self.config.model.name} x{self.scale:g}: {n_params:,} parameters; "
            f"{self.total_steps} steps; mesh {dict(self.mesh.shape)}")

  # ----- evaluation and export --------------------------------------------------------------
  def eval_params(self):
    """This process's full copy of the generator's variables (EMA params when enabled)."""
    g = self.state["players"][G]
    params = g["ema"] if self.config.eval.use_ema and "ema" in g else g["params"]
    return {"params": sharding.host_local(params, self.mesh),
            **sharding.host_local(g["model_state"], self.mesh)}

  def counter(self, name: str, player: str = G) -> int:
    """A scalar of the state ('step', 'stage') or of a player ('skipped') as a Python int."""
    value = self.state[name] if name in self.state else self.state["players"][player][name]
    return int(sharding.host_local(value, self.mesh))

  def validate(self) -> dict[str, float]:
    if self.roi is not None:  # the validation ROIs (module docstring)
      from medsr_jax.trainers import lesion_report  # pylint: disable=import-outside-toplevel
      variables = self.eval_params()
      sr = lesion_report.roi_outputs(lambda lr, _: self.predict(variables, lr), self.val_set,
                                     on_roi=self.roi.train_on_roi)
      scores = evaluate.score_slices(self.val_set.hr_roi, sr, self.scale).summary()
    else:
      sr = self.predict(self.eval_params(), self.val_lr)
      scores = evaluate.score_slices(self.val_hr, sr, self.scale).summary()
    return {"val_psnr": scores["psnr_mean"], "val_ssim": scores["ssim_mean"]}

  def validation_line(self, val: dict) -> str:
    return f"validation PSNR {val['val_psnr']:.2f} dB, SSIM {val['val_ssim']:.4f}"

  def final_evaluation(self, writer, step: int) -> dict[str, Any]:
    if self.roi is not None:
      from medsr_jax.trainers import lesion_report  # pylint: disable=import-outside-toplevel
      test = lesion.eval_set(self.roi_source("test"), self.roi)
      return lesion_report.final_evaluation(self, writer, step, test)
    lr, hr, slice_ids = self.eval_pairs("test")
    outputs = self.test_outputs(lr, hr)
    scores = {k: evaluate.score_slices(hr, v, self.scale) for k, v in outputs.items()}
    images = {"lr": lr, "bicubic": outputs["bicubic"], "sr": outputs["model"], "hr": hr}
    label = self.config.model.name
    table = evaluate.markdown_table(scores, scale=self.scale, model_label=label)
    is_main = jax.process_index() == 0  # every process evaluates (same numbers); one writes
    if is_main:
      table, panel_images = evaluate.write_report(
          self.workdir, scores, images, scale=self.scale, model_label=label,
          num_panels=self.config.eval.num_panels, slice_ids=slice_ids)
      writer.write_images(step, {f"test/{k}": v for k, v in panel_images.items()})
    summary = {k: v.summary() for k, v in scores.items()}
    writer.write_scalars(step, {f"test_{k}_{m}": summary[k][f"{m}_mean"]
                                for k in summary for m in ("psnr", "ssim")})
    dice_tables = self._dice_evaluation(writer, step, hr, outputs, write=is_main)
    if is_main and self.notes:
      text_files.append_text_atomic(self.workdir / "results.md",
                                    "".join(f"\nNote: {n}\n" for n in self.notes),
                                    what="results")
    gain = summary["model"]["psnr_mean"] - summary["bicubic"]["psnr_mean"]
    print(f"\nTest slices ({len(hr)}), whole-slice x{self.scale:g}, border "
          f"{image_quality.evaluation_margin(self.scale)} px cropped:\n{table}\n"
          f"PSNR gain over bicubic: {gain:+.2f} dB{dice_tables}", flush=True)
    return summary

  def test_outputs(self, lr: np.ndarray, hr: np.ndarray) -> dict[str, np.ndarray]:
    """{row: SR images} of the test table: bicubic, the extra generators, then the model."""
    outputs = {"bicubic": evaluate.bicubic_baseline(lr, hr.shape[1:3])}
    for label, variables in self.extra_generators().items():
      outputs[label] = self.predict(variables, lr)
    outputs["model"] = self.predict(self.eval_params(), lr)
    if outputs["model"].shape != hr.shape:
      raise ValueError(f"model output {outputs['model'].shape} does not match ground truth "
                       f"{hr.shape}")
    return outputs

  def _dice_evaluation(self, writer, step: int, hr: np.ndarray, outputs: dict, *,
                       write: bool) -> str:
    """Dice through the configured U-Net (trainers/segmentation_report.py); '' without one."""
    from medsr_jax.trainers import segmentation_report  # pylint: disable=import-outside-toplevel
    if not segmentation_report.unet_directory(self.config):
      return ""
    rows = {(self.config.model.name if k == "model" else k): v for k, v in outputs.items()}
    tables, report = segmentation_report.dice_section(
        self.config, self.workdir, hr, rows, batch_size=self.config.data.eval_batch_size,
        num_panels=self.config.eval.num_panels, write=write)
    if write:
      text_files.append_text_atomic(self.workdir / "results.md", "\n" + tables + "\n",
                                    what="results")
      results = json.loads((self.workdir / "results.json").read_text())
      results["dice"] = report
      text_files.write_text_atomic(self.workdir / "results.json", json.dumps(results, indent=1),
                                   what="results")
    writer.write_scalars(step, segmentation_report.dice_scalars(report))
    return "\n\n" + tables

  def extra_generators(self) -> dict[str, Any]:
    """{row label: variables} of other generators to evaluate beside the model (in order): the
    generator at the end of each earlier stage (`export_after_<stage>`, written when the next
    stage began)."""
    rows = {}
    for stage in self.stages[:-1]:
      directory = self.workdir / f"{STAGE_EXPORT_PREFIX}{stage.name}"
      if (directory / export.CONFIG_FILE).is_file():
        _, variables, _ = export.load_export(str(directory))
        rows[f"{self.config.model.name} ({stage.name})"] = variables
    return rows

  def export_extra(self) -> dict:
    return {"skipped_steps": self.counter("skipped"), "protocol": self.test_protocol()}

  def test_protocol(self) -> dict:
    """The whole-slice test protocol of this run, recorded in its export so that
    `python -m medsr_jax.evaluate --model_dir=EXPORT` evaluates it the same way."""
    d = self.config.data
    scales = getattr(self, "eval_scales", None) or (self.scale,)
    return {"degradation": "bicubic", "blur": bool(d.blur), "border": "ceil(scale)",
            "scales": [float(s) for s in scales], "crop_hw": [int(v) for v in d.crop_hw],
            "noise_sigma": float(d.get("noise_sigma", 0.0)),
            "kspace_sigma": float(d.get("kspace_sigma", 0.0))}

  def export_variables(self):
    """The variables `export` writes (the segmentation trainer: its best checkpoint's)."""
    return self.eval_params()

  def export(self, directory: pathlib.Path, step: int) -> None:
    variables = jax.device_get(self.export_variables())  # every process takes part
    extra = {"step": int(step), **self.export_extra()}
    if jax.process_index() != 0:
      return
    c = self.config
    export.save_export(directory, model_name=c.model.name, model_kwargs=c.model.kwargs.to_dict(),
                       scale=c.model.scale, in_channels=c.model.in_channels, params=variables,
                       extra=extra)
    print(f"exported parameters to {directory}", flush=True)


Trainer = SRTrainer
