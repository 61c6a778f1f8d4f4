"""MS-GAN (thesis ch. 3, §3.2.3-§3.3.3, Tables 3.4/3.5): lesion-focused multi-scale WGAN-GP, x4.

  python -m data_prep.build --dataset=brats --protocol=msgan --src=/data/BraTS2018 --out=/data/shards/brats_msgan
  python -m medsr_jax.main --config=configs/msgan.py --workdir=runs/msgan \\
      --config.data.path=/data/shards/brats_msgan --config.train.frozen.vgg=weights/vgg19
  python -m medsr_jax.main --config=configs/msgan.py:variant=wgan --workdir=runs/msgan_wgan ...
  python -m experiments.sweep --config=configs/msgan.py --workdir=runs/grid/msgan   # Table 3.4
  python -m medsr_jax.main --config=configs/msgan.py:demo --workdir=runs/msgan_demo  # 2-core CPU

The thesis recipe (default, `variant=msgan`): the stacked generator `ms_gan` (two x2 SRResNets of
16 blocks of 64 3x3 kernels, ReLU, Fig. 3.3 bottom) trained jointly with the WGAN critic of
Fig. 3.4 (`msgan_d`) from scratch, no warm-up (§3.3.3), on the undivided 120 x 120 tumour ROIs of
the BraTS chapter-3 shards (§3.3.1; `data.roi`, centres: see below), LR = ROI / 4, batch 16, with
eq. 3.21:

  L = alpha * L2(I_sr^x2, I_hr down 2) + beta * L2(I_sr^x4, I_hr) + lambda * L_adv(I_sr^x4)
      + eta * L_perc(I_sr^x4)

alpha = beta = 1 (the poster's unweighted sum), lambda = 1e-3 and eta = 0.006 for the
post-activation VGG54 features (the thesis gives no values: SRGAN's, documented choices,
sweepable as `lambda=`, `eta=`). WGAN-GP: the critic loss of eq. 3.19's Wasserstein form plus
10 x the gradient penalty (eq. 3.20), `adversarial.py`. Generator and critic both use the
thesis' optimiser, Adam betas (0.9, 0.999), lr 1e-4 then 1e-5 at the midpoint of 300 epochs of
the 9,559 training ROIs (`--config.gan.d_optimizer=gp` gives the reference code's critic Adam
(1e-5, betas (0, 0.9))). 300 epochs at batch 16 are 300 * ceil(9559 / 16) = 179,400 steps.

ROI centres (`data.roi.centres`): 'label' (default) crops around the manual label's centroid at
training and test time; the thesis crops around the lesion detector's prediction on the LR
image (eq. 3.9): `--config.data.roi.centres=detector --config.train.frozen.detector=DIR` with a
detector trained by configs/lesion_detector.py, or `--config.data.roi.centres=FILE.csv` from
`python -m medsr_jax.detect` (docs/FIDELITY.md).

The six GAN variants of Table 3.4 (`variant=`, the config's `sweep()`; each with its own
generator, not a factorial grid):
  gan_pretrain    SRResNet, vanilla GAN (`srgan_d`), MSE pre-training for 50 epochs, L2(x4)
  wgan_pretrain   SRResNet, WGAN (weight clipping, `msgan_d`), 50 pre-training epochs
  wgan            SRResNet, WGAN, from scratch
  wgan_gp         SRResNet, WGAN-GP, from scratch
  wgan_gp_x2      the multi-scale SRResNet (`ms_srresnet`: one trunk, an intermediate x2 image),
                  WGAN-GP + L2(x2)
  msgan           the stacked generator `ms_gan`, WGAN-GP + L2(x2)  (the proposed method)
Every variant uses L2(x4) + lambda adv + eta VGG54 on the final image; the pre-trained ones
report their warm-up generator too. The generator 'SRResNet' of Table 3.4 is the zoo's
`srresnet` (two x2 sub-pixel up-samplers, the reference layout).

`demo`: the embedded sample has no lesion, so its CSF class stands in for one
(`data.roi.lesion_labels=(1,)`: the ventricles and sulci, whose centroid moves from slice to
slice); 64 x 64 ROIs (LR 16 x 16) of the 160 x 128 slices, a stacked generator of two 3-block,
32-wide x2 SRResNets without BatchNorm and a narrow critic; an SRResNet-style warm-up of the
multi-scale L2 loss (alpha L2(x2) + beta L2(x4)) so that the GAN phase of a few minutes starts
from a working generator, then the MS-GAN loss with lambda lowered to 1e-4 (as the SRGAN demo:
with L2 as the only content loss, 1e-3 outweighs it and PSNR collapses). The table has bicubic, bilinear, B+NLD, the
warm-up generator and MS-GAN, on the ROIs and on whole slices.
"""

from medsr_jax import config_lib
from medsr_jax.data import transforms
from medsr_jax.losses import adversarial

ROI = transforms.ROI_SIZES['brats']          # (120, 120), thesis §3.3.1
TRAIN_SLICES = 9559                          # thesis §3.3.1 (BraTS 2018 T1ce tumour slices)
BATCH = 16
EPOCHS, PRETRAIN_EPOCHS = 300, 50            # thesis §3.3.3, §3.4.3
LAMBDA, ETA = 1e-3, 0.006                    # not given by the thesis: SRGAN's values
DEMO_LAMBDA = 1e-4  # the demo's content loss is L2 alone (no VGG file): keep adv below it
VARIANTS = ('gan_pretrain', 'wgan_pretrain', 'wgan', 'wgan_gp', 'wgan_gp_x2', 'msgan')
_GENERATOR = {'gan_pretrain': 'srresnet', 'wgan_pretrain': 'srresnet', 'wgan': 'srresnet',
              'wgan_gp': 'srresnet', 'wgan_gp_x2': 'ms_srresnet', 'msgan': 'ms_gan'}
_KIND = {'gan_pretrain': 'vanilla', 'wgan_pretrain': 'wgan', 'wgan': 'wgan', 'wgan_gp': 'wgan_gp',
         'wgan_gp_x2': 'wgan_gp', 'msgan': 'wgan_gp'}


def epochs_to_steps(epochs: int, slices: int = TRAIN_SLICES, batch: int = BATCH) -> int:
  return epochs * -(-slices // batch)


def gan_section(kind: str, hr_size: int):
  """`config.gan`: the WGAN critic of Fig. 3.4 (or SRGAN's D for the vanilla GAN)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  d_name = 'srgan_d' if kind == 'vanilla' else 'msgan_d'
  return ml_collections.ConfigDict(dict(
      kind=kind, n_critic=1, gp_weight=adversarial.GP_WEIGHT,
      d_optimizer='generator',            # thesis: both networks with the same Adam
      d_learning_rate=1e-5, d_b1=0.0, d_b2=0.9,  # the reference's 'gp' optimiser (switch)
      discriminator=config_lib.model_config(d_name, input_size=hr_size)))


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, variant='msgan', demo=False, **{'lambda': LAMBDA, 'eta': ETA})
  if opts.variant not in VARIANTS:
    raise ValueError(f'variant must be one of {VARIANTS}, got {opts.variant!r}')
  c = config_lib.base_sr_config()
  c.trainer = 'gan'
  c.model = config_lib.model_config(_GENERATOR[opts.variant], scale=4)
  c.data.source = 'brats_msgan'        # needs --config.data.path (data_prep --protocol=msgan)
  c.data.global_batch_size = BATCH
  c.data.roi.size = ROI
  c.data.roi.centres = 'label'
  c.data.eval_batch_size = 16
  c.train.b2 = 0.999                   # thesis §3.3.3: betas (0.9, 0.999)
  c.train.perceptual.after_relu = True  # "feature maps after activation" (§3.2.4)
  multi_scale = opts.variant in ('wgan_gp_x2', 'msgan')
  losses = {'mse': 1.0, 'vgg54': float(opts.eta), 'adv': float(opts['lambda'])}
  if multi_scale:
    losses['mse_x2'] = 1.0
  steps = epochs_to_steps(EPOCHS)
  stages = [config_lib.stage('gan', steps=steps, learning_rate=1e-4, losses=losses,
                             milestones=(steps // 2,), gamma=0.1)]
  if opts.variant.endswith('_pretrain'):
    stages.insert(0, config_lib.stage('mse_pretrain', steps=epochs_to_steps(PRETRAIN_EPOCHS),
                                      learning_rate=1e-4, loss='mse'))
  c.train.stages = stages
  c.train.eval_every = 5000
  c.train.checkpoint_every = 5000
  c.gan = gan_section(_KIND[opts.variant], ROI[0])
  c.eval.method_label = {'msgan': 'MS-GAN', 'wgan_gp_x2': 'WGAN-GP + L2(x2)', 'wgan_gp': 'WGAN-GP',
                         'wgan': 'WGAN', 'wgan_pretrain': 'WGAN + pre-train',
                         'gan_pretrain': 'GAN + pre-train'}[opts.variant]
  if opts.demo:
    apply_demo(c, multi_scale)
  return c


def apply_demo(c, multi_scale: bool):
  """The embedded sample on a 2-core CPU in a few minutes (module docstring)."""
  c.data.source = 'sample'
  c.data.roi.size = (64, 64)
  c.data.roi.lesion_labels = (1,)      # stand-in lesion: CSF (the sample has no lesion)
  c.data.global_batch_size = 8
  c.model.kwargs.update(dict(n_feats=32, n_resblocks=3, bn=False, upsampler_bn=False))
  c.gan.discriminator = config_lib.model_config(
      c.gan.discriminator.name, input_size=64, widths=(16, 16, 32, 32, 64, 64, 128, 128),
      fc_features=128)
  warmup = {'mse': 1.0, 'mse_x2': 1.0} if multi_scale else {'mse': 1.0}
  losses = dict(c.train.stages[-1].losses, adv=DEMO_LAMBDA)
  c.train.stages = [
      config_lib.stage('l2_warmup', steps=1600, learning_rate=1e-3, losses=warmup,
                       warmup_steps=100, milestones=(1100, 1400)),
      config_lib.stage('gan', steps=300, learning_rate=1e-4, losses=losses),
  ]
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  c.eval.num_panels = 3
  c.demo_without_vgg = True            # set the VGG weight to 0 when no VGG export is given
  return c


def sweep(add):
  """Table 3.4's six GAN variants (each trains its own generator)."""
  for variant in VARIANTS:
    add(config_arg=f'variant={variant}')
