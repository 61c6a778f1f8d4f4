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
map); 'unet_seg' and 'vgg19' return dicts; 'ms_gan' / 'ms_srresnet' return the (x2, x4)
images; modules with BatchNorm take `train=` and keep running statistics in 'batch_stats'. A
module whose init needs other inputs than one (1, 24, 24, C) image defines `example_inputs()`
returning (args, static_kwargs); `example_inputs(model)` and `abstract_variables(model)` use it.

One adapter for all of them (issue 8): each registered class has a `CallConvention` (does
`__call__` take `train`? a `scale`, and must it be given? one array, a tuple or a dict out?),
recorded when its family registers: derived once from the class's `__call__` signature by
`derive_convention`, or declared by the family (`make_constructor(..., convention=...)`) where
the signature cannot tell (tuple / dict outputs, a required scale).

  outputs, updates = call_model(model, variables, x, scale=2.5, train=True,
                                rngs={'dropout': key}, mutable=('batch_stats',))
  sr = primary_output(model, outputs)   # the SR image (ms_gan: the final x4 one)

`call_model` passes `train` / `scale` only to models that take them (ValueError when a meta
model gets no scale), makes mutable only the requested collections that `variables` has, and
returns (outputs, updates) with updates {} when nothing is mutable. Nothing inspects a signature
per call. Run the checks with `.venv/bin/python -m pytest -q tests/test_call_model.py`.

Counting: `count_params` counts the 'params' collection only (trainable), so the reference's
frozen MeanShift convs (in 'constants') are excluded: the reference total minus 2C(C + 1), i.e.
minus 4 for one channel. `count_relative_position_params` gives the Swin relative-position-bias
table entries, which the thesis' parameter tables leave out (64,800 for rdst, 32,400 for rdst_e).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
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
    'medsr_jax.models.inception': ('fid_inception',),
}
_MODULE_OF = {name: module for module, names in _FAMILIES.items() for name in names}

RPB_NAME = 'relative_position_bias_table'
EXAMPLE_SIZE = 24

SCALE_ARGS = ('none', 'optional', 'required')
OUTPUTS = ('array', 'tuple', 'dict')


@dataclasses.dataclass(frozen=True)
class CallConvention:
  """How a model class is called and what it returns (see the module docstring).

  takes_train: `__call__` has a `train` argument (BatchNorm statistics, DropPath).
  scale_arg: 'none' (no scale argument: fixed-scale models, discriminators), 'optional' (MDSR:
    defaults to its `scale` field) or 'required' (arbitrary-scale meta models: `call_model`
    refuses to guess the scale).
  output: 'array' (one image or logits), 'tuple' (multi-scale images, the final one last) or
    'dict' (named feature maps: segmentation, VGG taps).
  """
  takes_train: bool = False
  scale_arg: str = 'none'
  output: str = 'array'

  def __post_init__(self):
    if self.scale_arg not in SCALE_ARGS:
      raise ValueError(f'scale_arg must be one of {SCALE_ARGS}, got {self.scale_arg!r}')
    if self.output not in OUTPUTS:
      raise ValueError(f'output must be one of {OUTPUTS}, got {self.output!r}')

  @property
  def takes_scale(self) -> bool:
    return self.scale_arg != 'none'


# model class -> its calling convention (recorded by `register`); classes that never registered
# -> `derive_convention` of them (computed on first use, kept apart so it never conflicts).
_CONVENTIONS: dict[type, CallConvention] = {}
_DERIVED: dict[type, CallConvention] = {}


def derive_convention(cls: type, **overrides: Any) -> CallConvention:
  """The default convention of module class `cls`, from its `__call__` signature (the only place
  that inspects one): `train` and `scale` arguments; output 'array' unless overridden."""
  params = inspect.signature(cls.__call__).parameters
  derived = dict(takes_train='train' in params,
                 scale_arg='optional' if 'scale' in params else 'none')
  return CallConvention(**dict(derived, **overrides))


def _record_convention(cls: type, convention: CallConvention, overwrite: bool) -> None:
  known = _CONVENTIONS.get(cls)
  if known is not None and known != convention and not overwrite:
    raise ValueError(f'{cls.__name__} is already registered with {known}, not {convention}')
  _CONVENTIONS[cls] = convention


def convention_of(model: nn.Module) -> CallConvention:
  """The calling convention of `model`'s class: the one recorded when the class registered, or
  (a class that never registered) `derive_convention` of it, computed once and kept."""
  cls = type(model)
  if cls in _CONVENTIONS:
    return _CONVENTIONS[cls]
  if cls not in _DERIVED:
    _DERIVED[cls] = derive_convention(cls)
  return _DERIVED[cls]


def register(name: str, constructor: Constructor, *, overwrite: bool = False) -> None:
  """Adds `name` -> `constructor(scale=, in_channels=, **overrides)` to the registry.

  A `make_constructor` constructor also records its class's `CallConvention`. Models of other
  constructors get `derive_convention` of their class on first use (or declare one by
  registering a `make_constructor` of the class).
  """
  if name in _REGISTRY and not overwrite:
    raise ValueError(f'model {name!r} is already registered')
  cls = getattr(constructor, 'model_class', None)
  if cls is not None:
    _record_convention(cls, constructor.convention, overwrite)
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
                     convention: Optional[CallConvention] = None,
                     **defaults: Any) -> Constructor:
  """A registry constructor for module class `cls`.

  scale_kind: 'int' (fixed-scale: `scale` must be an integer), 'float' (stored as a float: the
  nominal scale of an arbitrary-scale model) or 'none' (the module has no `scale` field:
  discriminators, segmentation, detection; `scale` is accepted and ignored).
  convention: how `call_model` calls `cls` (default: `derive_convention(cls)`); `register`
  records it, as the constructor's `convention` (and `model_class`) attributes.
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

  constructor.model_class = cls
  constructor.convention = convention or derive_convention(cls)
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


def _scale_kwargs(model: nn.Module, convention: CallConvention, scale: Any) -> dict[str, Any]:
  """{'scale': scale} for a model that takes one; checks a scale given to one that does not."""
  name = type(model).__name__
  if convention.scale_arg == 'required' and scale is None:
    raise ValueError(f'{name} is an arbitrary-scale model: call_model needs scale=')
  if convention.takes_scale:
    return {} if scale is None else {'scale': scale}
  own = getattr(model, 'scale', None)
  if scale is not None and own is not None and float(scale) != float(own):
    raise ValueError(f'{name} is a fixed x{own} model; it cannot run at scale {scale}')
  return {}


def call_model(model: nn.Module, variables: Mapping[str, Any], x: Any, *,
               scale: Any = None, train: bool = False, rngs: Optional[Mapping[str, Any]] = None,
               mutable: Sequence[str] = ()) -> tuple[Any, dict[str, Any]]:
  """`model.apply` in `model`'s calling convention; returns (outputs, updates).

  Args:
    model: an unbound module of the zoo (any class: see `convention_of`).
    variables: its variables ({'params': ..., 'batch_stats': ..., ...}).
    x: the input image, or a tuple of inputs for a model that takes several ('patchgan').
    scale: a static Python number; passed only to models that take a scale (required by
      arbitrary-scale meta models); for a fixed-scale model it must be None or its own scale.
    train: passed only to models that take `train`.
    rngs: e.g. {'dropout': key}; None passes none.
    mutable: collections to update; only those present in `variables` are made mutable.

  Returns:
    (outputs, updates): the model's outputs as it returns them (see `primary_output`) and the
    updated mutable collections ({} when nothing is mutable).
  """
  convention = convention_of(model)
  kwargs = _scale_kwargs(model, convention, scale)
  if convention.takes_train:
    kwargs['train'] = train
  args = x if isinstance(x, tuple) else (x,)
  collections = [c for c in ([mutable] if isinstance(mutable, str) else mutable)
                 if c in variables]
  if not collections:
    return model.apply(variables, *args, rngs=rngs, **kwargs), {}
  outputs, updates = model.apply(variables, *args, rngs=rngs, mutable=collections, **kwargs)
  return outputs, dict(updates)


def primary_output(model: nn.Module, outputs: Any) -> Any:
  """The SR image (or logits) among `model`'s `outputs`: the output itself, or the last image of
  a multi-scale tuple (ms_gan's (x2, x4): the final x4 image).

  Raises:
    ValueError: for a model that returns a dict (unet_seg, vgg19): it has no primary image.
  """
  kind = convention_of(model).output
  if kind == 'dict':
    raise ValueError(f'{type(model).__name__} returns a dict of named outputs '
                     f'({", ".join(sorted(outputs))}), not one image: pick a key')
  return outputs[-1] if kind == 'tuple' else outputs


def default_call_scale(model: nn.Module, scale: Any = None) -> Any:
  """`scale`, else the model's own `scale` field (None if it has none): the scale a trainer or
  `evaluate.Predictor` runs a model at when not told another (the nominal one of a meta model)."""
  return getattr(model, 'scale', None) if scale is None else scale


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
