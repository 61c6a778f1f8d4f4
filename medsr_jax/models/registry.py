"""Model registry: names -> Linen module constructors, and parameter counting helpers.

  from medsr_jax import models
  model = models.build('rdst', scale=4, in_channels=1)          # or any name in models.available()
  variables = models.init(model, jax.random.key(0))              # example input of the right kind
  models.count_params(variables)                                  # 4,464,961 trainable

Every model family lives in its own module of `medsr_jax.models` and registers its names when
imported (`register(name, constructor)`); `_FAMILIES` below says which module holds which name,
so `build` imports only what it needs. A constructor takes `scale`, `in_channels` and keyword
overrides and returns an unbound `nn.Module`; `make_constructor` builds one from a module class.

Calling conventions (issue 3): fixed-scale generators `apply(variables, x)`; arbitrary-scale
(meta) models and MDSR `apply(variables, x, scale)`; discriminators return (N, 1) logits
(except the conditional 'patchgan': `apply(variables, img_a, img_b)` -> (N, h, w, 1) patch
map); 'unet_seg' returns a dict (logits and tapped features); 'ms_gan' / 'ms_srresnet' return
the (x2, x4) images; modules with BatchNorm take `train=` and keep running statistics in 'batch_stats'. A module
whose init needs other inputs than one (1, 24, 24, C) image defines `example_inputs()` returning
(args, static_kwargs); `example_inputs(model)` and `abstract_variables(model)` use it.

Counting: `count_params` counts the 'params' collection only (trainable), so the reference's
frozen MeanShift convs (in 'constants') are excluded: the reference total minus 2C(C + 1), i.e.
minus 4 for one channel. `count_relative_position_params` gives the Swin relative-position-bias
table entries, which the thesis' parameter tables leave out (64,800 for rdst, 32,400 for rdst_e).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax.errors import InputError

Constructor = Callable[..., nn.Module]

_REGISTRY: dict[str, Constructor] = {}

# module -> the names it registers on import.
_FAMILIES: dict[str, tuple[str, ...]] = {
    'medsr_jax.models.rdst': ('rdst', 'rdst_e', 'rdst_gff', 'rdst_mlp_gff'),
    'medsr_jax.models.resnets': ('srresnet', 'edsr_lite', 'edsr', 'mdsr'),
    'medsr_jax.models.ms_gan': ('ms_srresnet', 'ms_gan'),
    'medsr_jax.models.dense_nets': ('srdensenet', 'rdn', 'esrgan'),
    'medsr_jax.models.attention_nets': ('rcan', 'han'),
    'medsr_jax.models.convnet': ('convnet_lite', 'convnet_large'),
    'medsr_jax.models.swinir': ('swinir_light', 'swinir', 'swinir_psd'),
    'medsr_jax.models.meta_sr': ('miassr', 'meta_rdn', 'meta_srresnet', 'meta_edsr',
                                 'meta_srdensenet', 'meta_esrgan', 'meta_mdsr'),
    'medsr_jax.models.discriminators': ('srgan_d', 'wgan_gp_d', 'msgan_d', 'miassr_d',
                                        'patchgan'),
    'medsr_jax.models.unet_seg': ('unet_seg',),
    'medsr_jax.models.lesion_detector': ('lesion_detector',),
    'medsr_jax.models.vgg': ('vgg19',),
}
_MODULE_OF = {name: module for module, names in _FAMILIES.items() for name in names}

RPB_NAME = 'relative_position_bias_table'
EXAMPLE_SIZE = 24


def register(name: str, constructor: Constructor, *, overwrite: bool = False) -> None:
  """Adds `name` -> `constructor(scale=, in_channels=, **overrides)` to the registry."""
  if name in _REGISTRY and not overwrite:
    raise ValueError(f'model {name!r} is already registered')
  _REGISTRY[name] = constructor


def available() -> list[str]:
  """Sorted names accepted by `build` (every family of the zoo plus runtime registrations)."""
  return sorted(set(_REGISTRY) | set(_MODULE_OF))


def _lookup(name: str) -> Constructor:
  if name not in _REGISTRY and name in _MODULE_OF:
    importlib.import_module(_MODULE_OF[name])
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; available: {", ".join(available())}')
  return _REGISTRY[name]


def int_scale(scale: Any) -> int:
  """The integer scale of a fixed-scale model, or InputError."""
  s = float(scale)
  if s != int(s):
    raise InputError(f'this model needs an integer scale, got {scale}')
  return int(s)


def build(name: str, *, scale: Any = 4, in_channels: int = 1, **overrides) -> nn.Module:
  """Returns the unbound Linen module registered as `name`.

  Raises:
    ValueError: unknown `name` (the message lists the available ones).
    InputError: an override that the model does not have, or an unsupported scale.
  """
  constructor = _lookup(name)
  try:
    return constructor(scale=scale, in_channels=in_channels, **overrides)
  except TypeError as e:
    raise InputError(f'bad options for model {name!r}: {e}') from e


def make_constructor(cls: type, *, scale_kind: str = 'int',
                     **defaults: Any) -> Constructor:
  """A registry constructor for module class `cls`.

  scale_kind: 'int' (fixed-scale: `scale` must be an integer), 'float' (stored as a float: the
  nominal scale of an arbitrary-scale model) or 'none' (the module has no `scale` field:
  discriminators, segmentation, detection; `scale` is accepted and ignored).
  `defaults` are the registered name's option values (e.g. num_blocks=4 for 'rdst_e'); unknown
  overrides and a failing `check_config()` (if the class has one) raise InputError.
  """
  fields = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}
  if scale_kind not in ('int', 'float', 'none'):
    raise ValueError(f'scale_kind must be int, float or none, got {scale_kind!r}')

  def constructor(*, scale=4, in_channels=1, **overrides) -> nn.Module:
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise InputError(f'unknown {cls.__name__} option(s) {unknown}; known: {sorted(fields)}')
    kwargs = dict(defaults, **overrides)
    if 'in_channels' in fields:
      kwargs['in_channels'] = int(in_channels)
    if scale_kind == 'int':
      kwargs['scale'] = int_scale(scale)
    elif scale_kind == 'float':
      kwargs['scale'] = float(scale)
    model = cls(**kwargs)
    if hasattr(model, 'check_config'):
      try:
        model.check_config()
      except ValueError as e:
        raise InputError(str(e)) from e
    return model

  return constructor


def default_options(name: str) -> dict[str, Any]:
  """Every architecture option of `name` with its default (not `scale`/`in_channels`).

  Config files start from these, so `--config.model.kwargs.<option>=...` can set any of them and
  a misspelt option is an error rather than a silently ignored key.
  """
  model = build(name)
  skip = {'parent', 'name', 'scale', 'in_channels'}
  return {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in skip}


def example_inputs(model: nn.Module, size: Optional[Iterable[int]] = None
                   ) -> tuple[tuple[jax.ShapeDtypeStruct, ...], dict[str, Any]]:
  """(array args, static kwargs) that trace `model.init` / `model.apply` (shapes only).

  Models with special needs (a fixed input size, a scale argument, a second image) define an
  `example_inputs()` method; otherwise one (1, H, W, in_channels) float32 image, 24 x 24 unless
  `size` is given.
  """
  if hasattr(model, 'example_inputs') and size is None:
    return model.example_inputs()
  h, w = tuple(size) if size is not None else (EXAMPLE_SIZE, EXAMPLE_SIZE)
  c = getattr(model, 'in_channels', 1)
  return (jax.ShapeDtypeStruct((1, h, w, c), jnp.float32),), {}


def abstract_variables(model: nn.Module) -> Any:
  """The variables `model.init` creates, as ShapeDtypeStructs (nothing is computed)."""
  args, kwargs = example_inputs(model)
  return jax.eval_shape(functools.partial(model.init, **kwargs), jax.random.key(0), *args)


def init(model: nn.Module, key: jax.Array) -> Any:
  """Real variables from `model.init` on zeros shaped like `example_inputs(model)`."""
  args, kwargs = example_inputs(model)
  zeros = [jnp.zeros(a.shape, a.dtype) for a in args]
  return model.init(key, *zeros, **kwargs)


def random_like(tree: Any, seed: Union[int, np.random.Generator] = 0, scale: float = 0.2, *,
                positive: Sequence[str] = ('var',),
                constant: Optional[Mapping[str, float]] = None) -> Any:
  """float32 numpy arrays shaped like the leaves of `tree` (e.g. ShapeDtypeStructs).

  Leaves are drawn in tree order from `seed` (an int, or a numpy Generator to continue): N(0,
  scale^2), except leaves named in `positive` (BatchNorm running variances 'var'): 0.5 + U[0, 1),
  and leaves named in `constant` (e.g. {'var': 1.0}): that value, nothing drawn.
  """
  rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
  constant = dict(constant or {})

  def draw(path, s):
    name = getattr(path[-1], 'key', None) if path else None
    if name in constant:
      return np.full(s.shape, constant[name], np.float32)
    if name in positive:
      return (0.5 + rng.random(s.shape)).astype(np.float32)
    return (scale * rng.standard_normal(s.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, tree)


def random_variables(model: nn.Module, seed: int = 0, scale: float = 0.2, **kwargs) -> dict:
  """Random variables of `model` without compiling `init` (threefry is slow on XLA:CPU).

  Every collection of `abstract_variables(model)` but 'constants' (MeanShift then uses the
  model's mean / std), drawn from one generator in that order by `random_like` (which takes
  `kwargs`). For tests, timing and shape checks, not for training.
  """
  rng = np.random.default_rng(seed)
  shapes = abstract_variables(model)
  return {col: random_like(shapes[col], rng, scale, **kwargs)
          for col in shapes if col != 'constants'}


def _param_leaves(variables: Any):
  tree = variables.get('params', variables) if hasattr(variables, 'get') else variables
  return jax.tree_util.tree_leaves_with_path(tree)


def count_params(variables: Any) -> int:
  """Number of trainable scalars: the 'params' collection (or the whole tree if it has none).

  Works on real arrays and on `jax.eval_shape` output (ShapeDtypeStruct).
  """
  return int(sum(int(np.prod(leaf.shape)) for _, leaf in _param_leaves(variables)))


def count_relative_position_params(variables: Any) -> int:
  """Scalars in the Swin relative-position-bias tables (left out of the thesis' tables)."""
  total = 0
  for path, leaf in _param_leaves(variables):
    last = path[-1]
    key = getattr(last, 'key', getattr(last, 'name', None))
    if key == RPB_NAME:
      total += int(np.prod(leaf.shape))
  return total
