"""experiments/sweep.py expands a config's grid into checked `main` commands and launches them
(printed, here in parallel, or as a Slurm array)."""

import os
import pathlib
import signal
import stat
import subprocess
import sys
import time

import pytest

from experiments import sweep


def test_rdst_grid_branches_every_finetuning_loss_from_one_l1_run(tmp_path):
  cmds = sweep.commands("configs/rdst.py", str(tmp_path))
  names = [c[4] for c in cmds]
  assert len(names) == len(set(names))  # one workdir per point
  assert cmds[0][3] == "--config=configs/rdst.py:stage=l1"
  finetune = [c for c in cmds if "stage=finetune,loss=" in c[3]]
  assert sorted(c[3].rsplit("=", 1)[1] for c in finetune) == sorted(
      ["e1", "e2", "e3", "e4", "e5", "esum", "d", "hrl", "l1", "vgg", "wgan_gp"])
  assert all(c[-1] == f"--config.init_from={tmp_path}/stage=l1" for c in finetune)
  extra = sweep.commands("configs/rdst.py", str(tmp_path))[0] + ["--config.train.frozen.unet=U"]
  assert extra[-1] == "--config.train.frozen.unet=U"


def test_flags_after_double_dash_go_to_every_point(tmp_path, capsys):
  sweep.main(["--config=configs/rdst.py", f"--workdir={tmp_path}", "--",
              "--config.train.frozen.unet=runs/unet/export"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) > 10
  assert all(l.endswith("--config.train.frozen.unet=runs/unet/export") for l in lines)


def test_grid_typo_is_an_error(tmp_path):
  config = tmp_path / "bad.py"
  config.write_text(
      "from medsr_jax import config_lib\n"
      "def get_config(arg=None):\n  return config_lib.base_sr_config()\n"
      "def sweep(add):\n  add(**{'train.nonexistent': 1})\n")
  with pytest.raises(ValueError, match="train.nonexistent"):
    sweep.grid_points(str(config))


def test_baseline_grid_has_one_point_per_generator(tmp_path):
  cmds = sweep.commands("configs/baseline.py", str(tmp_path))
  names = [c[3].split("model=")[1] for c in cmds]
  assert "--config=configs/baseline.py:model=edsr_lite" in [c[3] for c in cmds]
  assert len(names) == len(set(names)) == 17 and {"rcan", "swinir_psd", "rdst_e"} <= set(names)
  assert all(c[4].endswith(f"model={n}") for c, n in zip(cmds, names))
  with pytest.raises(ValueError, match="own trainers"):
    sweep._load("configs/baseline.py").get_config("model=miassr")


# ----- launchers (issue 12): a fake `python` stands in for training ---------------------------

GRID_CONFIG = """
from medsr_jax import config_lib
def get_config(arg=None):
  config_lib.parse_arg(arg, w=64, b=16, stage='full')
  return config_lib.base_sr_config()
def sweep(add):
{body}
"""
GRID_2X2 = "  for w in (8, 16):\n    for b in (2, 4):\n      add(config_arg=f'w={w},b={b}')"
GRID_BRANCHES = ("  add(config_arg='stage=warmup')\n"
                 "  add(config_arg='stage=full,w=8', init_from='{grid}/stage=warmup')\n"
                 "  add(config_arg='stage=full,w=16', init_from='{grid}/stage=warmup')\n"
                 "  add(config_arg='w=32')")

# `$FAKE -m medsr_jax.main ... --workdir=W ...`: records its arguments and start/end times in W,
# sleeps $FAKE_SLEEP, fails (exit 7) when W contains $FAKE_FAIL, else leaves a finished run.
FAKE = r"""#!/bin/bash
for a in "$@"; do case "$a" in --workdir=*) wd="${a#--workdir=}";; esac; done
printf '%s\n' "$@" > "$wd/args"
echo $$ >> "$wd/pids"
date +%s.%N >> "$wd/start"
sleep "${FAKE_SLEEP:-0}"
date +%s.%N >> "$wd/end"
if [[ -n "${FAKE_FAIL:-}" && "$wd" == *"$FAKE_FAIL"* ]]; then echo "boom in $wd" >&2; exit 7; fi
mkdir -p "$wd/export" && echo '{}' > "$wd/export/config.json" && echo '{}' > "$wd/results.json"
echo "trained $wd"
"""


def _executable(path, text):
  path.write_text(text)
  path.chmod(0o755)
  return str(path)


@pytest.fixture
def grid(tmp_path, monkeypatch):
  """(config path for a grid body, the fake python, the grid's workdir)."""
  def config(body):
    path = tmp_path / f"grid{abs(hash(body))}.py"
    path.write_text(GRID_CONFIG.format(body=body))
    return str(path)
  monkeypatch.delenv("FAKE_FAIL", raising=False)
  monkeypatch.delenv("FAKE_SLEEP", raising=False)
  return config, _executable(tmp_path / "fake_python", FAKE), tmp_path / "runs" / "grid"


def _finish(workdir):
  (workdir / "export").mkdir(parents=True)
  (workdir / "export" / "config.json").write_text("{}")
  (workdir / "results.json").write_text("{}")


def _times(workdir, what):
  path = workdir / what
  return [float(t) for t in path.read_text().split()] if path.exists() else []


def test_point_names_dependencies_and_their_errors(grid, tmp_path):
  config, _, workdir = grid
  points = sweep.plan(config(GRID_BRANCHES), str(workdir))
  assert [p.name for p in points] == ["stage=warmup", "stage=full,w=8", "stage=full,w=16", "w=32"]
  assert [p.depends for p in points] == [(), (0,), (0,), ()]
  assert sweep.levels(points) == [0, 1, 1, 0]
  assert points[1].workdir == workdir / "stage=full,w=8"
  assert sweep.point_name({"config_arg": "w=64,b=16", "init_from": "{grid}/x"}) == "w=64,b=16"
  assert sweep.point_name({"model.kwargs.num_blocks": 4, "a": "x/y z"}) == (
      "a=xyz,model.kwargs.num_blocks=4")
  for body, error in [
      ("  add(config_arg='w=8')\n  add(config_arg='w=8')", "same name"),
      ("  add(config_arg='w=8', init_from='{grid}/w=9')", "not a point of the grid"),
      ("  add(config_arg='w=8', init_from='{grid}/w=16')\n"
       "  add(config_arg='w=16', init_from='{grid}/w=8')", "cycle: w=8 -> w=16 -> w=8"),
      ("  add(config_arg='w=8', init_from='{grid}/w=8')", "depends on itself"),
      ("  add(init_from='{grid}/w=8')", "not a directory name")]:
    with pytest.raises(ValueError, match=error):
      sweep.plan(config(body), str(workdir))


def test_flags_are_checked(grid, monkeypatch, capsys):
  config, fake, workdir = grid
  base = [f"--config={config(GRID_2X2)}", f"--workdir={workdir}"]
  for bad in (["--paralel=2"], ["--run", "--launcher=slurm"], ["--parallel=2"],
              ["--launcher=local", "--parallel=0"], ["--slurm_args=--time=1"]):
    with pytest.raises(SystemExit):
      sweep.main(base + bad)
  capsys.readouterr()
  sweep.main(base + ["--python=py -X", "--config.train.log_every=3"])  # old pass-through
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4 and all(l.startswith("py -X -m medsr_jax.main") for l in lines)
  assert all(l.endswith("--config.train.log_every=3") for l in lines)
  seen = []
  monkeypatch.setattr(sweep, "run_local", lambda plan, parallel: seen.append(parallel) or 0)
  sweep.main(base + ["--run"])
  assert seen == [1]


def test_local_launcher_runs_two_points_at_once_and_skips_finished_ones(grid, monkeypatch,
                                                                          capsys):
  config, fake, workdir = grid
  monkeypatch.setenv("FAKE_SLEEP", "0.8")
  _finish(workdir / "w=16,b=4")
  sweep.main([f"--config={config(GRID_2X2)}", f"--workdir={workdir}", "--launcher=local",
              "--parallel=2", f"--python={fake}"])
  out = capsys.readouterr().out
  ran = ["w=8,b=2", "w=8,b=4", "w=16,b=2"]
  spans = [(_times(workdir / n, "start")[0], _times(workdir / n, "end")[0]) for n in ran]
  at_start = [sum(s <= t < e for s, e in spans) for t, _ in spans]
  assert max(at_start) == 2  # two at once, never three
  assert not (workdir / "w=16,b=4" / "args").exists()  # finished: not run again
  log = (workdir / "w=8,b=2" / "sweep.log").read_text()
  assert log.startswith("# sweep ") and f"trained {workdir}/w=8,b=2" in log
  assert out.count("] start ") == 3 and out.count("] ok ") == 3
  table = out[out.index("point "):].splitlines()
  assert table[0].split() == ["point", "status", "seconds"]
  assert [r.split()[:2] for r in table[1:]] == [
      ["w=8,b=2", "ok"], ["w=8,b=4", "ok"], ["w=16,b=2", "ok"], ["w=16,b=4", "skipped"]]
  assert table[4].split()[2] == "-" and float(table[1].split()[2]) >= 0.8


def test_local_launcher_waits_for_dependencies_and_blocks_failed_ones(grid, monkeypatch, capsys):
  config, fake, workdir = grid
  args = [f"--config={config(GRID_BRANCHES)}", f"--workdir={workdir}", "--launcher=local",
          "--parallel=3", f"--python={fake}"]
  monkeypatch.setenv("FAKE_FAIL", "stage=warmup")
  with pytest.raises(SystemExit) as exit_:
    sweep.main(args)
  assert exit_.value.code == 1
  out = capsys.readouterr().out
  assert "FAILED stage=warmup: exit 7" in out and "boom" in (
      workdir / "stage=warmup" / "sweep.log").read_text()
  rows = {r.split()[0]: r.split()[1] for r in out[out.index("point "):].splitlines()[1:]}
  assert rows == {"stage=warmup": "failed", "stage=full,w=8": "blocked",
                  "stage=full,w=16": "blocked", "w=32": "ok"}
  assert not (workdir / "stage=full,w=8").exists()
  # fixed: the rerun trains the warm-up, then its branches; w=32 is finished
  monkeypatch.delenv("FAKE_FAIL")
  monkeypatch.setenv("FAKE_SLEEP", "0.3")
  sweep.main(args)
  warmup_end = _times(workdir / "stage=warmup", "end")[-1]
  for branch in ("stage=full,w=8", "stage=full,w=16"):
    assert _times(workdir / branch, "start")[0] >= warmup_end
    assert f"--config.init_from={workdir}/stage=warmup" in (
        workdir / branch / "args").read_text().splitlines()
  assert len(_times(workdir / "w=32", "start")) == 1
  assert "skipped w=32" in capsys.readouterr().out


def _alive(pid):
  try:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def test_sigterm_stops_the_running_points(grid):
  config, fake, workdir = grid
  env = dict(os.environ, FAKE_SLEEP="60")
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.sweep", f"--config={config(GRID_2X2)}",
       f"--workdir={workdir}", "--launcher=local", "--parallel=2", f"--python={fake}"],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  pid_files = [workdir / "w=8,b=2" / "pids", workdir / "w=8,b=4" / "pids"]
  deadline = time.monotonic() + 20
  while not all(f.exists() and f.read_text().strip() for f in pid_files):
    assert time.monotonic() < deadline and proc.poll() is None
    time.sleep(0.05)
  pids = [int(f.read_text()) for f in pid_files]
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=20)
  assert proc.returncode == 143, out
  assert "interrupted: stopping 2 running point(s)" in out
  assert not any(_alive(p) for p in pids)
  rows = {r.split()[0]: r.split()[1] for r in out[out.index("point "):].splitlines()[1:]}
  assert rows == {"w=8,b=2": "killed", "w=8,b=4": "killed", "w=16,b=2": "not",
                  "w=16,b=4": "not"}  # 'not run'


def test_slurm_array_script(grid, tmp_path, monkeypatch, capsys):
  config, fake, workdir = grid
  script = tmp_path / "jobs" / "grid.sbatch"
  odd = "--config.name=it's a \"b\" $HOME"
  sweep.main([f"--config={config(GRID_BRANCHES)}", f"--workdir={workdir}", "--launcher=slurm",
              "--parallel=2", f"--script={script}", "--slurm_args=--partition=gpu -t 01:00:00",
              "--slurm_args=--gres=gpu:1", f"--python={fake}", "--", odd])
  submit = capsys.readouterr().out.strip().splitlines()[-1]
  text = script.read_text()
  assert stat.S_IMODE(script.stat().st_mode) == 0o755
  assert not [p for p in script.parent.iterdir() if p != script]  # no temporary left
  sbatch = [l for l in text.splitlines() if l.startswith("#SBATCH ")]
  assert sbatch == ["#SBATCH --job-name=sweep-grid", "#SBATCH --array=0-3%2",
                    f"#SBATCH --output={workdir}/slurm-%A_%a.out", "#SBATCH --partition=gpu",
                    "#SBATCH -t 01:00:00", "#SBATCH --gres=gpu:1"]
  assert text.startswith("#!/bin/bash\n")
  assert [l.split(")")[0].strip() for l in text.splitlines() if ")  # level" in l] == [
      "0", "1", "2", "3"]
  assert text.count("    cmd=(") == 4
  points = sweep.plan(config(GRID_BRANCHES), str(workdir), [odd], [fake])

  def task(i, **env):
    return subprocess.run(["bash", str(script)], env=dict(os.environ, SLURM_ARRAY_TASK_ID=str(i),
                                                          **env),
                          capture_output=True, text=True, cwd="/")

  waiting = task(1)  # its warm-up has not finished
  assert waiting.returncode == 3 and "not started" in waiting.stderr
  assert not (workdir / "stage=full,w=8" / "args").exists()
  first = task(0)
  assert first.returncode == 0, first.stderr
  assert (workdir / "stage=warmup" / "args").read_text().splitlines() == points[0].command[1:]
  assert "trained" in (workdir / "stage=warmup" / "sweep.log").read_text()
  again = task(0)
  assert again.returncode == 0 and "skipped" in again.stdout
  assert len(_times(workdir / "stage=warmup", "start")) == 1
  assert task(1).returncode == 0 and sweep.finished(workdir / "stage=full,w=8")
  assert task(3, FAKE_FAIL="w=32").returncode == 7  # the training's exit code, through tee
  assert task(4).returncode == 2

  # The printed command: level 1 (indices 1-2) after array task 0 of level 0 (indices 0, 3).
  bin_ = tmp_path / "bin"
  bin_.mkdir()
  _executable(bin_ / "sbatch", '#!/bin/bash\nn=$(cat "$0.n" 2>/dev/null || echo 100)\n'
              'echo $((n + 1)) > "$0.n"\necho "$*" >> "$0.calls"\necho "$n;cluster"\n')
  done = subprocess.run(["bash", "-c", submit], env=dict(os.environ, PATH=f"{bin_}:"
                                                         + os.environ["PATH"]),
                        capture_output=True, text=True)
  assert done.returncode == 0 and done.stdout.strip() == "submitted jobs 100 101"
  assert (bin_ / "sbatch.calls").read_text().splitlines() == [
      f"--parsable --array=0,3%2 {script}",
      f"--parsable --array=1-2%2 --dependency=afterany:100_0 {script}"]
  assert "#   " + submit in text
  # without dependencies, plain sbatch
  sweep.main([f"--config={config(GRID_2X2)}", f"--workdir={workdir}", "--launcher=slurm"])
  out = capsys.readouterr().out.strip().splitlines()
  assert out[-1] == f"sbatch {workdir}/sweep.sbatch"
  assert "#SBATCH --array=0-3\n" in (workdir / "sweep.sbatch").read_text()
