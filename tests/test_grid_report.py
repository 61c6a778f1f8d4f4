"""End to end: a 2 x 2 grid trained with `experiments.sweep --launcher=local --parallel=2`, then
`experiments.report` builds the thesis' Table 4.3 from it with our numbers, the thesis' numbers
and the difference (issue 12's acceptance).

Four tiny MIASSR runs (`tests/tiny_miassr_config.py`'s `sweep`: widths 4 and 8 by depths 1 and 2,
two warm-up steps each, 32 x 32 sample slices), two at a time.

  .venv/bin/python -m pytest -q tests/test_grid_report.py
"""

import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "tests/tiny_miassr_config.py"


def test_local_grid_then_thesis_table(tmp_path):
  grid = tmp_path / "grid"
  r = subprocess.run([sys.executable, "-m", "experiments.sweep", f"--config={CONFIG}",
                      f"--workdir={grid}", "--launcher=local", "--parallel=2"],
                     cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  points = sorted(p.name for p in grid.iterdir() if p.is_dir())
  assert len(points) == 4, points
  for point in points:
    assert (grid / point / "results.json").is_file() and (grid / point / "export").is_dir()
  assert all(json.loads((grid / p / "export" / "config.json").read_text())["model"] == "miassr"
             for p in points)

  # A second launch finds every point finished and trains nothing.
  again = subprocess.run([sys.executable, "-m", "experiments.sweep", f"--config={CONFIG}",
                          f"--workdir={grid}", "--launcher=local", "--parallel=2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert again.returncode == 0, again.stderr
  assert again.stdout.count("skipped") >= 4, again.stdout

  out = tmp_path / "table_4_3.md"
  rep = subprocess.run([sys.executable, "-m", "experiments.report", f"--runs={grid}",
                        "--table=4.3", f"--out={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert rep.returncode == 0, rep.stderr
  table = out.read_text()
  thesis = json.loads((ROOT / "experiments" / "thesis_numbers.json").read_text())
  thesis_43 = thesis["tables"]["4.3"]["rows"] if "tables" in thesis else thesis["4.3"]["rows"]
  for w in (4, 8):
    row = next(line for line in table.splitlines() if line.startswith(f"| w={w} "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # Our PSNR, the thesis' PSNR and the difference, all present and consistent.
    ours = [float(c.split()[0]) for c in cells[1:] if re.match(r"^\d+\.\d+", c)]
    assert f"{thesis_43[f'w={w}']['psnr']:.2f}" in row, row
    assert ours, row
    assert any(c.startswith(("+", "-", "−")) and re.search(r"\d", c) for c in cells[1:]), row
  # w = 16 ... 128 had no run: listed as missing, not invented.
  assert re.search(r"[Mm]issing", table) and "w=16" in table.split("issing", 1)[1]
