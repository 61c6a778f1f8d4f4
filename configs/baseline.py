"""Any fixed-scale generator of the zoo under the chapter-5 training protocol (thesis §4.4, §5.3).

  python -m medsr_jax.main --config=configs/baseline.py:model=edsr_lite --workdir=runs/edsr_lite
  python -m medsr_jax.main --config=configs/baseline.py:model=srresnet,loss=mse,scale=2 --workdir=...
  python -m experiments.sweep --config=configs/baseline.py --workdir=runs/baselines   # all of them

Options after the colon: `model=NAME` (a fixed-scale generator: srresnet, edsr_lite, edsr,
srdensenet, rdn, esrgan, rcan, han, swinir_light, swinir, swinir_psd, convnet_lite,
convnet_large, rdst, rdst_e, rdst_gff, rdst_mlp_gff), `scale=N`, `loss=l1|mse`, `demo`.

The thesis re-trains every comparison method "with the same steps and learning rate decay policy"
(§4.4) on the same patches, so the stages are those of configs/rdst.py: 100k steps at 2e-4, then
20k from 1e-4 halved at 10k / 15k / 17.5k. The loss is L1 for all (the thesis' ESRGAN-L1; SRResNet
was published with MSE: `loss=mse`). `demo` keeps the model and shortens the run to 300 steps.
Architecture options stay overridable: `--config.model.kwargs.<option>=...`.
"""

from medsr_jax import config_lib

FIXED_SCALE_GENERATORS = ('srresnet', 'edsr_lite', 'edsr', 'srdensenet', 'rdn', 'esrgan', 'rcan',
                          'han', 'swinir_light', 'swinir', 'swinir_psd', 'convnet_lite',
                          'convnet_large', 'rdst', 'rdst_e', 'rdst_gff', 'rdst_mlp_gff')


def get_config(arg=None):
  opts = config_lib.parse_arg(arg, model='edsr_lite', scale=4, loss='l1', demo=False)
  if opts.model not in FIXED_SCALE_GENERATORS:
    raise ValueError(f'model must be one of {FIXED_SCALE_GENERATORS} (meta, multi-scale and '
                     f'adversarial models have their own trainers), got {opts.model!r}')
  c = config_lib.base_sr_config()
  c.model = config_lib.model_config(opts.model, scale=opts.scale)
  c.train.stages = [
      config_lib.stage(opts.loss, steps=100_000, learning_rate=2e-4),
      config_lib.stage(opts.loss, steps=20_000, learning_rate=1e-4,
                       milestones=(10_000, 15_000, 17_500), gamma=0.5),
  ]
  if opts.demo:
    c.train.stages = [config_lib.stage(opts.loss, steps=300, learning_rate=2e-4)]
    c.data.global_batch_size = 8
    c.train.log_every = 50
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
  return c


def sweep(add):
  """One run per comparison method of Tables 5.1 / 5.2."""
  for name in FIXED_SCALE_GENERATORS:
    add(config_arg=f'model={name}')
