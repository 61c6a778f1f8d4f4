"""The manifest of a shard directory written by `data_prep` and read by the shard source.

A shard directory holds, per split, TFRecord shards of slice records (`medsr_jax.data.records`),
one offset index per shard, and `manifest.json`:

  <out>/manifest.json
  <out>/train-00000-of-00004.tfrecord          framed tf.train.Example slice records
  <out>/train-00000-of-00004.tfrecord.index.npy int64 byte offset of every record (np.save)
  <out>/train-00000-of-00004.tfrecord.volumes.json  per source volume: files, slice indices,
                                               record range in the shard, every channel's
                                               [min, max], crop offset (written by data_prep)
  <out>/val-00000-of-00001.tfrecord ...

manifest.json (format 'medsr_jax.shards', version 1):

  {"format": "medsr_jax.shards", "format_version": 1,
   "dataset": "oasis", "protocol": "rdst",            # data_prep --dataset / --protocol
   "settings": {...},                                 # everything that determines the bytes:
                                                      # crop, slice selection, normalisation,
                                                      # split rule, shard counts, modalities
   "channels": 1, "modalities": ["t1"], "has_labels": true, "slice_shape": [160, 128, 1] | null,
   "splits": {"train": {"subjects": [...], "num_records": 1234,
                        "shards": [{"file": "train-00000-of-00004.tfrecord",
                                    "index": "train-00000-of-00004.tfrecord.index.npy",
                                    "num_records": 309, "sha256": "..."}, ...]},
              "val": {...}, "test": {...}},
   "skipped": [{"path": "...", "reason": "...", ...}],  # volumes left out with --skip_bad
                                                      # (data_prep adds "volume" and "shard")
   "sources": ["/data/OASIS/disc1", ...],
   "complete": true}                                  # false while a build is in progress

A shard is listed only once it is completely written (written to a temporary name, then renamed),
so every listed shard is whole; `complete` turns true when every planned shard is listed.
`slice_shape` is null when slices differ in size (e.g. ACDC centre crops of small frames).

`read_manifest(dir)` validates the structure and returns a `Manifest`; `write_manifest(dir, m)`
writes it atomically. Run `python -m pytest tests/test_records.py` (the manifest tests live there too).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

from medsr_jax.errors import InputError
from medsr_jax.io import images
from medsr_jax.io import json_files

FORMAT = 'medsr_jax.shards'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
SPLITS = ('train', 'val', 'test')
INDEX_SUFFIX = '.index.npy'


@dataclasses.dataclass
class Shard:
  file: str
  index: str
  num_records: int
  sha256: str


@dataclasses.dataclass
class Split:
  subjects: list[str] = dataclasses.field(default_factory=list)
  num_records: int = 0
  shards: list[Shard] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Manifest:
  dataset: str
  protocol: str
  settings: dict[str, Any]
  channels: int
  modalities: list[str]
  has_labels: bool
  slice_shape: Optional[list[int]] = None
  splits: dict[str, Split] = dataclasses.field(default_factory=dict)
  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
  sources: list[str] = dataclasses.field(default_factory=list)
  complete: bool = False

  def to_json(self) -> dict[str, Any]:
    out = {'format': FORMAT, 'format_version': FORMAT_VERSION}
    out.update(dataclasses.asdict(self))
    return out


def shard_name(split: str, i: int, n: int) -> str:
  """'train-00003-of-00008.tfrecord'."""
  return f'{split}-{i:05d}-of-{n:05d}.tfrecord'


def _require(cond: bool, path: str, what: str) -> None:
  if not cond:
    raise InputError(f'{path}: invalid shard manifest ({what})')


def _split_from_json(raw: Any, path: str, name: str) -> Split:
  _require(isinstance(raw, dict), path, f'split {name!r} is not an object')
  shards = []
  for s in raw.get('shards', []):
    _require(isinstance(s, dict) and all(k in s for k in ('file', 'index', 'num_records',
                                                          'sha256')),
             path, f'a shard of split {name!r} lacks file/index/num_records/sha256')
    _require(os.path.basename(s['file']) == s['file'] and os.path.basename(s['index']) ==
             s['index'], path, 'shard file names must not contain directories')
    shards.append(Shard(str(s['file']), str(s['index']), int(s['num_records']), str(s['sha256'])))
  split = Split([str(x) for x in raw.get('subjects', [])], int(raw.get('num_records', 0)), shards)
  _require(split.num_records == sum(s.num_records for s in shards), path,
           f'split {name!r} record count does not match its shards')
  return split


def read_manifest(directory: str) -> Manifest:
  """The validated manifest of shard directory `directory` (InputError if missing or bad)."""
  path, raw = json_files.read_json_object(directory, MANIFEST, 'shard directory',
                                          'a data_prep shard directory')
  _require(raw.get('format') == FORMAT, path, 'wrong format')
  _require(isinstance(raw.get('format_version'), int) and raw['format_version'] <= FORMAT_VERSION,
           path, f'format version {raw.get("format_version")!r} is newer than supported')
  for key in ('dataset', 'protocol', 'settings', 'channels', 'modalities', 'has_labels',
              'splits'):
    _require(key in raw, path, f'missing {key!r}')
  splits = raw['splits']
  _require(isinstance(splits, dict) and set(splits) <= set(SPLITS), path, 'bad splits')
  return Manifest(
      dataset=str(raw['dataset']), protocol=str(raw['protocol']), settings=dict(raw['settings']),
      channels=int(raw['channels']), modalities=[str(m) for m in raw['modalities']],
      has_labels=bool(raw['has_labels']), slice_shape=raw.get('slice_shape'),
      splits={k: _split_from_json(v, path, k) for k, v in splits.items()},
      skipped=list(raw.get('skipped', [])), sources=list(raw.get('sources', [])),
      complete=bool(raw.get('complete', False)))


def write_manifest(directory: str, manifest: Manifest) -> None:
  """Writes `directory`/manifest.json atomically (temporary file + rename)."""
  path = os.path.join(os.fspath(directory), MANIFEST)
  text = json.dumps(manifest.to_json(), indent=1, sort_keys=True) + '\n'
  with images.temp_path(path, '.json') as tmp:
    with open(tmp, 'x', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
