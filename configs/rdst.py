"""RDST (thesis ch. 5): residual dense Swin transformer, x4, trained with L1 then fine-tuned.

  python -m medsr_jax.main --config=configs/rdst.py --workdir=runs/rdst
  python -m medsr_jax.main --config=configs/rdst.py:demo --workdir=runs/demo   # 2-core CPU, minutes

Options after the colon (comma separated): `demo`, `scale=N`, `blocks=N` (number of RDSTBs).

Thesis settings (§5.3.3): batch 32, LR patch 24 -> HR 96 at x4, Adam, 100k steps of L1 at 2e-4 with
no decay, then a 20k-step fine-tuning stage starting at 1e-4, halved at 10k, 15k and 17.5k. The
fine-tuning stage's segmentation perceptual loss comes with the U-Net; until then it is L1 (the
thesis' "120k L1" baseline).
"""

from medsr_jax import config_lib


def get_config(arg=None):
  return make_config(arg, model_name="rdst", blocks=8)


def make_config(arg, *, model_name, blocks):
  """The chapter-5 protocol for an RDST variant with `blocks` RDSTBs (8: RDST, 4: RDST-E)."""
  opts = config_lib.parse_arg(arg, demo=False, scale=4, blocks=blocks)
  c = config_lib.base_sr_config()
  c.model = config_lib.model_config(model_name, scale=opts.scale, num_blocks=opts.blocks)
  c.train.stages = [
      config_lib.stage("l1", steps=100_000, learning_rate=2e-4),
      config_lib.stage("finetune", steps=20_000, learning_rate=1e-4,
                       milestones=(10_000, 15_000, 17_500), gamma=0.5),
  ]
  if opts.demo:
    apply_demo(c)
  return c


def apply_demo(c):
  """The same pipeline, small enough to beat bicubic on a 2-core CPU in about five minutes.

  One RDSTB of width 30 (growth 12, 6 heads) instead of 8 of width 60, batch 8 of 16 -> 64
  patches, a higher learning rate after a short warm-up, and 2,400 steps.
  """
  c.model.kwargs.num_blocks = 1
  c.model.kwargs.embed_dim = 30
  c.model.kwargs.growth_rate = 12
  c.model.kwargs.num_heads = 6
  c.data.global_batch_size = 8
  c.data.lr_patch = 16
  c.train.stages = [
      config_lib.stage("l1", steps=2400, learning_rate=1.5e-3, warmup_steps=100,
                       milestones=(1600, 2000), gamma=0.5),
  ]
  c.train.log_every = 100
  c.train.eval_every = 400
  c.train.checkpoint_every = 800
  return c


def sweep(add):
  """Ablation grid of chapter 5 (number of RDSTBs), expanded by experiments/."""
  for blocks in (4, 8):
    add(**{"model.kwargs.num_blocks": blocks})
