"""Zoo-wide checks: every registered model builds, counts and has its reference data tested.

  .venv/bin/python -m pytest -q tests/test_zoo.py

The per-family files (test_resnets.py, test_dense_nets.py, test_attention_nets.py,
test_convnet.py, test_swinir.py, test_rdst*.py, test_meta_sr.py, test_discriminators.py,
test_unet_seg.py, ...) hold the real checks: reference key lists, trainable counts, exact round
trips and forward parity. The coverage tests here make sure none of the reference layouts or
parity cases in tests/data is left out by them.
"""

import pathlib
import re

import pytest

from medsr_jax import models
from medsr_jax import torch_layouts
from tests import parity_weights
from tests import zoo_checks

TESTS = pathlib.Path(__file__).resolve().parent
DATA = TESTS / 'data'
TEST_SOURCES = '\n'.join(p.read_text() for p in TESTS.glob('test_*.py')
                         if p.name != 'test_zoo.py')


@pytest.mark.parametrize('name', models.available())
def test_every_model_builds_and_has_options(name):
  model = models.build(name)
  variables = models.abstract_variables(model)
  assert models.count_params(variables) > 0
  options = models.default_options(name)
  assert models.build(name, **options) == model  # options round-trip through config files


# The reference builds Meta-SR models with the feature extractor's unused x2 tail (spec §6).
REFERENCE_OPTIONS = {'miassr': {'reference_tail_scale': 2.0},
                     'meta_rdn': {'reference_tail_scale': 2.0}}


@pytest.mark.parametrize('layout', sorted(p.stem for p in (DATA / 'state_dicts').glob('*.json')))
def test_every_reference_layout_matches_keys_and_counts(layout):
  """Keys, shapes, kinds in order and the trainable count, for all 50 reference layouts."""
  ref = parity_weights.load_layout(layout)
  assert ref['name'] in models.available() and ref['name'] in torch_layouts.names()
  scale = zoo_checks.layout_scale(ref) or 4.0
  options = REFERENCE_OPTIONS.get(ref['name'], {})
  zoo_checks.check_layout_keys(layout, ref['name'], scale, **options)
  zoo_checks.check_trainable_count(layout, ref['name'], scale, **options)


@pytest.mark.parametrize('case', sorted(p.stem for p in (DATA / 'parity').glob('*.npz')))
def test_every_parity_case_is_tested(case):
  assert re.search(rf"['\"]{re.escape(case)}['\"]", TEST_SOURCES), case
