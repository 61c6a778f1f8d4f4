"""Tests of the complexity table: MAC counting against the reference and XLA, rows, the CLI.

  .venv/bin/python -m pytest -q tests/test_complexity.py

Reference GMACs (tests/data/param_counts.json) are torch.utils.flop_counter totals / 2 for one
1x1x40x32 LR input (discriminators: one 96x96 HR image; U-Net: one 160x128 slice); convs, linears
and batched matmuls count, elementwise ops do not: the same definition as `count_macs`.
Meta-upscale models are excluded from the exact comparison: the reference computes the weight
MLP on one period of offsets and runs the product on a ceil(s)-times replicated grid, so its MAC
total describes that implementation, not the operation.
"""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medsr_jax import complexity
from medsr_jax import models

ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = {r['name']: r for r in json.loads(
    (ROOT / 'tests' / 'data' / 'param_counts.json').read_text())['rows']}
IMPLEMENTATION_SPECIFIC = ('miassr', 'meta_rdn')
FIXED_INPUT = {'srgan_d': ('in96x96', (1, 96, 96, 1)), 'wgan_gp_d': ('in96x96', (1, 96, 96, 1)),
               'unet_seg': ('in160x128', (1, 160, 128, 1))}
SR_CASES = [(n, s) for n in sorted(REFERENCE) if n not in FIXED_INPUT
            and n not in IMPLEMENTATION_SPECIFIC for s in (2, 3, 4)]


def _sds(shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


@pytest.mark.parametrize('name,scale', SR_CASES)
def test_generator_macs_equal_reference(name, scale):
  model = models.build(name, scale=scale)
  args, kwargs = complexity.forward_inputs(model, float(scale), 40, 32)
  macs = complexity.count_macs(lambda v, *a: model.apply(v, *a, **kwargs),
                               models.abstract_variables(model), *args)
  want = REFERENCE[name]['gmacs'][f'x{scale}']
  assert macs.total / 1e9 == pytest.approx(want, abs=6e-4), (name, scale, macs.total / 1e9)
  if scale == 4:
    assert macs.batched / 1e9 == pytest.approx(REFERENCE[name]['gmacs_bmm_x4'], abs=6e-4)


@pytest.mark.parametrize('name', sorted(FIXED_INPUT))
def test_fixed_input_macs_equal_reference(name):
  key, shape = FIXED_INPUT[name]
  model = models.build(name)
  macs = complexity.count_macs(model.apply, models.abstract_variables(model), _sds(shape))
  assert macs.total / 1e9 == pytest.approx(REFERENCE[name]['gmacs'][key], abs=6e-4)


def test_counter_agrees_with_xla_cost_analysis_without_loops():
  """Conv (grouped and strided), a linear and a batched matmul: XLA's FLOPs are 2 x MACs.

  The convolutions are unpadded: XLA leaves taps that fall on zero padding out of its count,
  while the reference (and `count_macs`) count the whole kernel at every output pixel.
  """
  dn = ('NHWC', 'HWIO', 'NHWC')

  def f(x, k, kd, w):
    y = jax.lax.conv_general_dilated(x, k, (1, 1), 'VALID', dimension_numbers=dn)
    y = jax.lax.conv_general_dilated(y, kd, (2, 2), 'VALID', dimension_numbers=dn,
                                     feature_group_count=8)
    t = y.reshape(2, -1, 8) @ w                        # linear: no batch dims
    return jnp.einsum('bld,bmd->blm', t, t)            # attention-like: batched
  args = [_sds((2, 16, 18, 3)), _sds((3, 3, 3, 8)), _sds((5, 5, 1, 8)), _sds((8, 16))]
  ours = complexity.count_macs(f, *args)
  # conv 2*14*16*8 outputs x 27; depthwise 2*5*6*8 x 25; linear 60*8*16; bmm 2*30*30*16
  assert ours.total == 3584 * 27 + 480 * 25 + 60 * 8 * 16 + 2 * 30 * 30 * 16
  assert ours.batched == 2 * 30 * 30 * 16
  xla = jax.jit(f).lower(*args).cost_analysis()['flops']
  assert xla == pytest.approx(2 * ours.total, rel=1e-6)


def test_scan_bodies_are_multiplied_by_their_length():
  def f(x, ws):
    return jax.lax.scan(lambda c, w: (c @ w, None), x, ws)[0]
  macs = complexity.count_macs(f, _sds((4, 8)), _sds((5, 8, 8)))
  assert macs.total == 5 * 4 * 8 * 8


def test_rows_and_table_for_rdst_e():
  rows = complexity.run(['rdst_e'], speed=True, min_time=0.05)
  (row,) = rows
  assert row.params == 2_379_241 and row.thesis_params == 2_346_841
  assert row.macs.total / 1e9 == pytest.approx(3.8309, abs=6e-4)
  assert row.slices_per_s > 0
  text = complexity.format_table(rows, markdown=True)
  assert text.splitlines()[0].startswith('| model | params | thesis params | GMACs')
  assert '| rdst_e | 2,379,241 | 2.347M | 3.831 | 0.354 |' in text


def test_every_model_has_a_row_without_compiling():
  rows = complexity.run(speed=False)
  assert [r.name for r in rows] == models.available()
  for r in rows:
    assert r.params > 0 and r.macs.total > 0, r.name


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'medsr_jax.complexity', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_cli_markdown_and_errors(tmp_path):
  out = tmp_path / 'table.md'
  r = _cli('--models=rdst_e', '--nospeed', f'--markdown={out}')
  assert r.returncode == 0, r.stderr
  assert 'rdst_e' in r.stdout and out.read_text().count('|') > 10
  r = _cli('--models=no_such_net', '--nospeed')
  assert r.returncode == 2 and 'unknown model' in r.stderr
  r = _cli('--models=rdst_e', '--nospeed', f'--markdown={tmp_path}/missing/t.md')
  assert r.returncode == 2 and not (tmp_path / 'missing').exists()
