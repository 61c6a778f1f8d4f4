"""A tiny MIASSR run on the embedded sample, for tests: `--config=tests/tiny_miassr_config.py`.

configs/miassr.py with a 1-block, 4-wide EDSR-lite feature extractor and an 8-wide weight
predictor, HR patches of 16 (LR int(16 / s)) in batches of 8 over 32 x 32 slices, an L1 stage and
(`gan=wgan_gp`, `gan=scalegan`, ...) a GAN stage with a narrow critic; logging every step,
validating at two scales and checkpointing every `every` steps, over a (4, 2) mesh when 8
devices are present. Options: steps (max_steps), warmup / gan_steps (stage lengths), gan ('' for
none), scales ('thesis' for all 30, else a '|'-separated list), every, mesh, w / b (the feature
extractor's width and depth; `sweep` is a 2 x 2 grid of them for the grid-to-report test).
"""

import importlib.util
import pathlib

from medsr_jax import config_lib

_MIASSR = pathlib.Path(__file__).resolve().parents[1] / "configs" / "miassr.py"


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, steps=-1, warmup=4, gan_steps=0, gan="", scales="2.0|4.0",
                              every=4, mesh="4x2", w=4, b=1)
  spec = importlib.util.spec_from_file_location("miassr_config", _MIASSR)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(f"demo,gan={opts.gan or 'wgan_gp'}")
  c.model = config_lib.model_config("miassr", scale=4.0, weight_hidden=8,
                                    feature_options=(("n_feats", int(opts.w)),
                                                     ("n_resblocks", int(opts.b))))
  c.data.scales = (module.arbitrary_scale.THESIS_SCALES if opts.scales == "thesis"
                   else tuple(float(s) for s in str(opts.scales).split("|")))
  c.data.lr_patch = 4                  # HR patch int(4 * 4.0) = 16
  c.data.global_batch_size = 8
  c.data.crop_hw = (32, 32)
  c.data.eval_batch_size = 16
  c.eval.scales = (2.0, 3.0)
  stages = [config_lib.stage("warmup", steps=opts.warmup, learning_rate=1e-3, loss="l1")]
  if opts.gan_steps:
    stages.append(config_lib.stage("gan", steps=opts.gan_steps, learning_rate=5e-4,
                                   losses={"l1": 1.0, "adv": 1e-2}))
    c.gan.discriminator = config_lib.model_config(
        c.gan.discriminator.name, input_size=16, widths=(4, 4, 8, 8, 8, 8, 8, 8), fc_features=8)
  else:
    del c["gan"]
  c.train.stages = stages
  c.train.max_steps = opts.steps
  c.train.log_every = 1
  c.train.eval_every = opts.every
  c.train.checkpoint_every = opts.every
  c.mesh.shape = tuple(int(v) for v in str(opts.mesh).split("x"))
  return c


def sweep(add):
  """Tables 4.3 / 4.4 in miniature: widths 4 and 8 by depths 1 and 2, two warm-up steps each."""
  for w in (4, 8):
    for b in (1, 2):
      add(config_arg=f"w={w},b={b},warmup=2,every=2,mesh=1x1,scales=2.0")
