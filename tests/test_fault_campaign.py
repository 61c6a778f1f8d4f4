"""The fault campaign's helpers (experiments/fault_campaign.py), without training: damage,
cutting a run back to a checkpoint, the files that must not change, stderr counting, the table.

  .venv/bin/python -m pytest -q tests/test_fault_campaign.py

The campaign itself (real runs, kills, a tmpfs) is run by hand: docs/RELIABILITY.md.
"""

import random

import pytest

from experiments import fault_campaign as fc


def _checkpoint(folder):
  """A fake checkpoint folder: a few files in orbax's item folders."""
  files = {"sha256.json": b"{}", "state/_METADATA": b"m" * 300, "state/d/abc": bytes(range(256)),
           "data/process_0-of-1.json": b'{"next": 3}', "meta/metadata": b"{}" * 20,
           "metrics/metrics": b"{}", "commit_success.txt": b"ok"}
  for name, data in files.items():
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
  return files


def test_flip_and_truncate(tmp_path):
  path = tmp_path / "f"
  path.write_bytes(bytes(100))
  what = fc.flip_bytes(path, random.Random(0), count=3)
  data = path.read_bytes()
  assert len(data) == 100 and 1 <= sum(b != 0 for b in data) <= 3 and "3 byte(s)" in what
  what = fc.truncate_file(path, random.Random(0))
  assert path.stat().st_size < 100 and what.startswith("truncated 100 -> ")
  path.write_bytes(b"")
  with pytest.raises(ValueError, match="empty"):
    fc.flip_bytes(path, random.Random(0))


@pytest.mark.parametrize("kind", fc.DAMAGE_KINDS)
def test_damage_changes_the_checkpoint_reproducibly(tmp_path, kind):
  results = []
  for copy in ("a", "b"):
    folder = tmp_path / copy
    _checkpoint(folder)
    before = fc.digests(folder)
    what = fc.damage(folder, kind, random.Random(f"7:{kind}"))
    after = fc.digests(folder)
    assert after != before, what
    results.append((what, after))
  assert results[0] == results[1]  # the same seed, the same damage
  with pytest.raises(ValueError, match="unknown damage"):
    fc.damage(tmp_path / "a", "melt", random.Random(0))


def test_delete_sometimes_takes_a_whole_item(tmp_path):
  seen = set()
  for seed in range(40):
    folder = tmp_path / str(seed)
    _checkpoint(folder)
    seen.add(fc.damage(folder, "delete", random.Random(seed)).endswith("/"))
  assert seen == {True, False}


def test_cut_back_and_good_files(tmp_path):
  ref = tmp_path / "ref"
  for k in (1, 2, 3):
    _checkpoint(ref / "checkpoints" / str(k))
  (ref / "export").mkdir()
  (ref / "export" / "params.npz").write_bytes(b"p")
  for name in ("config.json", "metrics.jsonl", "results.md", "results.json", "panel_000.png"):
    (ref / name).write_text(name)
  run = tmp_path / "run"
  fc.cut_back(ref, run, 2)
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1", "2"]
  assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl"]
  fc.cut_back(ref, tmp_path / "fresh", 0)
  assert not list((tmp_path / "fresh").iterdir())
  assert fc.footprint(run) == len(fc.files_under(run)) * fc.PAGE  # every file < one page
  good = [f for f in fc.digests(run) if fc._is_good(f, 2)]  # pylint: disable=protected-access
  assert "config.json" in good and "metrics.jsonl" not in good
  assert all(not f.startswith("checkpoints/2/") for f in good)
  assert any(f.startswith("checkpoints/1/") for f in good)


def test_stderr_lines_and_table():
  err = ("step 1/6  loss 0.4  lr 0.001\n\nstep 2/6  loss 0.3  lr 0.001  4 steps/s  ETA 1s\n"
         "warning: checkpoint 6 in x is damaged (...)\nerror: no usable checkpoint\n")
  assert fc.stderr_lines(err) == ["warning: checkpoint 6 in x is damaged (...)",
                                  "error: no usable checkpoint"]
  ok = fc.Run(rc=2, killed=False, lines=["error: x"], seconds=1.0)
  assert ok.one_line_error and not ok.finished
  assert not fc.Run(rc=2, killed=False, lines=["warning: y", "error: x"], seconds=1).one_line_error
  trials = [dict(case="kill", survived=True, finished=True, bitwise=True, stderr_lines=0),
            dict(case="kill", survived=True, finished=True, bitwise=False, stderr_lines=1),
            dict(case="damage_all", survived=True, finished=False, bitwise=None, stderr_lines=1)]
  assert fc.table(trials, fc.CASES).splitlines()[2:] == [
      "| kill | 2 | 2/2 | 2/2 | 1/2 | 1 |", "| damage_all | 1 | 1/1 | 0/1 | n/a | 1 |"]


def test_config_and_arguments(capsys):
  c = fc.get_config("steps=4")
  assert c.model.name == "edsr_lite" and c.model.kwargs.n_feats == 8
  assert c.train.checkpoint_every == 1 and c.train.keep_checkpoints == 5
  assert sum(s.steps for s in c.train.stages) == 4
  assert fc.main(["--cases=kill,melt"]) == 2
  assert capsys.readouterr().err.startswith("error: unknown case(s) ['melt']")


def test_trial_choices_and_the_source_copy(tmp_path):
  draws = {fc.trial_rng(0, "kill_in_save", t).randint(1, 6) for t in range(12)}
  assert len(draws) > 2  # similar seeds, different choices
  assert fc.trial_rng(3, "kill", 1).random() == fc.trial_rng(3, "kill", 1).random()
  root = fc.snapshot(tmp_path)
  assert fc.source_digest(root) == (root / "DONE").read_text().strip()  # a faithful copy
  assert (root / "medsr_jax" / "main.py").is_file()
  assert (root / "experiments" / "fault_campaign.py").is_file()
  assert not list(root.rglob("__pycache__"))
  assert fc.snapshot(tmp_path) == root  # reused
