"""Model complexity table: parameters, multiply-accumulates and measured speed for the zoo.

  python -m medsr_jax.complexity                          # every model, x4, one 1x40x32 LR slice
  python -m medsr_jax.complexity --models=rdst,rdst_e,swinir_light,swinir --markdown=table.md
  python -m medsr_jax.complexity --no_speed               # parameters and MACs only (no compile)

Columns (thesis Table 5.1 / 5.5 efficiency columns; reference spec §6 and §8.6):
  params         trainable parameters (the 'params' collection: the reference's frozen MeanShift
                 numbers are not counted, see `models.count_params`);
  thesis params  params without the Swin relative-position-bias tables, as the thesis counts them
                 (SwinIR classical with pixelshuffledirect: 11.47M);
  GMACs          multiply-accumulates of every convolution and matrix product in the traced
                 forward, for one LR input of --height x --width (40 x 32 = an OASIS x4 test slice)
                 at --scale; discriminators, the segmentation U-Net and the detector use their own
                 input (96 x 96 HR, 160 x 128 slice, ...). Attention matmuls (q.k^T, attn.v),
                 HAN's layer attention and the meta-upscale product ARE counted (batched matmuls,
                 also shown on their own as 'of which bmm'); elementwise ops, softmax, norms and
                 pixel shuffles are not: the same definition as the reference's
                 `torch.utils.flop_counter` numbers in reference/param_counts.md.
  slices/s       measured inference throughput of the jitted forward on the current device
                 (batch --batch_size, after one warm-up call, at least --min_time seconds).

How MACs are counted: the forward is traced to a jaxpr (nothing is compiled) and every
`conv_general_dilated` (out elements x in-channels per group x kernel area) and `dot_general`
(product of batch, free and contracted sizes) is summed, descending into sub-programs and
multiplying `scan` bodies by their length. XLA's own cost analysis (`jit(...).lower(...)
.cost_analysis()['flops']`) equals 2 x this count for loop-free programs with unpadded
convolutions (tests/test_complexity.py checks it), but it cannot be used directly: it counts a
`while`/`scan` body once (every model of the zoo runs its repeated blocks under `nn.scan`), it
leaves out kernel taps that fall on zero padding (the reference counts them), and it adds
elementwise FLOPs.

Run `python -m pytest tests/test_complexity.py` for the tests.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Optional, Sequence

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax import errors
from medsr_jax import models
from medsr_jax.errors import InputError
from medsr_jax.io import images



@dataclasses.dataclass
class MacCount:
  """Multiply-accumulates: all convs and matmuls, and the batched matmuls among them."""
  total: int = 0
  batched: int = 0

  def add(self, other: 'MacCount', times: int = 1) -> None:
    self.total += other.total * times
    self.batched += other.batched * times


def _conv_macs(eqn) -> int:
  out = eqn.outvars[0].aval.shape
  rhs = eqn.invars[1].aval.shape
  dims = eqn.params['dimension_numbers']
  # rhs_spec: (out-feature dim, in-feature dim, spatial dims...) positions in the kernel.
  in_per_group = rhs[dims.rhs_spec[1]]
  kernel_area = math.prod(rhs[d] for d in dims.rhs_spec[2:])
  return math.prod(out) * in_per_group * kernel_area


def _dot_macs(eqn) -> tuple[int, bool]:
  lhs = eqn.invars[0].aval.shape
  (lhs_contract, _), (lhs_batch, _) = eqn.params['dimension_numbers']
  contracted = math.prod(lhs[d] for d in lhs_contract)
  return math.prod(eqn.outvars[0].aval.shape) * contracted, bool(lhs_batch)


def _sub_jaxprs(eqn) -> Iterable[Any]:
  for value in eqn.params.values():
    for item in (value if isinstance(value, (tuple, list)) else (value,)):
      if hasattr(item, 'eqns'):
        yield item
      elif hasattr(item, 'jaxpr') and hasattr(item.jaxpr, 'eqns'):
        yield item.jaxpr


def count_jaxpr_macs(jaxpr) -> MacCount:
  """MACs of every conv and dot_general in `jaxpr` (scan bodies times their length).

  `cond` branches are summed as if all ran (no model of the zoo branches on data); a `while`
  with an unknown trip count raises, since its cost is not static.
  """
  count = MacCount()
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      count.total += _conv_macs(eqn)
    elif name == 'dot_general':
      macs, batched = _dot_macs(eqn)
      count.total += macs
      count.batched += macs if batched else 0
    elif name == 'while':
      raise ValueError('cannot count MACs through a while loop with a dynamic trip count')
    times = eqn.params.get('length', 1) if name == 'scan' else 1
    for sub in _sub_jaxprs(eqn):
      count.add(count_jaxpr_macs(sub), times)
  return count


def count_macs(fn: Callable[..., Any], *args: Any) -> MacCount:
  """MACs of `fn(*args)`; args may be arrays or ShapeDtypeStructs (nothing is computed)."""
  return count_jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)


def forward_inputs(model: Any, scale: float, height: int, width: int, batch: int = 1
                   ) -> tuple[tuple[jax.ShapeDtypeStruct, ...], dict[str, Any]]:
  """(args, static kwargs) of one forward pass for the table.

  Super-resolution models (a `scale` field, or a `scale` argument in their example inputs) get an
  LR batch of `height` x `width` (and `scale` when they take it at call time); other models
  (discriminators, segmentation, detection) their own example inputs with the batch size set.
  """
  args, kwargs = models.example_inputs(model)
  is_sr = hasattr(model, 'scale') or 'scale' in kwargs
  if is_sr:
    c = args[0].shape[-1]
    args = (jax.ShapeDtypeStruct((batch, height, width, c), jnp.float32),) + tuple(args[1:])
    if 'scale' in kwargs:
      kwargs = dict(kwargs, scale=scale)
  else:
    args = tuple(jax.ShapeDtypeStruct((batch,) + tuple(a.shape[1:]), a.dtype) for a in args)
  return args, kwargs


@dataclasses.dataclass
class Row:
  name: str
  params: int
  thesis_params: int
  macs: MacCount
  slices_per_s: Optional[float] = None
  note: str = ''


def measure_speed(apply: Callable[..., Any], variables: Any, args: Sequence[Any], batch: int,
                  min_time: float) -> float:
  """Slices per second of `apply(variables, *args)` after one warm-up (compile) call."""
  jax.block_until_ready(apply(variables, *args))
  n, start = 0, time.perf_counter()
  while True:
    jax.block_until_ready(apply(variables, *args))
    n += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_time and n >= 2:
      return n * batch / elapsed


def measure(name: str, *, scale: float = 4.0, height: int = 40, width: int = 32,
            in_channels: int = 1, batch: int = 1, speed: bool = True,
            min_time: float = 1.0) -> Row:
  """One row of the table for model `name`."""
  try:
    model = models.build(name, scale=scale, in_channels=in_channels)
  except InputError as e:
    raise InputError(f'{name}: {e}') from e
  shapes = models.abstract_variables(model)
  params = models.count_params(shapes)
  rpb = models.count_relative_position_params(shapes)
  args, kwargs = forward_inputs(model, scale, height, width, batch)
  apply = lambda v, *a: model.apply(v, *a, **kwargs)
  macs = count_macs(apply, shapes, *args)
  row = Row(name, params, params - rpb, macs)
  if speed:
    # Small weights and unit running variances keep deep stacks finite; values do not matter.
    variables = models.random_variables(model, scale=0.02, constant={'var': 1.0})
    x = [np.random.default_rng(1).random(a.shape).astype(a.dtype) for a in args]
    row.slices_per_s = measure_speed(jax.jit(apply), variables, x, batch, min_time)
  return row


def _millions(n: int) -> str:
  return f'{n / 1e6:.3f}M'


def format_table(rows: Sequence[Row], *, markdown: bool, header_note: str = '') -> str:
  """The table as aligned text or markdown."""
  head = ['model', 'params', 'thesis params', 'GMACs', 'of which bmm', 'slices/s']
  body = []
  for r in rows:
    speed = f'{r.slices_per_s:.1f}' if r.slices_per_s is not None else '-'
    body.append([r.name, f'{r.params:,}', _millions(r.thesis_params), f'{r.macs.total / 1e9:.3f}',
                 f'{r.macs.batched / 1e9:.3f}', speed])
  if markdown:
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join(['---'] + ['---:'] * 5) + '|']
    lines += ['| ' + ' | '.join(b) + ' |' for b in body]
  else:
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda cells: '  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    lines = [fmt(head)] + [fmt(b) for b in body]
  if header_note:
    lines = [header_note, ''] + lines
  return '\n'.join(lines) + '\n'


def device_note(scale: float, height: int, width: int, batch: int) -> str:
  dev = jax.devices()[0]
  return (f'x{scale:g}, LR {height}x{width} (other models: their own input), batch {batch}, '
          f'device {dev.platform}:{dev.device_kind}, jax {jax.__version__}')


def run(names: Optional[Sequence[str]] = None, *, scale: float = 4.0, height: int = 40,
        width: int = 32, in_channels: int = 1, batch: int = 1, speed: bool = True,
        min_time: float = 1.0, log: Callable[[str], None] = lambda s: None) -> list[Row]:
  """Rows for `names` (default: every registered model), in that order."""
  names = list(names) if names else models.available()
  unknown = [n for n in names if n not in models.available()]
  if unknown:
    raise InputError(f'unknown model(s) {unknown}; available: {", ".join(models.available())}')
  if height < 1 or width < 1 or batch < 1:
    raise InputError('height, width and batch_size must be positive')
  rows = []
  for i, name in enumerate(names):
    start = time.perf_counter()
    rows.append(measure(name, scale=scale, height=height, width=width, in_channels=in_channels,
                        batch=batch, speed=speed, min_time=min_time))
    log(f'[{i + 1}/{len(names)}] {name}: {time.perf_counter() - start:.1f} s')
  return rows


def define_flags() -> None:
  """Defines the flags of `python -m medsr_jax.complexity` (only when it runs: other commands
  share flag names such as `scale`, and tests import them all into one process)."""
  flags.DEFINE_list('models', None, 'Models to measure (default: all registered).')
  flags.DEFINE_float('scale', 4.0, 'SR scale of the generators.')
  flags.DEFINE_integer('height', 40, 'LR input height of the generators.')
  flags.DEFINE_integer('width', 32, 'LR input width of the generators.')
  flags.DEFINE_integer('in_channels', 1, 'Image channels.')
  flags.DEFINE_integer('batch_size', 1, 'Slices per forward pass for the speed column.')
  flags.DEFINE_float('min_time', 1.0, 'Seconds of timed forward passes per model.')
  flags.DEFINE_bool('speed', True, 'Measure slices/s (compiles every model).')
  flags.DEFINE_string('markdown', None, 'Also write the table as markdown here.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def go():
    f = flags.FLAGS
    rows = run(f.models, scale=f.scale, height=f.height, width=f.width,
               in_channels=f.in_channels, batch=f.batch_size, speed=f.speed,
               min_time=f.min_time, log=lambda s: print(s, file=sys.stderr, flush=True))
    note = device_note(f.scale, f.height, f.width, f.batch_size)
    print(format_table(rows, markdown=False, header_note=note), end='')
    if f.markdown:
      path = f.markdown
      if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise InputError(f'{path}: directory does not exist')
      with images.temp_path(path, '.md') as tmp:
        with open(tmp, 'x', encoding='utf-8') as f:
          f.write(format_table(rows, markdown=True, header_note=note))
        os.replace(tmp, path)
      print(f'wrote {path}', file=sys.stderr)

  errors.cli_main(go)


if __name__ == '__main__':
  define_flags()
  sys.exit(app.run(main))
