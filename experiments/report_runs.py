"""Run directories for the chapter-4/5 reports: what each run is (its facts) and its scores.

A run directory holds `config.json` (the resolved config, `medsr_jax.main`) and `results.json`
(the trainer's final evaluation). Read beside them when present:
  eval/test/results.json   `python -m medsr_jax.evaluate --workdir=RUN` (the chapter-4 test protocol
                          at any scales: `medsr_jax.evaluate.scales.evaluate_scales`' result); it
                          is preferred to the per-scale scores inside results.json;
  export/config.json      the export's 'param_count' (the Params columns).

`facts(config, results)` turns a config into the flat facts the table specs match on
(experiments/report_tables.py): trainer, model, scale, in_channels, dataset, stages ('l1+finetune'),
loss (the last stage's: 'l1', 'e1'..'e5', 'esum', 'd', 'hrl', 'vgg', a GAN kind such as
'wgan_gp', 'mse'), eta / gamma (the last stage's VGG / adversarial weights; inf when the term is
the stage's only one), gan (config.gan.kind or None), critic (the discriminator's name), w / b
(MIASSR's EDSR-lite n_feats / n_resblocks), blur, roi (lesion-focused), init_from, unet_dataset
(the dataset of the frozen U-Net's run) and 'kw.<name>' for every scalar model option.

The dataset is, in this order: config.eval.dataset; 'sample' for the embedded slices (no
data.path); the shard manifest's 'dataset' (data.path/manifest.json, when readable here); the
Dice section's dataset in results.json; the data source's prefix ('oasis_miassr' -> 'oasis');
else ''.

Scores (`image_value`, `dice_value`, `params_value`, `complexity_value`, `per_scale_values`):
for fixed-scale runs results.json's {method: {'psnr_mean', 'psnr_std', ...}}
(method 'model' or 'bicubic'; written by `evaluate.write_report`), the per-channel entries
'per_channel' {channel: entry} when present, the Dice section
results['dice']['results'][method]['vs_gt'][region] {'mean', 'std'} (the model's Dice method is
named config.model.name; 'HR' is the reference row), FID as the entry's 'fid' (a number or
{'mean', 'std'}), and results['complexity'] {'macs_g', 'fps'} when present. Chapter-4 tables
('scales' mode) average the per-scale entries of the run's scale results over its scales
(mean of the per-scale means and of the per-scale stds, as the arbitrary-scale trainer's
summary); FID only when every scale has one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Any, Iterable, Mapping, Optional

from medsr_jax.errors import InputError

RUN_FILES = ('config.json', 'results.json')
SCALES_FILE = pathlib.Path('eval') / 'test' / 'results.json'  # python -m medsr_jax.evaluate
EXPORT_CONFIG = pathlib.Path('export') / 'config.json'
MANIFEST = 'manifest.json'
DATASETS = ('oasis', 'brats', 'acdc', 'covid_ct')
DICE_REGIONS = ('T', 'GM', 'WM', 'CSF', 'WT', 'ET', 'TC', 'LV', 'RV', 'MC', 'LL', 'RL', 'lesion')
WHOLE_REGION = {'brats': 'WT'}   # the region of 'Dice-T / WT' columns; 'T' elsewhere
HR = 'HR'                        # the Dice section's reference row


@dataclasses.dataclass
class Record:
  """One run: its directory, config, results, scale results, export config and facts."""
  directory: pathlib.Path
  config: dict = dataclasses.field(repr=False)
  results: dict = dataclasses.field(repr=False)
  scales: Optional[dict] = dataclasses.field(default=None, repr=False)
  export: Optional[dict] = dataclasses.field(default=None, repr=False)
  facts: dict = dataclasses.field(default_factory=dict, repr=False)
  order: int = 0


def read_json(path: pathlib.Path) -> Any:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise InputError(f'{path}: cannot read JSON ({" ".join(str(e).split())})') from e


def read_object(path: pathlib.Path) -> dict:
  """A JSON object (a JSON text holding one is unwrapped); InputError otherwise."""
  value = read_json(path)
  if isinstance(value, str):    # a config stored as ml_collections' JSON text inside JSON
    try:
      value = json.loads(value)
    except ValueError as e:
      raise InputError(f'{path}: cannot read JSON ({e})') from e
  if not isinstance(value, dict):
    raise InputError(f'{path}: not a JSON object')
  return value


def get(node: Any, dotted: str, default: Any = None) -> Any:
  for key in dotted.split('.'):
    if not isinstance(node, dict) or key not in node:
      return default
    node = node[key]
  return node


def run_directories(paths: Iterable[Any]) -> list[pathlib.Path]:
  """Every directory under `paths` (searched recursively) holding config.json and results.json,
  in path order, each once. InputError for a path that is not a directory."""
  found: dict[pathlib.Path, None] = {}
  for path in paths:
    root = pathlib.Path(path)
    if not root.is_dir():
      raise InputError(f'--runs: {path} is not a directory')
    for folder, subdirs, files in os.walk(root):
      subdirs.sort()
      if all(name in files for name in RUN_FILES):
        found.setdefault(pathlib.Path(folder), None)
  out, seen = [], set()
  for directory in sorted(found, key=lambda p: p.parts):
    key = directory.resolve()
    if key not in seen:
      seen.add(key)
      out.append(directory)
  return out


def load_record(directory: Any, order: int = 0) -> Record:
  """The `Record` of one run directory (InputError for unreadable JSON)."""
  directory = pathlib.Path(directory)
  config = read_object(directory / 'config.json')
  results = read_object(directory / 'results.json')
  scales = None
  if (directory / SCALES_FILE).is_file():
    scales = read_object(directory / SCALES_FILE)
  elif isinstance(results.get('per_scale'), dict):
    scales = results
  export = None
  if (directory / EXPORT_CONFIG).is_file():
    export = read_object(directory / EXPORT_CONFIG)
  return Record(directory=directory, config=config, results=results, scales=scales,
                export=export, facts=facts(config, results), order=order)


def find_records(paths: Iterable[Any]) -> list[Record]:
  return [load_record(d, i) for i, d in enumerate(run_directories(paths))]


# ------------------------------------------------------------------------------------------------
# facts


def _dataset_of_source(source: str) -> str:
  for name in DATASETS:
    if source == name or source.startswith(name + '_'):
      return name
  if source.startswith('covid'):
    return 'covid_ct'
  return ''


def _manifest_dataset(path: str) -> str:
  manifest = pathlib.Path(path) / MANIFEST
  try:
    with open(manifest, encoding='utf-8') as f:
      value = json.load(f).get('dataset', '')
  except (OSError, ValueError, AttributeError):
    return ''
  return str(value or '')


def dataset(config: Mapping[str, Any], results: Optional[Mapping[str, Any]] = None) -> str:
  """The run's dataset (module docstring)."""
  explicit = get(config, 'eval.dataset') or ''
  if explicit:
    return str(explicit)
  path = str(get(config, 'data.path') or '')
  source = str(get(config, 'data.source') or '')
  if not path and source == 'sample':
    return 'sample'
  if path:
    name = _manifest_dataset(path)
    if name:
      return name
  dice = get(results or {}, 'dice.dataset')
  if isinstance(dice, str) and dice:
    return dice
  return _dataset_of_source(source)


def _unet_dataset(config: Mapping[str, Any]) -> Optional[str]:
  """The dataset of the run whose U-Net export the run uses (None when unknown)."""
  path = str(get(config, 'eval.unet') or get(config, 'train.frozen.unet') or '')
  if not path:
    return None
  here = pathlib.Path(path)
  for candidate in (here / 'config.json', here.parent / 'config.json'):
    try:
      run_config = read_object(candidate)
    except InputError:
      continue
    if 'data' in run_config:    # a run's config, not an export's
      return dataset(run_config) or None
  return None


def _losses(stage: Mapping[str, Any]) -> dict[str, float]:
  losses = stage.get('losses') or {}
  if not losses and stage.get('loss'):
    losses = {stage['loss']: 1.0}
  return {str(k): float(v) for k, v in losses.items() if isinstance(v, (int, float)) and v}


def _weight(losses: Mapping[str, float], prefix: str) -> float:
  keys = [k for k in losses if k.startswith(prefix)]
  if keys and len(losses) == len(keys):
    return math.inf        # the term alone (thesis Tables 4.5 / 4.6: 'infinity')
  return float(sum(losses[k] for k in keys))


def _loss_name(losses: Mapping[str, float], gan_kind: Optional[str]) -> str:
  unet = sorted(k[len('unet_'):] for k in losses if k.startswith('unet_'))
  if unet:
    return '+'.join(unet)
  if 'adv' in losses:
    return gan_kind or 'adv'
  if any(k.startswith('vgg') for k in losses):
    return 'vgg'
  return '+'.join(sorted(losses)) or ''


def facts(config: Mapping[str, Any], results: Optional[Mapping[str, Any]] = None) -> dict:
  """The flat facts of a run's config (module docstring)."""
  model = get(config, 'model') or {}
  kwargs = model.get('kwargs') or {}
  stages = [s for s in (get(config, 'train.stages') or []) if isinstance(s, dict)]
  if isinstance(get(config, 'train.stages'), dict):   # a ConfigDict list stored as a dict
    stages = [v for _, v in sorted(get(config, 'train.stages').items()) if isinstance(v, dict)]
  losses = _losses(stages[-1]) if stages else {}
  gan = config.get('gan') if isinstance(config.get('gan'), dict) else None
  gan_kind = gan.get('kind') if gan else None
  scale = model.get('scale')
  roi = get(config, 'data.roi.size') or []
  out = {
      'trainer': config.get('trainer'),
      'model': model.get('name'),
      'scale': float(scale) if isinstance(scale, (int, float)) else None,
      'in_channels': model.get('in_channels'),
      'dataset': dataset(config, results),
      'stages': '+'.join(str(s.get('name', '')) for s in stages),
      'loss': _loss_name(losses, gan_kind),
      'eta': _weight(losses, 'vgg'),
      'gamma': _weight(losses, 'adv'),
      'gan': gan_kind,
      'critic': get(gan, 'discriminator.name') if gan else None,
      'blur': bool(get(config, 'data.blur', False)),
      'roi': any(isinstance(v, (int, float)) and v for v in roi),
      'init_from': bool(config.get('init_from')),
      'unet_dataset': _unet_dataset(config),
      'w': None, 'b': None,
  }
  for pair in kwargs.get('feature_options') or ():
    if isinstance(pair, (list, tuple)) and len(pair) == 2:
      out[{'n_feats': 'w', 'n_resblocks': 'b'}.get(pair[0], f'kw.{pair[0]}')] = pair[1]
  for key, value in kwargs.items():
    if value is None or isinstance(value, (str, int, float, bool)):
      out[f'kw.{key}'] = value
  return out


# ------------------------------------------------------------------------------------------------
# scores

Pair = tuple  # (mean, std or None)


def _finite(value: Any) -> Optional[float]:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _entry_pair(entry: Any, metric: str) -> Optional[Pair]:
  """(mean, std) of 'psnr' / 'ssim' / 'fid' in one method entry."""
  if not isinstance(entry, dict):
    return None
  if metric == 'fid':
    value = entry.get('fid', entry.get('fid_mean'))
    if isinstance(value, dict):
      mean = _finite(value.get('mean', value.get('value')))
      return (mean, _finite(value.get('std'))) if mean is not None else None
    mean = _finite(value)
    return (mean, _finite(entry.get('fid_std'))) if mean is not None else None
  mean = _finite(entry.get(f'{metric}_mean'))
  if mean is None:
    return None
  return mean, _finite(entry.get(f'{metric}_std'))


def _channel(entry: Any, channel: Optional[str]) -> Any:
  if not channel:
    return entry
  per_channel = entry.get('per_channel') if isinstance(entry, dict) else None
  if not isinstance(per_channel, dict):
    return None
  return per_channel.get(channel)


def dice_method(record: Record, method: str) -> list[str]:
  """The names the Dice section may give the method (config.model.name for the model)."""
  if method == 'model':
    return [str(get(record.config, 'model.name') or ''), 'model']
  return [method]


def image_value(record: Record, method: str, metric: str, *, channel: Optional[str] = None,
                over_scales: bool = False) -> Optional[Pair]:
  """PSNR / SSIM / FID of a method of a run (module docstring); None when absent."""
  if over_scales:
    per_scale = (record.scales or {}).get('per_scale')
    if not isinstance(per_scale, dict) or not per_scale:
      return None
    pairs = [_entry_pair(_channel(entry.get(method) if isinstance(entry, dict) else None,
                                  channel), metric) for entry in per_scale.values()]
    if any(p is None for p in pairs):
      return None
    stds = [p[1] for p in pairs]
    return (sum(p[0] for p in pairs) / len(pairs),
            None if any(s is None for s in stds) else sum(stds) / len(stds))
  return _entry_pair(_channel(record.results.get(method), channel), metric)


def per_scale_values(record: Record, method: str, metric: str,
                     channel: Optional[str] = None) -> list[tuple[float, float]]:
  """[(scale, mean)] of a method's per-scale scores, sorted by scale ([] when none)."""
  per_scale = (record.scales or {}).get('per_scale')
  if not isinstance(per_scale, dict):
    return []
  out = []
  for key, entry in per_scale.items():
    pair = _entry_pair(_channel(entry.get(method) if isinstance(entry, dict) else None, channel),
                       metric)
    scale = _finite(entry.get('scale')) if isinstance(entry, dict) else None
    if scale is None:
      try:
        scale = float(key)
      except ValueError:
        continue
    if pair is not None:
      out.append((scale, pair[0]))
  return sorted(out)


def whole_region(record: Record) -> str:
  name = get(record.results, 'dice.dataset') or record.facts.get('dataset', '')
  return WHOLE_REGION.get(str(name), 'T')


def dice_value(record: Record, method: str, region: Optional[str]) -> Optional[Pair]:
  """Dice (mean, std) of a method against the ground truth, None when absent or undefined."""
  results = get(record.results, 'dice.results')
  if not isinstance(results, dict):
    return None
  region = region or whole_region(record)
  for name in dice_method(record, method):
    entry = get(results.get(name), f'vs_gt.{region}') if name in results else None
    if isinstance(entry, dict):
      mean = _finite(entry.get('mean'))
      return (mean, _finite(entry.get('std'))) if mean is not None else None
  return None


def params_value(record: Record) -> Optional[Pair]:
  count = _finite((record.export or {}).get('param_count'))
  return (count / 1e6, None) if count is not None else None


def complexity_value(record: Record, key: str) -> Optional[Pair]:
  value = _finite(get(record.results, f'complexity.{key}'))
  return (value, None) if value is not None else None
