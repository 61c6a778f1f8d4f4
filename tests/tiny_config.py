"""A tiny RDST run on the embedded sample, for tests: `--config=tests/tiny_config.py:steps=9`.

The demo pipeline with a 1-block, 12-wide RDST at x2, 8 -> 16 patches in batches of 8, two
stages of 6 steps (the second starts at step 6 with its own learning rate), logging every step
and validating/checkpointing every 3 steps, over a (4, 2) mesh when 8 devices are present.
"""

import importlib.util
import pathlib

from medsr_jax import config_lib

_RDST = pathlib.Path(__file__).resolve().parents[1] / "configs" / "rdst.py"


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, steps=9, mesh="4x2")
  spec = importlib.util.spec_from_file_location("rdst_config", _RDST)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("demo,scale=2,loss=l1")
  c.prerequisites = {}                 # the demo's U-Net prerequisite (tests train their own)
  c.model.kwargs.update(dict(embed_dim=12, num_blocks=1, num_heads=2, growth_rate=6,
                             window_size=4))
  c.data.global_batch_size = 8
  c.data.lr_patch = 8
  c.data.crop_hw = (32, 32)
  c.data.eval_batch_size = 16
  first = config_lib.stage("first", steps=6, learning_rate=1e-3, milestones=(4,))
  second = config_lib.stage("second", steps=6, learning_rate=5e-4)
  c.train.stages = [first, second]
  c.train.max_steps = opts.steps
  c.train.log_every = 1
  c.train.eval_every = 3
  c.train.checkpoint_every = 3
  c.mesh.shape = tuple(int(v) for v in str(opts.mesh).split("x"))
  return c
