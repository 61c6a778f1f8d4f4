"""medsr_jax: JAX/Flax medical-image super-resolution after Jin Zhu's dissertation (Cambridge, 2023).

Entry points:
  python -m medsr_jax.main --config=configs/rdst.py --workdir=DIR     train, evaluate, export
  python -m medsr_jax.infer --model_dir=DIR/export --input=F --output=G  super-resolve a file
"""

__version__ = "0.1.0"
