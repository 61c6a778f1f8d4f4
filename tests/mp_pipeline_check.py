"""Run by tests/test_pipeline.py in a subprocess: grain worker processes give the same batches.

  python -m tests.mp_pipeline_check   (prints 'same batches' and the iterator state)

Worker processes need absl flags parsed and an importable `__main__`, which a pytest process does
not offer, hence a script of its own.
"""

import sys

from absl import app
import numpy as np

from medsr_jax.data import pipeline
from medsr_jax.data import sources


def main(argv):
  del argv
  slices = np.random.default_rng(0).random((40, 48, 40, 1), dtype=np.float32)
  ds = pipeline.make_train_dataset(sources.ArraySliceSource(slices), global_batch_size=4,
                                   lr_patch=8, scale=4, seed=3, process_index=0, process_count=1)
  threads = pipeline.train_iterator(ds, num_threads=2)
  workers = pipeline.train_iterator(ds, num_workers=2)
  for _ in range(12):
    a, b = next(threads), next(workers)
    if not (np.array_equal(a['lr'], b['lr']) and np.array_equal(a['hr'], b['hr'])):
      print('batches differ')
      return 1
  print('same batches', workers.get_state())
  return 0


if __name__ == '__main__':
  sys.exit(app.run(main))
