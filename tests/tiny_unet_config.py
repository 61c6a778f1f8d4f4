"""A tiny segmentation U-Net run on the embedded sample, for tests:
`--config=tests/tiny_unet_config.py:steps=6`.

configs/unet_seg.py:demo with a minimal U-Net (stem 4, stages (4, 8, 8, 8) of one block,
decoder (8, 8, 8, 4, 4)) on 32 x 32 centre crops of the sample's slices and tissue labels,
batches of 8, one Dice stage of 12 steps at lr 1e-2 (halved at step 8), stopped at `steps`;
logging every step and validating / checkpointing every 2 steps, over a (4, 2) mesh when 8
devices are present (`mesh=1x1` for one).
"""

from __future__ import annotations

import importlib.util
import pathlib

from medsr_jax import config_lib

_UNET = pathlib.Path(__file__).resolve().parents[1] / "configs" / "unet_seg.py"


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, steps=6, mesh="4x2")
  spec = importlib.util.spec_from_file_location("unet_seg_config", _UNET)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("demo")
  c.model.kwargs.update(dict(stem_features=4, stage_widths=(4, 8, 8, 8),
                             blocks_per_stage=(1, 1, 1, 1), decoder_channels=(8, 8, 8, 4, 4),
                             example_hw=(32, 32)))
  c.data.crop_hw = (32, 32)
  c.data.global_batch_size = 8
  c.data.eval_batch_size = 16
  c.train.stages = [config_lib.stage("dice", steps=12, learning_rate=1e-2, loss="dice",
                                     milestones=(8,))]
  c.train.max_steps = opts.steps
  c.train.log_every = 1
  c.train.eval_every = 2
  c.train.checkpoint_every = 2
  c.mesh.shape = tuple(int(v) for v in str(opts.mesh).split("x"))
  return c
