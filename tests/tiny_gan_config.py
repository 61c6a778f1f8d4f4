"""A tiny GAN run on the embedded sample, for tests: `--config=tests/tiny_gan_config.py:steps=6`.

configs/srgan.py with WGAN-GP (the penalty path), a 1-block, 8-wide EDSR-lite generator at x2,
8 -> 16 patches in batches of 8, a narrow `wgan_gp_d`; a 2-step MSE warm-up stage, then a GAN
stage; logging every step and validating/checkpointing every 2 steps, over a (4, 2) mesh when 8
devices are present.
"""

import importlib.util
import pathlib

from medsr_jax import config_lib

_SRGAN = pathlib.Path(__file__).resolve().parents[1] / "configs" / "srgan.py"


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, steps=6, mesh="4x2", gan="wgan_gp", n_critic=1)
  spec = importlib.util.spec_from_file_location("srgan_config", _SRGAN)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(f"demo,scale=2,gan={opts.gan}")
  c.model = config_lib.model_config("edsr_lite", scale=2, n_feats=8, n_resblocks=1)
  c.data.global_batch_size = 8
  c.data.lr_patch = 8
  c.data.crop_hw = (32, 32)
  c.data.eval_batch_size = 16
  c.gan.n_critic = opts.n_critic
  c.gan.discriminator = config_lib.model_config(
      c.gan.discriminator.name, input_size=16, widths=(4, 4, 8, 8, 8, 8, 8, 8), fc_features=8)
  c.train.stages = [
      config_lib.stage("warmup", steps=2, learning_rate=1e-3, loss="mse"),
      config_lib.stage("gan", steps=10, learning_rate=5e-4,
                       losses={"l1": 1.0, "vgg54": 0.006, "adv": 1e-2}),
  ]
  c.train.max_steps = opts.steps
  c.train.log_every = 1
  c.train.eval_every = 2
  c.train.checkpoint_every = 2
  c.eval.num_panels = 1
  c.mesh.shape = tuple(int(v) for v in str(opts.mesh).split("x"))
  return c
