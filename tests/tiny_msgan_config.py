"""A tiny lesion-focused MS-GAN run on the embedded sample, for tests:
`--config=tests/tiny_msgan_config.py:steps=4`.

configs/msgan.py's demo with a 1-block, 8-wide stacked generator at x4 on 16 x 16 ROIs (LR 4 x 4)
of 32 x 32 centre crops, a narrow critic, a 2-step multi-scale L2 warm-up, then MS-GAN steps;
logging, validation and checkpoints every 2 steps. `sigma=` adds the k-space noise.
"""

import importlib.util
import pathlib

from medsr_jax import config_lib

_MSGAN = pathlib.Path(__file__).resolve().parents[1] / "configs" / "msgan.py"


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, steps=4, sigma=0.0)
  spec = importlib.util.spec_from_file_location("msgan_config", _MSGAN)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("demo")
  c.model.kwargs.update(dict(n_feats=8, n_resblocks=1))
  c.data.crop_hw = (32, 32)
  c.data.roi.size = (16, 16)
  c.data.global_batch_size = 8
  c.data.eval_batch_size = 32
  c.data.kspace_sigma = float(opts.sigma)
  c.gan.discriminator = config_lib.model_config(
      c.gan.discriminator.name, input_size=16, widths=(4, 4, 8, 8, 8, 8, 8, 8), fc_features=8)
  c.train.stages[0].steps = 2
  c.train.stages[1].steps = 10
  c.train.max_steps = opts.steps
  c.train.log_every = 1
  c.train.eval_every = 2
  c.train.checkpoint_every = 2
  c.eval.num_panels = 1
  return c
