"""The lesion-detector trainer (`config.trainer = 'detector'`): LD of thesis §3.2.2, eq. 3.8.

  python -m medsr_jax.main --config=configs/lesion_detector.py --workdir=runs/ld \\
      --config.data.path=SHARDS_BRATS_CH3
  python -m medsr_jax.main --config=configs/lesion_detector.py:demo --workdir=runs/ld_demo

What it trains. The 'lesion_detector' network (models/lesion_detector.py) regresses the centre of
the lesion ROI from one whole slice. Training uses the whole HR slices of the train split that
contain lesion pixels (`data.roi.lesion_labels`; empty: every label > 0, the thesis' fused
whole tumour). They are selected once at start-up by reading every label map (one pass over the
split), so a slice without lesion is never drawn; none left is an InputError. The target is the
lesion centroid ("averaging the location of all masked pixels", §3.3.1) in normalised image
units, (c_x, c_y) = ((col + 0.5) / W, (row + 0.5) / H) (`metrics.roi_detection`): the network's
resizing head maps any input to input_size x input_size, so only image-relative coordinates let
the network trained on HR slices run on LR ones (§3.2.2). Loss: the mean squared error of the two
coordinates (L2, eq. 3.8); Adam, lr 1e-3, betas (0.9, 0.999) (§3.3.3); BatchNorm statistics are
updated in the step. The batches come from the shared grain blocks (`pipeline.shuffled_stream`
-> `local_batches` -> `train_iterator`): a seeded shuffle per epoch, index-addressed, and the
iterator is checkpointed with the state, so a resumed run sees the same order. The state is
`trainers/state.py`'s, one player 'g' (the detector); the step is jitted once with explicit
shardings and the state donated (`step.jit_train_step`).

Epochs. The thesis trains LD for 50 epochs. `detector.epochs` > 0 replaces the step count of the
(single) stage by epochs * ceil(N_train / global_batch_size), N_train = the lesion slices found;
0 keeps `train.stages` as given in steps (`train.max_steps` caps either).

Validation (every `train.eval_every` steps). On the validation slices with lesion pixels the
detector sees the LR slice `degradation.degrade(HR, detector.eval_scale)` (OpenCV-exact bicubic;
Table 3.2 reports x2 and x4; 1 = the HR slice itself). Its prediction is mapped to HR pixels,
row = c_y * H - 0.5, col = c_x * W - 0.5, the `data.roi.size` box is put around it and clamped
into the slice exactly as the ROI training crop is (`transforms.roi_window`), and each slice's
coverage (share of its lesion pixels inside the box) gives its level: perfect (1.0), acceptable
(> 0.95), bad (<= 0.95) (§3.4.2). Metrics: val_perfect, val_acceptable, val_bad (fractions),
val_centre_error (mean Euclidean distance in HR pixels between predicted and label centres) and
val_accuracy = val_perfect, which ranks checkpoints ('max'; on a tie orbax keeps the later
step: its stable sort keeps step order and takes the last).

Final evaluation: the same on the test split for every scale of `detector.test_scales` (and
`eval_scale`), plus a reference row with the ROI around the label centres, printed and written as the Table 3.2 layout to workdir/results.md, with every
slice's coverage, level, predicted and true centre in workdir/results.json (both written to a
temporary name, then renamed). Export: `workdir/export/` (`export.save_export`), read back by
`export.load_export` and `python -m medsr_jax.detect`; its `extra` records the lesion labels, the
ROI size and the target convention.

Run the checks with:
  .venv/bin/python -m pytest -q tests/test_detector.py
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from medsr_jax import cpu_compile, evaluate, export, models, sharding
from medsr_jax.data import lesion, pipeline, sources
from medsr_jax.errors import InputError
from medsr_jax.io import text_files
from medsr_jax.metrics import roi_detection
from medsr_jax.trainers import sr
from medsr_jax.trainers import state as state_lib
from medsr_jax.trainers import step as step_lib

G = state_lib.GENERATOR  # the one player: the detector
ORACLE_ROW = 'label centre (reference)'


# ----------------------------------------------------------------------------------------------
# Data.


def lesion_slices(source: Any, lesion_labels: Sequence[int] = ()
                  ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
  """(indices, centres (n, 2) (row, col), (H, W)) of the items of a labelled source that have
  lesion pixels. Reads every label once (an in-memory source's `.labels` directly). All slices
  must have one size (they are batched whole)."""
  labels = getattr(source, 'labels', None)
  n = len(source)
  indices, centres, shapes = [], [], set()
  for i in range(n):
    label = labels[i] if labels is not None else source[i]['label']
    shapes.add(tuple(np.shape(label)))
    c = lesion.centre_of(label, lesion_labels)
    if c is not None:
      indices.append(i)
      centres.append(c)
  if len(shapes) > 1:
    raise InputError(f'the slices have {len(shapes)} sizes {sorted(shapes)[:3]}; the lesion '
                     'detector trains on whole slices of one size')
  hw = next(iter(shapes)) if shapes else (0, 0)
  return (np.asarray(indices, np.int64), np.asarray(centres, np.float64).reshape(-1, 2),
          (int(hw[0]), int(hw[1])))


class TargetSource:
  """The lesion slices of a labelled source as {'image' (H, W, C), 'target' (2,)} items, the
  target being the normalised centre (x, y). Picklable for grain workers."""

  def __init__(self, labelled_source: Any, indices: np.ndarray, targets: np.ndarray):
    self.source = labelled_source
    self.indices = np.asarray(indices, np.int64)
    self.targets = np.asarray(targets, np.float32)

  def __len__(self) -> int:
    return int(self.indices.shape[0])

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    item = self.source[int(self.indices[int(index)])]
    return {'image': np.asarray(item['image'], np.float32), 'target': self.targets[int(index)]}


@dataclasses.dataclass(frozen=True)
class EvalData:
  """The lesion slices of an evaluation split: HR images (n, H, W, C), lesion masks (n, H, W),
  label centres (n, 2) (row, col), their index in the split and a readable id."""
  images: np.ndarray
  masks: np.ndarray
  centres: np.ndarray
  indices: np.ndarray
  ids: tuple[str, ...]

  def inputs(self, scale: float) -> np.ndarray:
    """What the detector sees: the HR slices (scale 1) or their bicubic LR (thesis eq. 3.23)."""
    return lesion.lr_of(self.images, scale)


def slice_ids(source: Any) -> list[str]:
  """'subject/s<slice index>#<n>' of every item of a split (n: its index), or 'slice<n>'."""
  index, subject = getattr(source, 'slice_index', None), getattr(source, 'subject', None)
  n = len(source)
  if index is None:
    return [f'slice{i:04d}' for i in range(n)]
  subjects = subject if isinstance(subject, (list, tuple)) else [subject] * n
  return [f'{s or "slice"}/s{int(k):03d}#{i}' for i, (s, k) in enumerate(zip(subjects, index))]


def eval_data(data_config, split: str, lesion_labels: Sequence[int]) -> EvalData:
  """`EvalData` of an in-memory labelled split (val / test); InputError if no slice has a
  lesion."""
  source = sources.source_from_config(data_config, split, with_label=True)
  indices, centres, _ = lesion_slices(source, lesion_labels)
  if not len(indices):
    raise InputError(f'no {split} slice has lesion pixels (data.roi.lesion_labels='
                     f'{tuple(lesion_labels)})')
  items = [source[int(i)] for i in indices]
  ids = slice_ids(source)
  return EvalData(images=np.stack([np.asarray(it['image'], np.float32) for it in items]),
                  masks=np.stack([lesion.lesion_mask(it['label'], lesion_labels)
                                  for it in items]),
                  centres=centres, indices=indices, ids=tuple(ids[int(i)] for i in indices))


# ----------------------------------------------------------------------------------------------
# Settings.


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
  roi_size: tuple[int, int]
  lesion_labels: tuple[int, ...]
  eval_scale: float
  test_scales: tuple[float, ...]
  epochs: int


def settings_from_config(config) -> DetectorSettings:
  """The detector's settings (InputError for bad values)."""
  roi = config.data.get('roi', None)
  size = tuple(int(v) for v in (roi.size if roi is not None else (0, 0)))
  if len(size) != 2 or min(size) < 1:
    raise InputError(f'the lesion detector needs the ROI size of its accuracy levels: '
                     f'--config.data.roi.size="(h, w)", got {size}')
  d = config.get('detector', None)
  if d is None:
    raise InputError("trainer 'detector' needs a 'detector' config section "
                     '(configs/lesion_detector.py)')
  eval_scale = float(d.eval_scale)
  test_scales = tuple(float(s) for s in d.get('test_scales', ()))
  for s in (eval_scale,) + test_scales:
    if not s >= 1:
      raise InputError(f'detector scales must be >= 1 (1 = the HR slice), got {s:g}')
  epochs = int(d.get('epochs', 0))
  if epochs < 0:
    raise InputError(f'detector.epochs must be >= 0, got {epochs}')
  return DetectorSettings(roi_size=size,
                          lesion_labels=tuple(int(v) for v in roi.get('lesion_labels', ())),
                          eval_scale=eval_scale,
                          test_scales=tuple(sorted(set(test_scales) | {eval_scale})),
                          epochs=epochs)


def scale_label(scale: float) -> str:
  return f'x{scale:g}' + (' (HR)' if float(scale) == 1.0 else '')


# ----------------------------------------------------------------------------------------------
# The trainer.


class DetectorTrainer:
  """Lesion-centre regression (module docstring) for the shared loop (`trainers/loop.py`)."""

  name = 'detector'
  best_metric, best_mode = 'val_accuracy', 'max'

  def __init__(self, config, workdir: pathlib.Path):
    self.config, self.workdir = config, pathlib.Path(workdir)
    self.settings = settings_from_config(config)
    if tuple(config.data.get('scales', ())):
      raise InputError('data.scales is set but the lesion detector trains on whole HR slices; '
                       'clear data.scales')
    self.mesh = sharding.make_mesh(config.mesh.shape, config.mesh.axis_names)
    self.model = sr.build_model(config.model)
    self.train_source = self._train_source()
    self.stages = self._stages()
    self.total_steps = self._total_steps()
    self.train_iter = self._make_train_iterator()
    self.val = eval_data(config.data, 'val', self.settings.lesion_labels)
    self._check_roi(self.val.images.shape[1:3])
    self.val_inputs = self.val.inputs(self.settings.eval_scale)
    self.predict = evaluate.Predictor(self.model, config.data.eval_batch_size)
    self.state = self._init_state()
    self.state_shardings = jax.tree.map(lambda x: x.sharding, self.state)
    self.best_checkpoint = None
    self._steps: dict[int, Any] = {}

  # ----- data -------------------------------------------------------------------------------
  def _check_roi(self, hw: Sequence[int]) -> None:
    h, w = self.settings.roi_size
    if h > hw[0] or w > hw[1]:
      raise InputError(f'data.roi.size {h}x{w} does not fit in the {hw[0]}x{hw[1]} slices')

  def _train_source(self) -> TargetSource:
    c = self.config
    source = sources.source_from_config(c.data, 'train', with_label=True)
    indices, centres, hw = lesion_slices(source, self.settings.lesion_labels)
    if not len(indices):
      raise InputError(f'no training slice has lesion pixels (data.roi.lesion_labels='
                       f'{self.settings.lesion_labels or "any label > 0"})')
    channels = int(np.shape(source[int(indices[0])]['image'])[-1])
    if channels != c.model.in_channels:
      raise InputError(f'the training slices have {channels} channel(s) but model.in_channels '
                       f'is {c.model.in_channels}: set --config.model.in_channels={channels} or '
                       'pick channels with --config.data.modalities')
    self._check_roi(hw)
    self.train_hw, self.train_total = hw, len(source)
    return TargetSource(source, indices, roi_detection.normalised_targets(centres, hw))

  def _stages(self) -> list:
    stages = [s.copy_and_resolve_references() for s in self.config.train.stages]
    if self.settings.epochs:
      if len(stages) != 1:
        raise InputError(f'detector.epochs={self.settings.epochs} sets the step count of one '
                         f'stage; train.stages has {len(stages)}')
      per_epoch = math.ceil(len(self.train_source) / self.config.data.global_batch_size)
      stages[0].steps = self.settings.epochs * per_epoch
    return stages

  def _total_steps(self) -> int:
    total = sum(int(s.steps) for s in self.stages)
    max_steps = self.config.train.max_steps
    return min(total, int(max_steps)) if max_steps is not None and max_steps >= 0 else total

  def _make_train_iterator(self):
    c = self.config.data
    elements = pipeline.shuffled_stream(self.train_source, self.config.seed)
    batches = pipeline.local_batches(elements, global_batch_size=c.global_batch_size,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count())
    return pipeline.train_iterator(batches, num_threads=c.num_threads,
                                   prefetch_buffer_size=c.prefetch_buffer_size,
                                   num_workers=c.num_workers)

  # ----- state ------------------------------------------------------------------------------
  def optimizer(self, player: str, stage_idx: int):
    del player
    return step_lib.make_optimizer(self.config.train, self.stages[stage_idx])

  def _init_state(self):
    c = self.config
    rng_init, rng_train = jax.random.split(jax.random.key(c.seed))
    s = self.model.input_size
    dummy = jnp.zeros((1, s, s, c.model.in_channels), jnp.float32)

    # The keys are arguments, not constants of the program: XLA would constant-fold the
    # initialisers' random bits at compile time (seconds on CPU).
    def init(rng_init, rng_train):
      params, model_state = step_lib.split_variables(self.model.init(rng_init, dummy))
      player = state_lib.init_player(params, self.optimizer(G, 0), ema=c.train.ema_decay > 0,
                                     model_state=model_state)
      return state_lib.init_state({G: player}, rng_train)

    shardings = sharding.tree_shardings(jax.eval_shape(init, rng_init, rng_train), self.mesh,
                                        c.mesh.fsdp_min_size)
    return jax.jit(init, out_shardings=shardings)(rng_init, rng_train)

  # A stage starts with fresh optimiser states; the counters read the state: SRTrainer's own
  # methods, which only use `optimizer`, `state`, `state_shardings` and `mesh`.
  start_stage = sr.SRTrainer.start_stage
  counter = sr.SRTrainer.counter

  # ----- steps ------------------------------------------------------------------------------
  def objective(self):
    """L2 between predicted and target normalised centres (thesis eq. 3.8), BN in train mode."""
    forward = step_lib.model_forward(self.model)

    def objective(params, model_state, batch, rng, frozen=None):
      del frozen
      pred, new_model_state = forward(params, model_state, batch['image'], rng)
      loss = jnp.mean(jnp.square(pred.astype(jnp.float32) - batch['target']))
      return loss, ({}, new_model_state)
    return objective

  def train_step(self, stage_idx: int, step: int):
    """The jitted step of a stage, compiled once and reused."""
    del step
    if stage_idx not in self._steps:
      raw = step_lib.make_train_step(
          self.objective(), self.optimizer(G, stage_idx),
          loss_threshold=self.config.train.loss_threshold,
          ema_decay=self.config.train.ema_decay, name=f'detector_stage{stage_idx}')
      batch_sh = sharding.batch_sharding(self.mesh)
      self._steps[stage_idx] = step_lib.jit_train_step(
          raw, self.state_shardings, {'image': batch_sh, 'target': batch_sh},
          sharding.replicated(self.mesh),
          policy=step_lib.policy_from_config(self.config.train),
          compiler_options=cpu_compile.compiler_options(self.model))
    return self._steps[stage_idx]

  def progress_fields(self, metrics: dict) -> dict:
    return dict(loss=float(metrics['loss']), lr=float(metrics['learning_rate']))

  def describe(self) -> str:
    n_params = models.count_params(self.state['players'][G]['params'])
    h, w = self.settings.roi_size
    return (f'model {self.config.model.name}: {n_params:,} parameters; '
            f'{len(self.train_source)} of {self.train_total} training slices have lesion pixels '
            f'({self.train_hw[0]}x{self.train_hw[1]}); {self.total_steps} steps; ROI {h}x{w}; '
            f'validation on {len(self.val.indices)} slices at {scale_label(self.settings.eval_scale)}; '
            f'mesh {dict(self.mesh.shape)}')

  # ----- evaluation -------------------------------------------------------------------------
  def eval_params(self):
    g = self.state['players'][G]
    params = g['ema'] if self.config.eval.use_ema and 'ema' in g else g['params']
    return {'params': sharding.host_local(params, self.mesh),
            **sharding.host_local(g['model_state'], self.mesh)}

  def detect(self, data: EvalData, inputs: np.ndarray, variables=None) -> dict[str, np.ndarray]:
    """`roi_detection.detection_report` of the detector on `inputs` (the slices of `data`, at
    any scale), its predictions mapped to the HR slices; adds 'pred' (n, 2) (row, col)."""
    variables = self.eval_params() if variables is None else variables
    pred_xy = self.predict(variables, inputs)
    pred_rc = roi_detection.centres_from_normalised(pred_xy, data.images.shape[1:3])
    report = roi_detection.detection_report(pred_rc, data.centres, data.masks,
                                            self.settings.roi_size)
    report['pred'] = pred_rc
    return report

  def validate(self) -> dict[str, float]:
    s = roi_detection.summary(self.detect(self.val, self.val_inputs))
    return {'val_perfect': s['perfect_fraction'], 'val_acceptable': s['acceptable_fraction'],
            'val_bad': s['bad_fraction'], 'val_centre_error': s['centre_error'],
            'val_accuracy': s['perfect_fraction']}

  def validation_line(self, val: dict) -> str:
    return (f"ROI detection at {scale_label(self.settings.eval_scale)}: perfect "
            f"{100 * val['val_perfect']:.1f}%, acceptable {100 * val['val_acceptable']:.1f}%, "
            f"bad {100 * val['val_bad']:.1f}%, centre error {val['val_centre_error']:.2f} px")

  def final_evaluation(self, writer, step: int) -> dict[str, Any]:
    test = eval_data(self.config.data, 'test', self.settings.lesion_labels)
    self._check_roi(test.images.shape[1:3])
    variables = self.eval_params()
    rows, per_scale = {}, {}
    for scale in self.settings.test_scales:
      report = self.detect(test, test.inputs(scale), variables)
      summary = roi_detection.summary(report)
      rows[scale_label(scale)] = summary
      per_scale[f'x{scale:g}'] = {
          'scale': scale, 'summary': summary,
          'slices': [{'id': test.ids[n], 'index': int(test.indices[n]),
                      'coverage': float(report['coverage'][n]), 'level': str(report['level'][n]),
                      'pred_centre': [float(v) for v in report['pred'][n]],
                      'true_centre': [float(v) for v in test.centres[n]],
                      'box': [int(v) for v in report['box'][n]],
                      'centre_error': float(report['error'][n])}
                     for n in range(len(test.indices))]}
      writer.write_scalars(step, {f'test_x{scale:g}_{k}': summary[f'{k}_fraction']
                                  for k in roi_detection.LEVELS}
                           | {f'test_x{scale:g}_centre_error': summary['centre_error']})
    # A reference row: the same boxes around the label centres (what the ROI size allows).
    oracle = roi_detection.detection_report(test.centres, test.centres, test.masks,
                                            self.settings.roi_size)
    rows[ORACLE_ROW] = roi_detection.summary(oracle)
    table = roi_detection.markdown_table(rows)
    h, w = self.settings.roi_size
    labels = self.settings.lesion_labels or 'every label > 0'
    heading = (f'## ROI detection accuracy on the test split (thesis Table 3.2)\n\n'
               f'{len(test.indices)} test slices with lesion pixels (lesion labels: {labels}); '
               f'ROI {h}x{w} around the predicted centre; the detector sees the bicubic LR '
               f'slice at each scale; perfect = 100 % of the lesion inside the ROI, acceptable '
               f'> 95 %, bad <= 95 %; centre error in HR pixels. The last row puts the ROI '
               f'around the label centres (what the ROI size alone allows).\n\n')
    if jax.process_index() == 0:
      text_files.write_text_atomic(self.workdir / 'results.md', heading + table + '\n',
                                   what='results')
      payload = {'step': int(step), 'roi_size': [h, w],
                 'lesion_labels': list(self.settings.lesion_labels),
                 'target_convention': roi_detection.TARGET_CONVENTION, 'scales': per_scale}
      text_files.write_text_atomic(self.workdir / 'results.json',
                                   json.dumps(payload, indent=1) + '\n', what='results')
    print(f'\nTest slices with lesions ({len(test.indices)}), ROI {h}x{w}:\n{table}', flush=True)
    return {k: dict(v) for k, v in rows.items()}

  # ----- export -----------------------------------------------------------------------------
  def export_extra(self) -> dict:
    return {'skipped_steps': self.counter('skipped'),
            'lesion_labels': list(self.settings.lesion_labels),
            'roi_size': list(self.settings.roi_size),
            'target_convention': roi_detection.TARGET_CONVENTION,
            'eval_scale': self.settings.eval_scale,
            'train_hw': list(self.train_hw),
            'modalities': list(self.config.data.get('modalities', ()) or ())}

  # The SR trainer's export (eval params, config, `export_extra`) of the detector.
  export_variables = sr.SRTrainer.export_variables
  export = sr.SRTrainer.export


Trainer = DetectorTrainer


def load_detector(model_dir: str) -> tuple[Any, Any, dict]:
  """(module, variables, export config) of an exported lesion detector (InputError otherwise)."""
  module, variables, cfg = export.load_export(model_dir)
  if cfg['model'] != 'lesion_detector':
    raise InputError(f"{model_dir} holds model {cfg['model']!r}, not a 'lesion_detector'")
  return module, variables, cfg
