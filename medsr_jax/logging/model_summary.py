"""The model summary printed when training starts: `clu.parameter_overview`'s table.

`parameter_overview(params)` is clu's table of the trainable parameters (name, shape, dtype,
size) and its `Total: N -- B bytes` line. A small model gets one row per array, as
`clu.parameter_overview.get_parameter_overview`; a model with more than `max_rows` arrays (RDST,
SwinIR: hundreds) gets one row per module at the deepest module level that fits in `max_rows`
rows, top-level modules at least (`body/dense/body_0/blocks_0/* | 13 arrays | float32 | 246,480`),
rendered by clu's `make_table`, so the start-up output stays one short table. The total is
`clu.parameter_overview.count_parameters` over every array, equal to `models.count_params` (the 'params' collection; the reference's frozen
MeanShift constants are not parameters).

Cheap by construction: only shapes and dtypes are read (no statistics, so no device transfer and
no compilation; `jax.ShapeDtypeStruct` trees work too), and `print_parameter_overview` prints on
process 0 only.

Usage (at the start of training, after the trainer has built its state):
  model_summary.print_parameter_overview(trainer.state["players"]["g"]["params"],
                                         title=f"model {config.model.name}")
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, TextIO

import jax
import numpy as np
from clu import parameter_overview as clu_overview

MAX_ROWS = 40


@dataclasses.dataclass
class _ModuleRow:
  """One module's parameters: the columns of clu's per-array rows (name, shape, dtype, size)."""
  name: str
  shape: str
  dtype: str
  size: int


def _key(entry: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def flat_parameters(variables: Any) -> dict[str, Any]:
  """{'module/sub/kernel': array} of the 'params' collection (or the whole tree if it has
  none), the arrays `models.count_params` counts, in tree order."""
  tree = variables.get("params", variables) if hasattr(variables, "get") else variables
  return {"/".join(_key(k) for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _grouped_rows(flat: dict[str, Any], max_rows: int) -> list[_ModuleRow]:
  """One row per module prefix at the deepest depth with at most `max_rows` groups."""
  paths = {name: name.split("/") for name in flat}
  depth = max(len(p) for p in paths.values())
  while depth > 1:
    if len({tuple(p[:depth]) for p in paths.values()}) <= max_rows:
      break
    depth -= 1
  groups: dict[tuple[str, ...], list[str]] = {}
  for name in sorted(flat):
    groups.setdefault(tuple(paths[name][:depth]), []).append(name)
  rows = []
  for prefix, names in groups.items():
    leaves = [flat[n] for n in names]
    dtypes = sorted({str(leaf.dtype) for leaf in leaves})
    size = int(sum(int(np.prod(leaf.shape)) for leaf in leaves))
    if len(names) == 1 and len(paths[names[0]]) == len(prefix):
      rows.append(_ModuleRow(names[0], str(tuple(leaves[0].shape)), dtypes[0], size))
    else:
      rows.append(_ModuleRow("/".join(prefix) + "/*", f"{len(names)} arrays", ",".join(dtypes),
                             size))
  return rows


def parameter_overview(variables: Any, *, max_rows: int = MAX_ROWS) -> str:
  """clu's parameter table of `variables` (see the module docstring) and its total line."""
  flat = flat_parameters(variables)
  if len(flat) <= max_rows:
    return clu_overview.get_parameter_overview(flat, include_stats=False)
  table = clu_overview.make_table(_grouped_rows(flat, max_rows))
  total = clu_overview.count_parameters(flat)
  size = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in flat.values())
  return (f"{table}\nTotal: {total:,} -- {size:,} bytes "
          f"({len(flat)} arrays, grouped by module)")


def print_parameter_overview(variables: Any, *, title: str = "model parameters",
                             max_rows: int = MAX_ROWS, file: TextIO | None = None
                             ) -> str | None:
  """Prints `title` and `parameter_overview(variables)` on process 0 (returns the text there,
  None on the other processes, which print nothing)."""
  if jax.process_index() != 0:
    return None
  text = f"{title}:\n{parameter_overview(variables, max_rows=max_rows)}"
  print(text, file=file or sys.stdout, flush=True)
  return text
