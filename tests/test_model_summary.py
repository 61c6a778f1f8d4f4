"""Tests for medsr_jax.logging.model_summary: clu's parameter table printed at start-up.

Run: .venv/bin/python -m pytest -q tests/test_model_summary.py
"""

import io
import re

import jax
import numpy as np
from clu import parameter_overview

from medsr_jax import models
from medsr_jax.logging import model_summary


def _total(text: str) -> int:
  return int(re.search(r"Total: ([\d,]+) --", text).group(1).replace(",", ""))


def _big_tree(blocks=30):
  return {"head": {"kernel": np.zeros((3, 3, 1, 8), np.float32), "bias": np.zeros(8, np.float32)},
          "body": {f"block_{i}": {"conv": {"kernel": np.zeros((3, 3, 8, 8), np.float32),
                                           "bias": np.zeros(8, np.float32)},
                                  "norm": {"scale": np.ones(8, np.float32)}}
                   for i in range(blocks)},
          "tail": {"kernel": np.zeros((3, 3, 8, 1), np.float16)}}


def test_small_model_is_clus_own_table():
  tree = {"params": {"conv": {"kernel": np.zeros((3, 3, 1, 4), np.float32),
                              "bias": np.zeros(4, np.float32)}},
          "batch_stats": {"mean": np.zeros(1000, np.float32)}}  # not a parameter
  text = model_summary.parameter_overview(tree)
  conv = tree["params"]["conv"]
  flat = {"conv/kernel": conv["kernel"], "conv/bias": conv["bias"]}
  assert text == parameter_overview.get_parameter_overview(flat, include_stats=False)
  assert _total(text) == 40 == models.count_params(tree)
  assert "conv/kernel" in text and "(3, 3, 1, 4)" in text


def test_large_model_grouped_by_module_in_one_short_table():
  tree = _big_tree()
  flat = model_summary.flat_parameters(tree)
  assert len(flat) == 3 + 30 * 3
  text = model_summary.parameter_overview(tree, max_rows=40)
  rows = [line for line in text.splitlines() if line.startswith("| ")][1:]  # minus the header
  assert 3 <= len(rows) <= 40
  assert "| body/block_7/*" in text and "3 arrays" in text  # one row per block
  assert "| tail/kernel" in text and "float16" in text
  assert _total(text) == models.count_params(tree) == parameter_overview.count_parameters(flat)
  size = sum(v.size * v.dtype.itemsize for v in flat.values())
  assert f"-- {size:,} bytes" in text
  sizes = [int(r.split("|")[4].strip().replace(",", "")) for r in rows]
  assert sum(sizes) == models.count_params(tree)  # the rows add up to the total
  tiny = model_summary.parameter_overview(tree, max_rows=2)  # coarsest level: top modules
  assert len([l for l in tiny.splitlines() if l.startswith("| ")]) == 1 + 3


def test_zoo_model_total_equals_count_params_from_shapes_only():
  """ShapeDtypeStructs work: only shapes and dtypes are read (no transfer, no compile)."""
  shapes = models.abstract_variables(models.build("rdst", scale=4))
  assert isinstance(jax.tree_util.tree_leaves(shapes["params"])[0], jax.ShapeDtypeStruct)
  text = model_summary.parameter_overview(shapes)
  assert _total(text) == models.count_params(shapes)
  assert len(text.splitlines()) <= model_summary.MAX_ROWS + 6


def test_printed_on_process_zero_only(monkeypatch):
  out = io.StringIO()
  text = model_summary.print_parameter_overview(_big_tree(2), title="model tiny", file=out)
  assert out.getvalue() == text + "\n" and text.startswith("model tiny:\n+")
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  out = io.StringIO()
  assert model_summary.print_parameter_overview(_big_tree(2), file=out) is None
  assert out.getvalue() == ""
