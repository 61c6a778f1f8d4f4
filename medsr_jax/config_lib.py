"""Shared pieces of the ml_collections config files in `configs/`.

A config file is code: `configs/<method>.py` defines `get_config(arg)` where `arg` is the text after
the colon in `--config=configs/rdst.py:demo,scale=2`. `parse_arg` turns that text into typed options,
and `base_sr_config` gives the fields every fixed-scale super-resolution run shares, so each method
file only states what the thesis says about that method.

Training is a list of stages (thesis §5.3.3: 100k L1 steps, then a 20k-step fine-tuning stage with
its own learning-rate schedule). Each stage has its own loss, step count, initial learning rate and
multi-step decay (milestones counted from the start of the stage). The step counter is global.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
from typing import Any

import ml_collections


def load_module(path: str | pathlib.Path):
  """The Python module of a config file (its `get_config`, `sweep`, ...)."""
  from medsr_jax.errors import InputError  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  if not path.is_file():
    raise InputError(f"config file not found: {path}")
  spec = importlib.util.spec_from_file_location(f"medsr_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`get_config(ARGS)` of `FILE[:ARGS]`, the syntax of `--config`."""
  path, _, arg = spec.partition(":")
  return load_module(path).get_config(arg or None)


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses 'demo,scale=2,model=rdst_e' into a ConfigDict over `defaults`.

  A bare word sets a boolean option to True. Values are parsed as Python literals when possible
  (numbers, tuples, booleans), else kept as strings. Unknown options are an error, so a typo in a
  sweep does not silently run the default.
  """
  options = ml_collections.ConfigDict(defaults)
  if not arg:
    return options
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"unknown config option {key!r}; known: {sorted(defaults)}")
    if not sep:
      options[key] = True
      continue
    try:
      parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      parsed = value.strip()
    options[key] = type(defaults[key])(parsed) if defaults[key] is not None else parsed
  return options


def stage(name: str, *, steps: int, learning_rate: float, loss: str = "l1",
          losses: dict[str, float] | None = None, milestones: tuple[int, ...] = (),
          gamma: float = 0.5, warmup_steps: int = 0) -> ml_collections.ConfigDict:
  """One training stage: `steps` optimiser steps, LR decayed by `gamma` at `milestones` (counted
  from the start of the stage), after an optional linear warm-up.

  The objective is the weighted sum `losses` ({'mse': 1.0, 'vgg54': 0.006, 'adv': 0.001}; terms
  in `trainers/objectives.py`); when `losses` is empty, `loss` alone with weight 1 (shorthand).
  """
  return ml_collections.ConfigDict(dict(
      name=name, steps=steps, learning_rate=learning_rate, loss=loss,
      losses={str(k): float(v) for k, v in (losses or {}).items()},
      milestones=tuple(milestones), gamma=gamma, warmup_steps=warmup_steps))


def model_config(name: str, *, scale: int = 4, in_channels: int = 1,
                 **overrides: Any) -> ml_collections.ConfigDict:
  """`config.model` for a registered model, with every architecture option listed in `kwargs`."""
  from medsr_jax import models  # pylint: disable=import-outside-toplevel
  kwargs = models.default_options(name)
  unknown = sorted(set(overrides) - set(kwargs))
  if unknown:
    raise ValueError(f"unknown options {unknown} for model {name!r}")
  kwargs.update(overrides)
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return ml_collections.ConfigDict(dict(name=name, scale=scale, in_channels=in_channels,
                                        kwargs=kwargs))


def base_sr_config() -> ml_collections.ConfigDict:
  """Fields shared by every fixed-scale SR method (values follow the RDST protocol, thesis ch. 5)."""
  c = ml_collections.ConfigDict()
  c.trainer = "sr"                 # trainers.get(name): 'sr', 'gan', 'arbitrary_scale', ...
  c.seed = 0
  c.init_from = ""                 # run or export directory: start the generator from its weights
  c.init_from_players = "g"        # 'g': the generator from an export; 'all': every player from
                                   # the run's latest checkpoint
  c.prerequisites = ml_collections.ConfigDict()  # {name: 'FILE[:ARGS]'} run first, see
                                                 # trainers/prerequisites.py

  c.model = model_config("rdst")   # name, scale, in_channels, kwargs (every architecture option)

  c.data = ml_collections.ConfigDict()
  c.data.source = "sample"         # 'sample' (embedded Colin27 slices) while data.path is empty
  c.data.path = ""                 # data_prep shard directory; non-empty: train/val/test from it
  c.data.modalities = ()           # shard channels to use, by name (BraTS ('t1ce',)); (): all
  c.data.crop_hw = (160, 128)      # OASIS protocol: 208x176 slices, margin 24 -> 160x128 (ref §4.2)
  c.data.lr_patch = 24             # LR training patch; HR patch = lr_patch * scale = 96 at x4
  c.data.global_batch_size = 32    # thesis §5.3.3
  c.data.blur = False              # RDST: no blur (MIASSR blurs the LR with [.25 .5 .25])
  c.data.noise_sigma = 0.0         # additive Gaussian noise on the LR (thesis eq. 5.15); off
  c.data.kspace_sigma = 0.0        # k-space AWGN on the LR (thesis §3.4.2, Table 3.3), in units
                                   # of the original MR magnitudes (data/lesion.py); off
  c.data.intensity_divisor = 0.0   # raw value that became 1.0 (0: the shards' manifest / sample)
  c.data.roi = ml_collections.ConfigDict(dict(
      size=(0, 0),                 # (h, w) lesion-focused ROI (thesis §3.3.1); (0, 0): patches
      lesion_labels=(),            # label values of the lesion; (): every label > 0 (BraTS)
      train=True,                  # train on the ROIs (LFSR, MS-GAN); False: random patches,
                                   # ROIs only scored (Table 3.3's whole-slice baselines)
      centres="label"))            # 'label' centroids, 'detector' (train.frozen.detector) or a
                                   # CSV of `python -m medsr_jax.detect`
  c.data.eval_batch_size = 8       # whole slices per evaluation batch
  c.data.scales = ()               # arbitrary-scale training (MIASSR): (1.1, ..., 4.0); (): fixed
  c.data.scale_schedule = "permutation"  # one scale per batch: each run of len(scales) batches
                                         # is a permutation of them; 'iid' as the reference
  c.data.num_threads = 2           # grain reader threads (batches are identical for any count)
  c.data.prefetch_buffer_size = 2  # batches prepared ahead of the train step
  c.data.num_workers = 0           # >0: grain worker processes (mp_prefetch) instead of threads

  c.train = ml_collections.ConfigDict()
  c.train.stages = [stage("l1", steps=100_000, learning_rate=2e-4)]
  c.train.optimizer = "adam"
  c.train.b1 = 0.9
  c.train.b2 = 0.99                # author's code (thesis is silent), reference spec §2.1
  c.train.eps = 1e-8
  c.train.weight_decay = 0.0
  c.train.loss_threshold = 1e8     # a step whose loss exceeds this or is not finite is skipped
  c.train.ema_decay = 0.0          # 0 disables the exponential moving average of the params
  c.train.precision = "fp32"       # 'bf16': bfloat16 compute, float32 master weights and losses
                                   # (trainers/step.py); 'fp32': float32 throughout
  c.train.remat = "none"           # 'blocks': recompute each repeated block in the backward pass;
                                   # 'full': the whole network too (layers/remat.py)
  c.train.param_overview = True    # print clu's parameter table (process 0) at start-up
  c.train.log_every = 100
  c.train.eval_every = 2000        # validation PSNR/SSIM on whole validation slices
  c.train.checkpoint_every = 2000
  c.train.keep_checkpoints = 3     # latest N, plus the best by validation PSNR
  c.train.max_steps = -1           # stop early at this global step (-1: run every stage)
  c.train.freeze = ""               # generator param paths kept fixed, e.g. 'feature_extractor'
                                   # (transfer learning, thesis §4.3.3); '': train everything
  c.train.frozen = ml_collections.ConfigDict()
  c.train.frozen.vgg = ""          # export dir of 'vgg19' (python -m medsr_jax.export --model=vgg19)
  c.train.frozen.detector = ""     # export dir of a trained 'lesion_detector' (data.roi.centres)
  c.train.frozen.unet = ""         # export dir of a trained 'unet_seg' (segmentation perceptual
                                   # losses, thesis §5.2.2; configs/unet_seg.py)
  c.train.unet_loss = ml_collections.ConfigDict(dict(
      criterion="l1",              # thesis L1 distance; 'mse': the code's 'encoder-L1' (spec §7.5)
      bn="eval",                   # U-Net in inference mode; 'train': the code's batch statistics
      layer_division=False,        # True: the code's `loss /= len(layers)` inside the loop (ΣE)
      classes=()))                 # L_HRL classes; (): all (thesis); (1, 2, 3): 'lesion_only'
  c.train.perceptual = ml_collections.ConfigDict(dict(
      after_relu=False,            # VGG features before the ReLU (reference code, spec §7.2)
      channel_reduce="mean",       # C != 3 channels: mean of per-channel losses (thesis §4.3.3)
      normalize=True))             # ImageNet mean/std (False: the MINC VGG, spec §7.3)

  c.eval = ml_collections.ConfigDict()
  c.eval.num_panels = 4            # PNG panels LR | bicubic | SR | HR | error written at the end
  c.eval.use_ema = True            # evaluate/export the EMA params when EMA is on
  c.eval.method_label = ""         # the model's row in the chapter-3 tables ("": model name)
  c.eval.unet = ""                 # a 'unet_seg' export: adds Dice (and the medical Frechet
                                   # distance) to the test table; "": train.frozen.unet if set
  c.eval.dataset = ""              # Dice regions (metrics.dice.REGIONS): "" = the shards'
                                   # dataset, 'oasis' for the embedded sample
  c.eval.scales = ()               # arbitrary-scale runs: validation/test scales; (): the
                                   # thesis' six test scales 1.5, 2, ..., 4

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1)           # ('data', 'fsdp'); -1 takes the remaining devices
  c.mesh.axis_names = ("data", "fsdp")
  c.mesh.fsdp_min_size = 2 ** 16   # params smaller than this stay replicated under FSDP
  c.distributed = False            # call jax.distributed.initialize() (multi-host pods/clusters)
  c.coordinator_address = ""       # host:port of process 0; empty: detected (TPU, SLURM, ...)
  c.num_processes = -1             # -1: detected
  c.process_id = -1                # -1: detected
  return c


def total_steps(config: ml_collections.ConfigDict) -> int:
  """Number of steps of all stages, capped by `train.max_steps` when it is set."""
  total = sum(int(s.steps) for s in config.train.stages)
  if config.train.max_steps is not None and config.train.max_steps >= 0:
    total = min(total, int(config.train.max_steps))
  return total
