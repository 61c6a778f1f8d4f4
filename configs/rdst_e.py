"""RDST-E (thesis ch. 5): the efficient RDST with 4 residual dense Swin blocks instead of 8.

  python -m medsr_jax.main --config=configs/rdst_e.py --workdir=runs/rdst_e
  python -m medsr_jax.main --config=configs/rdst_e.py:demo --workdir=runs/demo_e

Same training protocol and options as `configs/rdst.py` (§5.3.3); only the depth differs.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "configs_rdst", pathlib.Path(__file__).with_name("rdst.py"))
_rdst = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_rdst)


def get_config(arg=None):
  return _rdst.make_config(arg, model_name="rdst_e", blocks=4)
