"""Predicts the lesion ROI centre of every slice of a data set with an exported lesion detector.

  python -m medsr_jax.detect --model_dir=runs/ld/export --data=SHARD_DIR --out=centres.csv \\
      [--scale=4] [--splits=train,val,test] [--batch_size=16] [--modalities=t1ce]
  python -m medsr_jax.detect --model_dir=runs/ld_demo/export --data=sample --out=centres.csv

Thesis eq. 3.9: the detector LD, trained on HR slices (`trainers/detector.py`), runs on the LR
images and its centres place the ROIs of both the LR and the HR images. For every record of each
split of a data_prep shard directory (or of the embedded sample with `--data=sample`), in record
order, the detector sees the bicubic LR of the slice (`degradation.degrade`, size
(int(H // s), int(W // s)); `--scale=1`: the slice itself). Its normalised prediction (x, y) is
converted to pixels of that image, row = y * h - 0.5, col = x * w - 0.5, and written with the
image's size to the CSV (`data/centres.py`: split,shard,index,row,col,height,width), which
`centres.read_centres` maps to HR pixels for the ROI pipeline (`data.roi.centres=PATH.csv`).

Records are read one at a time and predicted in batches of `--batch_size` slices of one size (the
last batch padded), so each input size compiles once and memory stays bounded. Channels: the
export's recorded `modalities` (`--modalities` overrides; empty: every channel). Bad input (a
missing or broken model directory, a model that is not a lesion detector, an unknown split,
a missing shard directory) gives `error: ...` on stderr, exit code 2, and no output file (the CSV
is written to a temporary name and renamed at the end).

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_detector.py
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Iterator, Sequence

from absl import app, flags
import numpy as np

from medsr_jax import errors
from medsr_jax.errors import InputError



def define_flags() -> None:
  """Defines the command's flags when it runs, not on import, so that its flag names
  (`model_dir`, `out`, `scale`, ...) stay free for the other commands (`infer`, `export`)."""
  flags.DEFINE_string('model_dir', None, 'Export directory of a lesion detector.')
  flags.DEFINE_string('data', None, "data_prep shard directory, or 'sample'.")
  flags.DEFINE_string('out', None, 'CSV file to write.')
  flags.DEFINE_float('scale', 4.0, 'Bicubic downsampling factor of the detector input '
                     '(1: the slices themselves).')
  flags.DEFINE_list('splits', ['train', 'val', 'test'], 'Splits to run on.')
  flags.DEFINE_integer('batch_size', 16, 'Slices per forward pass.')
  flags.DEFINE_list('modalities', None, 'Shard channels (default: the export\'s).')
  flags.mark_flags_as_required(['model_dir', 'data', 'out'])

SAMPLE = 'sample'
SPLITS = ('train', 'val', 'test')


def split_records(data: str, split: str, modalities: Sequence[str] = ()
                  ) -> tuple[int, Iterator[tuple[int, str, np.ndarray]]]:
  """(count, iterator of (index, shard name, (H, W, C) slice)) of one split, in record order."""
  if data == SAMPLE:
    from medsr_jax.data import sample  # pylint: disable=import-outside-toplevel
    chosen = sample.load_sample()[split]
    return len(chosen), ((i, SAMPLE, chosen.images[i]) for i in range(len(chosen)))
  from medsr_jax.data import shards  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(data):
    raise InputError(f"--data must be a data_prep shard directory or 'sample'; {data} is neither")
  src = shards.ShardSource(data, split, modalities=tuple(modalities) or None)

  def records():
    for i in range(len(src)):
      yield i, os.path.basename(src.locate(i)[0]), src[i]
  return len(src), records()


def detector_input(image: np.ndarray, scale: float) -> np.ndarray:
  """The image the detector sees: the slice (scale 1) or its bicubic LR (`lesion.lr_of`)."""
  from medsr_jax.data import lesion  # pylint: disable=import-outside-toplevel
  return lesion.lr_of(image, scale)


def predict_centres(predict, variables, inputs: Iterable[tuple[Any, np.ndarray]],
                    batch_size: int) -> dict[Any, tuple[float, float, int, int]]:
  """{key: (row, col, height, width)} of the detector's centre for each `(key, image)` of
  `inputs`, in pixels of that image; images of one size are batched together (one compilation
  per size)."""
  from medsr_jax.metrics import roi_detection  # pylint: disable=import-outside-toplevel
  found: dict[Any, tuple[float, float, int, int]] = {}
  pending: dict[tuple[int, ...], list[tuple[Any, np.ndarray]]] = {}

  def flush(shape):
    batch = pending.pop(shape)
    pred = predict(variables, np.stack([image for _, image in batch]))
    for (key, _), (r, c) in zip(batch, roi_detection.centres_from_normalised(pred, shape[:2])):
      found[key] = (float(r), float(c), int(shape[0]), int(shape[1]))

  for key, image in inputs:
    pending.setdefault(image.shape, []).append((key, image))
    if len(pending[image.shape]) == batch_size:
      flush(image.shape)
  for shape in list(pending):
    flush(shape)
  return found


def centres_for_source(model_dir: str, source: Any, scale: float, batch_size: int = 16
                       ) -> np.ndarray:
  """(N, 2) ROI centres (row, col) in pixels of `source`'s slices, predicted by the detector of
  `model_dir` from each slice's LR (bicubic / `scale`, thesis eq. 3.9); for
  `data.roi.centres='detector'` (`data/lesion.py`)."""
  from medsr_jax import evaluate  # pylint: disable=import-outside-toplevel
  from medsr_jax.data import lesion  # pylint: disable=import-outside-toplevel
  from medsr_jax.trainers import detector  # pylint: disable=import-outside-toplevel
  module, variables, _ = detector.load_detector(model_dir)
  predict = evaluate.Predictor(module, batch_size)
  shapes: dict[int, tuple[int, int]] = {}

  def inputs():
    for i in range(len(source)):
      item = source[i]
      image = np.asarray(item['image'] if isinstance(item, dict) else item, np.float32)
      shapes[i] = image.shape[:2]
      yield i, detector_input(image, scale)

  found = predict_centres(predict, variables, inputs(), batch_size)
  out = np.empty((len(source), 2), np.float64)
  for i, (r, c, h, w) in found.items():
    out[i] = lesion.scale_centres(np.array([r, c]), (h, w), shapes[i])
  print(f'ROI centres of {len(source)} slices predicted by the lesion detector {model_dir}',
        flush=True)
  return out


def run(model_dir: str, data: str, out: str, *, scale: float = 4.0,
        splits: Sequence[str] = SPLITS, batch_size: int = 16,
        modalities: Sequence[str] | None = None) -> dict[str, int]:
  """Writes the centres CSV; returns {split: record count}."""
  if batch_size < 1:
    raise InputError(f'--batch_size must be >= 1, got {batch_size}')
  if not scale >= 1:
    raise InputError(f'--scale must be >= 1 (1: the slices themselves), got {scale:g}')
  splits = [s.strip() for s in splits if s.strip()]
  unknown = sorted(set(splits) - set(SPLITS))
  if not splits or unknown:
    raise InputError(f'--splits must name some of {SPLITS}, got {",".join(splits) or "none"}')
  if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
    raise InputError(f'output directory does not exist: {os.path.dirname(os.path.abspath(out))}')

  from medsr_jax import evaluate  # pylint: disable=import-outside-toplevel  (jax import is slow)
  from medsr_jax.data import centres as centres_lib  # pylint: disable=import-outside-toplevel
  from medsr_jax.trainers import detector  # pylint: disable=import-outside-toplevel
  module, variables, config = detector.load_detector(model_dir)
  if modalities is None:
    modalities = config.get('extra', {}).get('modalities', []) or ()
  predict = evaluate.Predictor(module, batch_size)
  in_channels = int(config['in_channels'])

  rows: list[tuple[Any, ...]] = []
  counts = {}
  for split in splits:
    count, records = split_records(data, split, modalities)
    shards_of: dict[int, str] = {}

    def inputs(records=records, split=split, shards_of=shards_of):
      for index, shard, image in records:
        if image.shape[-1] != in_channels:
          raise InputError(f'{data} {split}[{index}] has {image.shape[-1]} channel(s), the '
                           f'detector takes {in_channels} (pick them with --modalities)')
        shards_of[index] = shard
        yield index, detector_input(image, scale)

    for index, (r, c, h, w) in predict_centres(predict, variables, inputs(), batch_size).items():
      rows.append((split, shards_of[index], index, r, c, h, w))
    counts[split] = count
  order = {s: k for k, s in enumerate(splits)}
  rows.sort(key=lambda r: (order[r[0]], r[2]))
  centres_lib.write_centres(out, rows)
  return counts


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def go():
    f = flags.FLAGS
    counts = run(f.model_dir, f.data, f.out, scale=f.scale, splits=f.splits,
                 batch_size=f.batch_size, modalities=f.modalities)
    listed = ', '.join(f'{s} {n}' for s, n in counts.items())
    print(f'wrote {sum(counts.values())} centres ({listed}) at x{f.scale:g} to {f.out}',
          flush=True)

  errors.cli_main(go)


if __name__ == '__main__':
  define_flags()
  sys.exit(app.run(main))
