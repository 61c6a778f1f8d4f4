"""`python -m medsr_jax.export`: PyTorch state dict <-> medsr_jax export directory.

  python -m medsr_jax.export --model=rdst --scale=4 --from_torch=rdst_x4.safetensors \\
      --out=exports/rdst_x4
  python -m medsr_jax.export --model_dir=exports/rdst_x4 --to_torch=rdst_x4.npz

The command line lives in `medsr_jax.export_cli` (see its docstring); this entry point only runs
it, so the library `medsr_jax.export` never imports the command line (export_cli -> export only),
and `export_cli.run_main` defines the flags when the command runs, not on import.
Tests: .venv/bin/python -m pytest -q tests/test_export_cli.py
"""

from medsr_jax import export_cli

if __name__ == '__main__':
  export_cli.run_main()
