"""Shared building blocks with PyTorch semantics: conv, linear, LayerNorm and the fixed MeanShift.

Everything is NHWC (channels last). The layers mirror the author's `networks/common.py`
(reference spec §5.1) closely enough that a PyTorch state dict ports by transposing kernels:

  * `Conv2d`: 2-D convolution with padding k // 2 and a bias (`default_conv`), kernel (kh, kw, in, out);
    it runs `convolution.conv2d`, whose gradient stays fast inside `nn.scan` on XLA:CPU.
  * `Linear`: `nn.Linear`, kernel (in, out); its product is `projection.dense` (a kernel
    gradient without a transposed copy of the cotangent on XLA:CPU).
  * `layer_norm`: PyTorch's LayerNorm (eps 1e-5, two-pass variance; `layers/normalization.py`).
  * `MeanShift`: the fixed (x - mean) / std and y * std + mean affine.
  * `batch_norm`: `nn.BatchNorm2d` (eps 1e-5, momentum 0.1 = Flax momentum 0.9); `PReLU`;
    `activation(name)` for the reference's `paras.act` choices.
  * `broadcast_like(v, x)`: a parameter (bias, slope, layer scale) or a smaller activation
    (channel-attention weights) in the dtype of the activations `x` it is broadcast against;
    under bfloat16 compute (`--config.train.precision=bf16`) its gradient is summed in float32.

Initialisation (`init_scheme`):
  * 'thesis' (default): the dissertation (§5.3.3, §4.3) says every parameter is Kaiming-uniform
    initialised, i.e. PyTorch's default `kaiming_uniform_(a=sqrt(5))`, which is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels, and the same bound for biases.
  * 'reference': what the author's code does (spec §3.4): convs keep the PyTorch default, every
    Linear is re-initialised with trunc_normal(std 0.02) and bias 0.
  In both schemes LayerNorm starts at scale 1 / bias 0 and the Swin relative-position-bias tables
  at trunc_normal(0.02) (that one is done by `WindowAttention`'s own constructor in the reference,
  and "Kaiming" has no meaning for a lookup table).

MeanShift: the reference builds two frozen 1x1 convs (4 numbers for one channel) that appear in
its `parameters()`. Here they are not trainable parameters: mean/std are module attributes and,
once initialised or imported from PyTorch, live in the non-trainable 'constants' collection
(`{'constants': {'mean_shift': {'mean', 'std'}}}`), so optimisers never see them and
`count_params` leaves them out (reference totals minus 4 at one channel).

Run `python -m pytest tests/test_layers_swin.py` for the layer tests.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax.layers import convolution
from medsr_jax.layers import normalization
from medsr_jax.layers import projection

INIT_SCHEMES = ('thesis', 'reference')
CONSTANTS = 'constants'

Initializer = Callable[..., jax.Array]


def is_low_precision(dtype: Any) -> bool:
  """True for floating dtypes narrower than float32 (bfloat16 compute, trainers/step.py)."""
  dtype = jnp.dtype(dtype)
  return bool(jnp.issubdtype(dtype, jnp.floating)) and dtype.itemsize < 4


def broadcast_like(p: jax.Array, like: jax.Array) -> jax.Array:
  """`p` (a parameter, or an activation smaller than `like`) in the dtype of the activations
  `like` it is combined with (`like + p`, `p * like`; numpy broadcasting).

  The value is the plain broadcast of `p` cast to `like`'s dtype. The gradient of `p`, the sum of
  the cotangent over every position it was broadcast to (batch, pixels, windows), is computed
  here (`sum_to_shape`) rather than by JAX's reduction:
    * in float32 whatever the compute dtype: under bfloat16 a running sum stops growing once it
      is 2^8 times its terms (measured: the bias gradients of a tiny EDSR at batch 4 came out 64%
      wrong). `tests/test_precision.py` checks that no bf16 backward pass of the zoo sums more
      than a few terms in bfloat16;
    * the sum over the leading axes as one matrix-vector product (ones @ cotangent): XLA:CPU's
      YNNPACK reduce fusion takes 39 ms to sum a (288, 6, 64, 64) attention-bias cotangent over
      its leading axis, the product 0.8 ms (docs/BENCHMARKS.md, "Leading-axis sums").
  Small parameters (fewer than `DOT_SUM_MIN_SIZE` elements: biases, slopes, channel scales) keep
  XLA's own fused reduction, measured ~10% faster in a whole EDSR-lite step; under bfloat16 they
  are broadcast in float32 and cast after, so XLA's sum is in float32 too.
  XLA fuses the broadcast and the casts into the consuming op; nothing of the full shape is stored.
  """
  p = jnp.asarray(p)
  dtype = jnp.dtype(jnp.result_type(like))
  shape = tuple(jnp.broadcast_shapes(p.shape, jnp.shape(like)))
  if p.size >= DOT_SUM_MIN_SIZE:
    return _broadcast(p, shape, dtype, p.shape, p.dtype)
  if not is_low_precision(dtype):
    return p.astype(dtype)
  return jnp.broadcast_to(p.astype(jnp.float32), shape).astype(dtype)


# Parameters at least this large get the ones-vector sum (the Swin bias, 6 x 64 x 64 per layer).
DOT_SUM_MIN_SIZE = 4096


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _broadcast(p: jax.Array, shape: tuple, dtype: Any, p_shape: tuple, p_dtype: Any
               ) -> jax.Array:
  """`p` broadcast to `shape` in `dtype` (float32 in between for low precision); `p_shape` and
  `p_dtype` (static) say what its gradient is summed and cast back to."""
  wide = jnp.float32 if is_low_precision(dtype) else dtype
  return jnp.broadcast_to(p.astype(wide), shape).astype(dtype)


def _broadcast_fwd(p, shape, dtype, p_shape, p_dtype):
  return _broadcast(p, shape, dtype, p_shape, p_dtype), None


def _broadcast_bwd(shape, dtype, p_shape, p_dtype, _, g):
  return (sum_to_shape(g, p_shape).astype(p_dtype),)


def sum_to_shape(g: jax.Array, p_shape: tuple) -> jax.Array:
  """Sums `g` (the broadcast shape) back to `p_shape` in float32: the leading axes where `p` is
  absent or of size 1 by one ones-vector product, later size-1 axes of `p` by a plain sum."""
  full = (1,) * (g.ndim - len(p_shape)) + tuple(p_shape)
  lead = next((i for i, d in enumerate(full) if d != 1), len(full))
  g, shape = g.astype(jnp.float32), g.shape
  rows = math.prod(shape[:lead])
  if rows > 1:
    g = jnp.dot(jnp.ones((rows,), jnp.float32), g.reshape(rows, -1),
                precision=jax.lax.Precision.HIGHEST).reshape((1,) * lead + shape[lead:])
  inner = tuple(i for i in range(lead, g.ndim) if full[i] == 1 and g.shape[i] != 1)
  if inner:
    g = jnp.sum(g, axis=inner, keepdims=True)
  return g.reshape(p_shape)


_broadcast.defvjp(_broadcast_fwd, _broadcast_bwd)


def check_init_scheme(init_scheme: str) -> None:
  if init_scheme not in INIT_SCHEMES:
    raise ValueError(f'init_scheme must be one of {INIT_SCHEMES}, got {init_scheme!r}')


def torch_uniform(fan_in: int) -> Initializer:
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for conv/linear kernels and biases."""
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_trunc_normal(std: float = 0.02, low: float = -2.0, high: float = 2.0) -> Initializer:
  """timm's `trunc_normal_(std=std)`: N(0, std^2) truncated at the *absolute* bounds [-2, 2].

  With std 0.02 the bounds sit at +-100 std, where float32 normal samples never reach, so a clip
  gives the same distribution as rejection/inverse-CDF sampling and compiles far faster on CPU.
  """
  if high / std < 8 or -low / std < 8:
    raise ValueError('torch_trunc_normal: bounds closer than 8 std need real truncation')

  def init(key, shape, dtype=jnp.float32):
    return jnp.clip(std * jax.random.normal(key, shape, dtype), low, high)

  return init


class Conv2d(nn.Module):
  """PyTorch-equivalent `nn.Conv2d(in, features, k, stride, padding, groups=groups, bias=use_bias)`.

  NHWC. Params: 'kernel' (k, k, in / groups, features) and 'bias' (features,). `padding=None`
  means k // 2 (the author's `default_conv`). Convolutions use the PyTorch default init,
  U(+-1/sqrt(fan_in)) with fan_in = in / groups * k * k, in both schemes (the reference only
  re-initialises Linear and LayerNorm layers). `groups=in` is a depthwise convolution.
  """
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  init_scheme: str = 'thesis'
  precision: Any = None
  stride: int = 1
  padding: Optional[int] = None
  groups: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_init_scheme(self.init_scheme)
    k, g = self.kernel_size, self.groups
    in_features = x.shape[-1]
    if in_features % g or self.features % g:
      raise ValueError(f'Conv2d: {in_features} -> {self.features} channels is not divisible '
                       f'into {g} groups')
    fan_in = in_features // g * k * k
    kernel = self.param('kernel', torch_uniform(fan_in), (k, k, in_features // g, self.features))
    p = k // 2 if self.padding is None else self.padding
    y = convolution.conv2d(x, kernel.astype(x.dtype), padding=((p, p), (p, p)),
                           stride=self.stride, groups=g, precision=self.precision)
    if self.use_bias:
      bias = self.param('bias', torch_uniform(fan_in), (self.features,))
      y = y + broadcast_like(bias, y)
    return y


def conv3x3(features: int, *, init_scheme: str = 'thesis', name: Optional[str] = None,
            use_bias: bool = True) -> Conv2d:
  """The author's `default_conv(in, features, 3)`: 3x3, padding 1, bias."""
  return Conv2d(features, 3, use_bias=use_bias, init_scheme=init_scheme, name=name)


def linear_initializers(init_scheme: str, fan_in: int) -> tuple[Initializer, Initializer]:
  """(kernel, bias) initializers of a `Linear` layer with `fan_in` inputs under `init_scheme`."""
  check_init_scheme(init_scheme)
  if init_scheme == 'reference':
    return torch_trunc_normal(0.02), nn.initializers.zeros_init()
  return torch_uniform(fan_in), torch_uniform(fan_in)


class Linear(nn.Module):
  """PyTorch `nn.Linear(in, features)` on the last axis. Params: 'kernel' (in, out), 'bias'.

  `init_scheme='reference'` is the trunc-normal(0.02) re-initialisation that the author's Swin
  models (SwinIR, RDST) apply to their Linear layers; the CNN baselines keep PyTorch's default,
  so their modules pass 'thesis' (the PyTorch default) for their Linear layers in both schemes.
  """
  features: int
  use_bias: bool = True
  init_scheme: str = 'thesis'
  precision: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    k_init, b_init = linear_initializers(self.init_scheme, fan_in)
    kernel = self.param('kernel', k_init, (fan_in, self.features))
    y = projection.dense(x, kernel.astype(x.dtype), self.precision)
    if self.use_bias:
      y = y + broadcast_like(self.param('bias', b_init, (self.features,)), y)
    return y


@jax.custom_vjp
def softmax(x: jax.Array) -> jax.Array:
  """`jax.nn.softmax(x, axis=-1)` with a backward pass computed from the saved output only:
  dx = p * (g - sum(g * p)). Under bfloat16 compute both row sums are float32.

  JAX's own rule, through its exp / max / division, kept the division's (B, heads, N, N)
  broadcast of the row sums in memory on XLA:CPU and took ~2x longer in the Swin attention's
  backward pass (docs/BENCHMARKS.md, "Swin attention formulation"). Forward values: the same
  max-shifted exponentials, scaled by one reciprocal per row.
  """
  e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
  e = e.astype(jnp.float32 if is_low_precision(x.dtype) else e.dtype)
  return (e * (1.0 / jnp.sum(e, axis=-1, keepdims=True))).astype(x.dtype)


def _softmax_fwd(x):
  p = softmax(x)
  return p, p


def _softmax_bwd(p, g):
  wide = jnp.float32 if is_low_precision(p.dtype) else p.dtype
  row = jnp.sum(g.astype(wide) * p.astype(wide), axis=-1, keepdims=True)
  return ((p.astype(wide) * (g.astype(wide) - row)).astype(p.dtype),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


def layer_norm(name: Optional[str] = None, eps: float = 1e-5) -> nn.Module:
  """PyTorch `nn.LayerNorm(d, eps=eps)`: scale 1 / bias 0, exact two-pass variance, with its own
  backward pass (`layers/normalization.py`)."""
  return normalization.LayerNorm(epsilon=eps, name=name)


def gelu(x: jax.Array) -> jax.Array:
  """PyTorch `nn.GELU()` (exact erf form): x / 2 * (1 + erf(x / sqrt(2))), PyTorch's own formula.

  `jax.nn.gelu(approximate=False)` computes the same function through erfc, which XLA:CPU
  expands into exponentials and selects: in RDST-E's train step its fusions took ~25% of the
  step (docs/BENCHMARKS.md, "Swin attention formulation"); erf is one rational polynomial.
  """
  return x * (0.5 * (1.0 + jax.lax.erf(x * np.sqrt(0.5).astype(x.dtype))))


def batch_norm(train: bool, name: Optional[str] = None) -> nn.BatchNorm:
  """PyTorch `nn.BatchNorm2d` on the last axis: params scale/bias, 'batch_stats' mean/var.

  `train=True` normalises with the batch statistics and updates the running ones (apply with
  `mutable=['batch_stats']`); `train=False` uses the running statistics (PyTorch eval mode).
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_fast_variance=False, name=name)


class PReLU(nn.Module):
  """PyTorch `nn.PReLU(num_parameters)`: max(0, x) + alpha * min(0, x), alpha initialised 0.25."""
  num_parameters: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param('alpha', nn.initializers.constant(0.25), (self.num_parameters,))
    return jnp.where(x >= 0, x, broadcast_like(alpha, x) * x)


def leaky_relu(x: jax.Array) -> jax.Array:
  """`nn.LeakyReLU(0.2)`, the author's `paras.act` in both repos' ini files."""
  return jax.nn.leaky_relu(x, 0.2)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': jax.nn.relu,
    'leaky_relu': leaky_relu,
    'gelu': gelu,
    'sigmoid': jax.nn.sigmoid,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """A parameter-free activation by config name ('relu', 'leaky_relu' (0.2), 'gelu', 'sigmoid').

  PReLU has a parameter and is a module (`PReLU`), not a name here.
  """
  if name not in ACTIVATIONS:
    raise ValueError(f'activation must be one of {sorted(ACTIVATIONS)}, got {name!r}')
  return ACTIVATIONS[name]


def _as_channel_vector(values: Optional[Sequence[float]], default: float, channels: int,
                       what: str) -> np.ndarray:
  if values is None:
    return np.full((channels,), default, np.float32)
  arr = np.asarray(values, np.float32).reshape(-1)
  if arr.shape != (channels,):
    raise ValueError(f'MeanShift {what} has {arr.size} values, expected {channels} (channels)')
  return arr


class MeanShift(nn.Module):
  """Fixed per-channel affine: `sub(x) = (x - mean) / std`, `add(y) = y * std + mean` (spec §5.1).

  Not trainable. On `init` the values are stored in the 'constants' collection (so an imported
  PyTorch checkpoint with another mean/std is honoured by `apply`); when `apply` gets no
  'constants' collection the module attributes are used. The arithmetic follows the reference's
  1x1 convs in float32: weight 1/std (or std), bias -mean/std (or mean).
  """
  channels: int
  mean: Optional[Sequence[float]] = None
  std: Optional[Sequence[float]] = None

  def setup(self):
    mean = _as_channel_vector(self.mean, 0.0, self.channels, 'mean')
    std = _as_channel_vector(self.std, 1.0, self.channels, 'std')
    if np.any(std == 0):
      raise ValueError('MeanShift std must be non-zero')
    if self.has_variable(CONSTANTS, 'mean') or self.is_mutable_collection(CONSTANTS):
      self._mean = self.variable(CONSTANTS, 'mean', lambda: jnp.asarray(mean)).value
      self._std = self.variable(CONSTANTS, 'std', lambda: jnp.asarray(std)).value
    else:
      self._mean = jnp.asarray(mean)
      self._std = jnp.asarray(std)

  def sub(self, x: jax.Array) -> jax.Array:
    std = self._std.astype(jnp.float32)
    mean = self._mean.astype(jnp.float32)
    weight, bias = 1.0 / std, -mean / std
    return x * weight.astype(x.dtype) + bias.astype(x.dtype)

  def add(self, x: jax.Array) -> jax.Array:
    return x * self._std.astype(x.dtype) + self._mean.astype(x.dtype)

  def __call__(self, x: jax.Array, mode: str = 'sub') -> jax.Array:
    if mode == 'sub':
      return self.sub(x)
    if mode == 'add':
      return self.add(x)
    raise ValueError(f"MeanShift mode must be 'sub' or 'add', got {mode!r}")
