"""MIASSR and the Meta-<feature extractor> models: arbitrary-scale SR with the meta-upscale module.

Thesis ch. 4: MIASSR (§4.2, Fig. 4.1, Eqs. 4.4-4.11) is an EDSR-lite feature extractor followed
by the Meta-SR meta-upscale module (`layers.meta_upscale`); the ablation of §4.4.2 (Fig. 4.8)
swaps the feature extractor for SRResNet, EDSR, SRDenseNet, RDN (MetaRDN), ESRGAN and MDSR.
Reference: the author's `MIASSR:networks/meta_sr.py` (`MetaSR`), spec §5.10, §5.11, §6:

  x -> MeanShift sub -> feature extractor (its `feature_maps_only=True` mode: no MeanShift, no
    tail; (B, h, w, F) features) -> MetaUpscale(F -> C, 3 x 3) at scale s -> MeanShift add
    -> (B, int(s h), int(s w), C).

  name              feature extractor (registry name)   trainable params at C = 1
                                                       thesis default   reference_tail_scale=2
  'miassr'          'edsr_lite' (64 feats, 16 blocks)       1,368,320     1,516,609 (ref.)
  'meta_rdn'        'rdn'  (MetaRDN of Hu et al.)           5,614,976     5,763,265 (ref.)
  'meta_srresnet'   'srresnet'                              1,372,417     1,520,834 (ref.)
  'meta_edsr'       'edsr' (full: 256 feats, 32 blocks)    38,950,912    41,313,537
  'meta_srdensenet' 'srdensenet'                            6,603,424     8,966,049
  'meta_esrgan'     'esrgan'                                9,950,400    10,098,689
  'meta_mdsr'       'mdsr' (head ceil(s); 80 blocks)        6,097,024     6,874,243
  (ref.) = the reference total of spec §6 minus its 4 frozen MeanShift numbers.

Calling convention: `net.apply(variables, x, scale)` with `scale` a static Python float >= 1
(the output shape depends on it: one compilation per distinct scale); `scale=None` uses the
nominal build-time `scale` field, which is also what `example_inputs()` traces with. In
training the model gets the nominal s of the batch (one of 1.1, 1.2, ..., 4.0; spec §4.3), not
the realised HR / LR size ratio. `train=` is passed to feature extractors with BatchNorm
(Meta-SRResNet; apply with `mutable=['batch_stats']`).

The reference's dead x2 tail (spec §5.3, §5.11, §6): the author's feature extractors still
build their up-sampler + tail conv for the ini's `sr_scale` (2.0) although `MetaSR` never runs
it: 148,289 parameters for EDSR-lite and RDN that appear in the reference state dict and in the
thesis' parameter figures (MIASSR 1.5M = 1,516,613 with MeanShift). Here:
  * `reference_tail_scale=None` (default, the thesis' network): no dead trainable parameters.
    Importing a reference state dict keeps its dead tail in the non-trainable collection
    'unused' (`{'unused': {'dead_tail': ...}}`), which `apply` ignores and the PyTorch export
    writes back, so import / export round-trips exactly. Exporting variables without 'unused'
    writes zeros for those keys (the reference's forward never reads them).
  * `reference_tail_scale=2.0`: the dead tail is built as trainable params under
    `params['dead_tail']` (BatchNorm statistics, if any, under `batch_stats['dead_tail']`),
    initialised like PyTorch's defaults, so `count_params` equals the reference exactly
    (1,516,609 for miassr = 1,516,613 minus the 4 frozen MeanShift numbers). They never touch
    the output (zero gradients).
  The dead-tail structure is derived from the feature extractor itself (its full model at that
  scale minus its `feature_maps_only` model), so it also works for the models without a
  reference layout (for MDSR that is all three per-scale tails; inferred, not verified).

MeanShift: the top-level frozen `sub_mean` / `add_mean` of the reference are `common.MeanShift`
(values in 'constants'; mean 0 / std 1 = identity unless imported or set with `mean` / `std`;
the MIASSR ini uses the dataset mean at train time, 'zero_mean').

Feature-extractor defaults: the thesis' ablation replaces only the up-samplers "and keeps all
the other original settings (e.g. depth and width)" and counts Meta-MDSR among the deeper
networks, so 'meta_edsr' is the full EDSR and 'meta_mdsr' the 80-block MDSR of the fixed-scale
baselines; the MIASSR ini's [MDSR] section (8 blocks) is `feature_options={'n_resblocks': 8}`.
`feature_options` overrides any option of the feature extractor (e.g. `scan_blocks`).

Init: the feature extractor gets `init_scheme`; the weight-prediction MLP always uses PyTorch's
default Linear init (what the reference does in both schemes, see `layers.meta_upscale`).

Run `python -m pytest tests/test_meta_sr.py tests/test_meta_upscale.py`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax.errors import InputError
from medsr_jax.layers import common
from medsr_jax.layers import meta_upscale
from medsr_jax.models import base
from medsr_jax.models import registry

# Scale sampling of the reference trainer (spec §4.3): one nominal scale per batch, uniform over
# TRAINING_SCALES; evaluation at TEST_SCALES (MIASSR ini).
TRAINING_SCALES = tuple(round(1.1 + 0.1 * i, 1) for i in range(30))
TEST_SCALES = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
UNUSED = 'unused'          # collection of imported dead-tail values (thesis configuration)
DEAD_TAIL = 'dead_tail'    # Flax name of the dead tail (params / batch_stats / unused)
FEATURE_EXTRACTORS = ('edsr_lite', 'edsr', 'srresnet', 'srdensenet', 'rdn', 'esrgan', 'mdsr')
META_MODELS = {
    'miassr': 'edsr_lite',
    'meta_rdn': 'rdn',
    'meta_srresnet': 'srresnet',
    'meta_edsr': 'edsr',
    'meta_srdensenet': 'srdensenet',
    'meta_esrgan': 'esrgan',
    'meta_mdsr': 'mdsr',
}

# One dead-tail variable: (collection, path inside the tail, shape, init kind, fan_in).
DeadLeaf = tuple[str, tuple[str, ...], tuple[int, ...], str, int]


def _options(options: Any) -> dict[str, Any]:
  """`feature_options` (a mapping or (name, value) pairs) as a dict."""
  return dict(options or ())


def _hashable(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  if isinstance(value, Mapping):
    return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
  return value


def _options_key(options: Any) -> tuple:
  return _hashable(_options(options))


def build_feature_extractor(name: str, in_channels: int, init_scheme: str, options: Any,
                            tail_scale: Optional[float] = None) -> nn.Module:
  """The unbound feature extractor: `feature_maps_only` unless a full model at `tail_scale`.

  Cached, so that the model built (and checked) by `registry.build` outside any module is
  reused when a MetaSR's `__call__` binds a copy of it (no stray child in `tabulate`).
  """
  return _build_feature_extractor(name, in_channels, init_scheme, _options_key(options),
                                  None if tail_scale is None else float(tail_scale))


@functools.lru_cache(maxsize=64)
def _build_feature_extractor(name: str, in_channels: int, init_scheme: str, options_key: tuple,
                             tail_scale: Optional[float]) -> nn.Module:
  opts = dict(options_key)
  for key in ('feature_maps_only', 'scale', 'in_channels', 'init_scheme'):
    if key in opts:
      raise InputError(f'feature_options may not set {key!r} (the Meta-SR model sets it)')
  scale = 2 if tail_scale is None else tail_scale
  model = registry.build(name, scale=scale, in_channels=in_channels, init_scheme=init_scheme,
                         feature_maps_only=tail_scale is None, **opts)
  return model.clone(parent=None)  # unbound even when built inside a module method


@functools.lru_cache(maxsize=64)
def dead_tail_leaves(name: str, in_channels: int, init_scheme: str, options_key: tuple,
                     tail_scale: float) -> tuple[DeadLeaf, ...]:
  """The variables the full feature extractor at `tail_scale` has and its feature model lacks.

  Abstract evaluation only (nothing is computed). 'constants' (MeanShift) are left out.
  """
  full = build_feature_extractor(name, in_channels, init_scheme, options_key, tail_scale)
  feat = build_feature_extractor(name, in_channels, init_scheme, options_key)
  full_v = registry.abstract_variables(full)
  feat_v = registry.abstract_variables(feat)
  leaves = []
  for col in ('params', 'batch_stats'):
    have = traverse_util.flatten_dict(feat_v.get(col, {}))
    every = traverse_util.flatten_dict(full_v.get(col, {}))
    for path, leaf in have.items():
      if path not in every or every[path].shape != leaf.shape:
        raise InputError(f'{name}: the feature_maps_only variable {col}/{"/".join(path)} is '
                         'not a variable of the full model; cannot derive its dead tail')
    for path, leaf in every.items():
      if path in have:
        continue
      shape = tuple(leaf.shape)
      sibling = every.get(path[:-1] + ('kernel',))
      fan_in = int(np.prod(sibling.shape[:-1])) if sibling is not None else 1
      if path[-1] in ('kernel', 'bias') and sibling is not None:
        kind = 'uniform'  # PyTorch conv / linear default, U(+-1/sqrt(fan_in))
      elif path[-1] in ('scale', 'var'):
        kind = 'ones'
      elif path[-1] == 'alpha':
        kind = 'prelu'
      else:
        kind = 'zeros'
      leaves.append((col, path, shape, kind, fan_in))
  return tuple(leaves)


def _dead_init(kind: str, fan_in: int) -> Callable:
  if kind == 'uniform':
    return common.torch_uniform(fan_in)
  value = {'ones': 1.0, 'prelu': 0.25, 'zeros': 0.0}[kind]
  return lambda key, shape, dtype=jnp.float32: jnp.full(shape, value, dtype)


class _VariableTree(nn.Module):
  """Creates the given (collection, path, shape, init) variables under its own scope."""
  leaves: tuple

  @nn.compact
  def __call__(self) -> None:
    groups: dict[str, list] = {}
    for col, path, shape, kind, fan_in in self.leaves:
      if len(path) > 1:
        groups.setdefault(path[0], []).append((col, path[1:], shape, kind, fan_in))
        continue
      init = _dead_init(kind, fan_in)
      if col == 'params':
        self.param(path[0], init, shape)
      else:
        self.variable(col, path[0], lambda init=init, shape=shape: init(None, shape))
    for name, sub in groups.items():
      _VariableTree(tuple(sub), name=name)()


class MetaSR(base.MeanShiftSR):
  """Feature extractor + meta-upscale module for any scale s >= 1 (NHWC in and out).

  Attributes:
    scale: the nominal scale (`apply` without a scale, `example_inputs`).
    in_channels: image channels (also the meta-upscale output channels).
    feature_extractor: registry name of the feature extractor (see FEATURE_EXTRACTORS).
    feature_options: option overrides for it (a mapping or (name, value) pairs).
    kernel_size: size of the predicted filters (3 in the reference).
    weight_hidden: hidden width of the weight-prediction MLP (256).
    reference_tail_scale: None (thesis: no dead params) or the scale of the reference's unused
      feature-extractor tail to build as trainable params (2.0 reproduces the reference counts).
    init_scheme, mean, std: as for every model of the zoo.
  """
  scale: float = 4.0
  feature_extractor: str = 'edsr_lite'
  feature_options: Any = ()
  kernel_size: int = 3
  weight_hidden: int = 256
  reference_tail_scale: Optional[float] = None

  @nn.nowrap
  def check_config(self) -> None:
    """Raises ValueError for a configuration that cannot be built."""
    common.check_init_scheme(self.init_scheme)
    if self.feature_extractor not in FEATURE_EXTRACTORS:
      raise ValueError(f'feature_extractor must be one of {FEATURE_EXTRACTORS}, got '
                       f'{self.feature_extractor!r}')
    meta_upscale.static_scale(self.scale)
    meta_upscale.check_options(self.in_channels, self.kernel_size, self.weight_hidden)
    self.feature_model()  # validates feature_options
    if self.reference_tail_scale is not None:
      self.dead_tail_leaves()  # validates the scale; cached before any `init` traces

  @nn.nowrap
  def feature_model(self) -> nn.Module:
    """The unbound feature extractor (feature_maps_only) this model runs."""
    return build_feature_extractor(self.feature_extractor, self.in_channels, self.init_scheme,
                                   self.feature_options)

  @nn.nowrap
  def full_feature_model(self, tail_scale: float) -> nn.Module:
    """The reference feature extractor with its (here dead) tail at `tail_scale`."""
    return build_feature_extractor(self.feature_extractor, self.in_channels, self.init_scheme,
                                   self.feature_options, tail_scale)

  @nn.nowrap
  def feature_channels(self) -> int:
    """Channels of the features fed to the meta-upscale module."""
    return int(self.feature_model().feature_channels)

  @nn.nowrap
  def dead_tail_leaves(self, tail_scale: Optional[float] = None) -> tuple[DeadLeaf, ...]:
    """(collection, path, shape, init, fan_in) of the reference's unused tail variables."""
    ts = self.reference_tail_scale if tail_scale is None else tail_scale
    if ts is None:
      return ()
    return dead_tail_leaves(self.feature_extractor, self.in_channels, self.init_scheme,
                            _options_key(self.feature_options), float(ts))

  @nn.nowrap
  def example_inputs(self):
    """One (1, 24, 24, C) image and the nominal scale."""
    x = jax.ShapeDtypeStruct((1, registry.EXAMPLE_SIZE, registry.EXAMPLE_SIZE,
                              self.in_channels), jnp.float32)
    return (x,), {'scale': float(self.scale)}

  @nn.compact
  def __call__(self, x: jax.Array, scale: Optional[float] = None,
               train: bool = False) -> jax.Array:
    """x: (B, h, w, C), scale: static float >= 1 -> (B, int(scale h), int(scale w), C)."""
    self.check_config()
    s = meta_upscale.static_scale(self.scale if scale is None else scale)
    self.check_input(x)
    shift = self.mean_shift()
    fe = self.feature_model().clone(parent=self, name='feature_extractor')
    takes = registry.convention_of(fe)
    kwargs = {'train': train} if takes.takes_train else {}
    if takes.takes_scale:  # MDSR: head ceil(s)
      kwargs['scale'] = s
    f = fe(shift.sub(x), **kwargs)
    if self.reference_tail_scale is not None and self.is_initializing():
      _VariableTree(self.dead_tail_leaves(), name=DEAD_TAIL)()
    y = meta_upscale.MetaUpscale(self.in_channels, self.kernel_size, self.weight_hidden,
                                 name='meta_upsampler')(f, s)
    return shift.add(y)


# `call_model` needs the scale of every call (the `scale` field is only the nominal one).
_SCALE_REQUIRED = registry.derive_convention(MetaSR, scale_arg='required')
for _name, _fe in META_MODELS.items():
  registry.register(_name, registry.make_constructor(
      MetaSR, scale_kind='float', convention=_SCALE_REQUIRED, feature_extractor=_fe))
