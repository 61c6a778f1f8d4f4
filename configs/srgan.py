"""SRGAN (thesis §3.3.3, Table 3.3 baseline): SRResNet + the SRGAN discriminator, MSE warm-up then
MSE + VGG54 + adversarial, trained by the GAN trainer (`trainers/gan.py`).

  python -m medsr_jax.main --config=configs/srgan.py --workdir=runs/srgan \\
      --config.train.frozen.vgg=weights/vgg19
  python -m medsr_jax.main --config=configs/srgan.py:gan=wgan_gp --workdir=runs/srgan_wgan_gp ...
  python -m medsr_jax.main --config=configs/srgan.py:demo --workdir=runs/srgan_demo   # 2-core CPU

Options after the colon: `gan=vanilla|ragan|wgan|wgan_gp|ragan_gp|wgan_l1` (default vanilla, as
SRGAN), `scale=N`, `demo`.

The thesis gives no weights or step counts for its SRGAN baseline, so they are the SRGAN paper's
(Ledig et al. 2017; docs/FIDELITY.md): an MSE-pretrained generator (10^6 steps at 1e-4), then
10^5 steps at 1e-4 and 10^5 at 1e-5 of MSE + VGG54 + 1e-3 * adversarial; the VGG54 features are
rescaled by 1/12.75, i.e. a loss weight of 1/12.75^2 = 0.00615 on their MSE, taken after the ReLU
(`train.perceptual.after_relu=True`, thesis §3.2.4); batch 16 of 96 x 96 HR patches; Adam with
beta1 0.9. The discriminator is `srgan_d` (BatchNorm) with the generator's optimiser settings, as
the author's code does for kinds without a gradient penalty; WGAN-GP kinds get `wgan_gp_d` (no BN)
and Adam(1e-5, betas (0, 0.9)).

`demo`: a 6-block, 32-wide SRResNet without BatchNorm (BN statistics of 16 x 16 patches in
batches of 8 do not carry over to whole slices; with BN the warm-up stayed below bicubic) and a
narrow discriminator on 16 -> 64 patches of the
embedded sample, 3,000 MSE warm-up steps then 600 adversarial steps with the adversarial weight
lowered to 1e-4 (with MSE as the only content loss, SRGAN's 1e-3 lets the discriminator's term
outweigh it several times over and PSNR collapses within a few hundred steps). Without a VGG export
(`--config.train.frozen.vgg=DIR`) the demo sets the VGG weight to 0 and says so in its log and
`results.md`.
"""

from medsr_jax import config_lib
from medsr_jax.losses import adversarial

VGG54_WEIGHT = 1 / 12.75 ** 2  # SRGAN: VGG features rescaled by 1/12.75 before the MSE
ADV_WEIGHT = 1e-3
DEMO_ADV_WEIGHT = 1e-4  # the demo's content loss is MSE alone (no VGG file): keep adv below it


def gan_config(kind: str, hr_size: int):
  """`config.gan`: the loss kind, the discriminator and its optimiser (reference spec §7.4)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  if kind not in adversarial.KINDS or kind == 'scalegan':
    raise ValueError(f'gan must be one of {[k for k in adversarial.KINDS if k != "scalegan"]}, '
                     f'got {kind!r}')
  d_name = 'wgan_gp_d' if adversarial.uses_penalty(kind) else 'srgan_d'
  return ml_collections.ConfigDict(dict(
      kind=kind,
      n_critic=1,                      # D updates per G update
      gp_weight=adversarial.GP_WEIGHT,  # lambda of WGAN-GP
      d_optimizer='auto',              # 'gp' for *_gp kinds, else the generator's ('generator')
      d_learning_rate=1e-5, d_b1=0.0, d_b2=0.9,  # the 'gp' optimiser (reference)
      discriminator=config_lib.model_config(d_name, input_size=hr_size),
  ))


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, gan='vanilla', scale=4, demo=False)
  c = config_lib.base_sr_config()
  c.trainer = 'gan'
  c.model = config_lib.model_config('srresnet', scale=opts.scale)
  c.data.global_batch_size = 16
  c.data.lr_patch = 96 // opts.scale
  c.train.b2 = 0.999                   # SRGAN states beta1 = 0.9 only; Adam's default beta2
  c.train.perceptual.after_relu = True
  gan_losses = {'mse': 1.0, 'vgg54': VGG54_WEIGHT, 'adv': ADV_WEIGHT}
  c.train.stages = [
      config_lib.stage('mse_warmup', steps=1_000_000, learning_rate=1e-4, loss='mse'),
      config_lib.stage('gan', steps=200_000, learning_rate=1e-4, losses=gan_losses,
                       milestones=(100_000,), gamma=0.1),
  ]
  c.gan = gan_config(opts.gan, c.data.lr_patch * opts.scale)
  if opts.demo:
    apply_demo(c)
  return c


def apply_demo(c):
  """Small enough for a 2-core CPU in a few minutes; the VGG term needs a VGG export."""
  c.model.kwargs.update(dict(n_feats=32, n_resblocks=6, bn=False, upsampler_bn=False))
  c.data.global_batch_size = 8
  c.data.lr_patch = 16
  hr = c.data.lr_patch * c.model.scale
  c.gan.discriminator = config_lib.model_config(
      c.gan.discriminator.name, input_size=hr, widths=(16, 16, 32, 32, 64, 64, 128, 128),
      fc_features=128)
  losses = dict(c.train.stages[1].losses, adv=DEMO_ADV_WEIGHT)
  c.train.stages = [
      config_lib.stage('mse_warmup', steps=3000, learning_rate=1e-3, loss='mse',
                       warmup_steps=100, milestones=(2000, 2600)),
      config_lib.stage('gan', steps=600, learning_rate=1e-4, losses=losses),
  ]
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.checkpoint_every = 200
  c.demo_without_vgg = True            # set the VGG weight to 0 when no VGG export is given
  return c


def sweep(add):
  """The GAN variants compared in chapter 3 (MS-GAN poster: vanilla, WGAN, WGAN-GP)."""
  for kind in ('vanilla', 'wgan', 'wgan_gp'):
    add(config_arg=f'gan={kind}')
