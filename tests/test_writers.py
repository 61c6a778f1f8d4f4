"""Tests for medsr_jax.logging.writers: TensorBoard event files (read back by TensorBoard), JSONL."""

import io
import json
import os
import struct
import subprocess
import sys

import google_crc32c
import numpy as np
from PIL import Image
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2

from medsr_jax.logging import writers


def _event_files(logdir):
  return sorted(os.path.join(logdir, n) for n in os.listdir(logdir) if "tfevents" in n)


def _raw_records_checked(path):
  """Splits a TFRecord file by hand, asserting both masked CRCs (independent of medsr_jax.io)."""
  def mask(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
  raw = open(path, "rb").read()
  pos, out = 0, []
  while pos < len(raw):
    (n,) = struct.unpack_from("<Q", raw, pos)
    assert struct.unpack_from("<I", raw, pos + 8)[0] == mask(google_crc32c.value(raw[pos:pos + 8]))
    data = raw[pos + 12:pos + 12 + n]
    assert struct.unpack_from("<I", raw, pos + 12 + n)[0] == mask(google_crc32c.value(data))
    out.append(data)
    pos += 16 + n
  assert pos == len(raw)
  return out


def test_tensorboard_scalars_and_images_read_back(tmp_path):
  logdir = tmp_path / "tb"
  w = writers.TensorBoardWriter(logdir)
  w.write_scalars(10, {"train/loss": 0.5, "train/lr": np.float32(1e-3)})
  w.write_scalars(20, {"train/loss": 0.25})
  grey = np.arange(7 * 9, dtype=np.uint8).reshape(7, 9)
  rgb = np.full((5, 6, 3), 0.5, np.float32)
  w.write_images(20, {"val/panel": grey, "val/rgb": rgb})
  w.close()

  (path,) = _event_files(logdir)
  assert os.path.basename(path).startswith("events.out.tfevents.")
  acc = event_accumulator.EventAccumulator(str(logdir))
  acc.Reload()
  loss = acc.Scalars("train/loss")
  assert [e.step for e in loss] == [10, 20]
  assert [e.value for e in loss] == [0.5, 0.25]
  assert acc.Scalars("train/lr")[0].value == pytest.approx(1e-3)
  (img,) = acc.Images("val/panel")
  assert (img.step, img.width, img.height) == (20, 9, 7)
  decoded = np.asarray(Image.open(io.BytesIO(img.encoded_image_string)))
  np.testing.assert_array_equal(decoded, grey)
  (img,) = acc.Images("val/rgb")
  assert (img.width, img.height) == (6, 5)
  assert np.asarray(Image.open(io.BytesIO(img.encoded_image_string))).shape == (5, 6, 3)

  # The framing CRCs, checked by hand, and the raw (unmigrated) protos.
  events = [event_pb2.Event.FromString(r) for r in _raw_records_checked(path)]
  assert events[0].file_version == "brain.Event:2"
  assert [e.step for e in events[1:]] == [10, 20, 20]
  assert {v.tag: v.simple_value for v in events[1].summary.value}["train/loss"] == 0.5
  image = events[3].summary.value[0].image
  assert (image.height, image.width, image.colorspace) == (7, 9, 1)
  assert events[3].summary.value[1].image.colorspace == 3


def test_tensorboard_two_writers_get_two_files(tmp_path):
  a = writers.TensorBoardWriter(tmp_path)
  b = writers.TensorBoardWriter(tmp_path)
  a.close()
  b.close()
  assert len(_event_files(tmp_path)) == 2


def test_tensorboard_rejects_bad_values(tmp_path):
  w = writers.TensorBoardWriter(tmp_path)
  with pytest.raises(ValueError, match="single number"):
    w.write_scalars(1, {"x": np.zeros(3)})
  with pytest.raises(ValueError, match="HxW"):
    w.write_images(1, {"x": np.zeros((4, 4, 2), np.uint8)})
  w.close()


def test_jsonl_appends_across_instances(tmp_path):
  path = tmp_path / "sub" / "metrics.jsonl"
  w = writers.JsonlWriter(path)
  w.write_scalars(1, {"loss": 0.123456789123, "psnr": np.float32(30.5), "n": np.int64(7)})
  w.write_scalars(2, {"loss": float("nan"), "big": float("inf")})
  w.close()
  w = writers.JsonlWriter(path)  # a resumed run
  w.write_images(3, {"panel": np.zeros((2, 2), np.uint8)})  # ignored
  w.write_scalars(3, {"loss": 0.5})
  w.close()

  lines = path.read_text().splitlines()
  assert len(lines) == 3
  assert "NaN" not in lines[1] and "Infinity" not in lines[1]
  recs = writers.read_jsonl(path)
  assert [r["step"] for r in recs] == [1, 2, 3]
  assert recs[0]["loss"] == 0.1234568
  assert recs[0]["psnr"] == 30.5
  assert recs[0]["n"] == 7 and isinstance(recs[0]["n"], int)
  assert recs[1]["loss"] is None and recs[1]["big"] is None
  assert all(isinstance(r["time"], float) and r["time"] > 0 for r in recs)


def test_jsonl_recovers_from_cut_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "time": 1.0, "loss": 0.5}\n{"step": 2, "ti')
  w = writers.JsonlWriter(path)
  w.write_scalars(3, {"loss": 0.25})
  w.close()
  lines = path.read_text().splitlines()
  assert json.loads(lines[-1])["step"] == 3
  assert len(lines) == 3


def test_jsonl_reserved_names(tmp_path):
  w = writers.JsonlWriter(tmp_path / "m.jsonl")
  with pytest.raises(ValueError, match="reserved"):
    w.write_scalars(1, {"step": 5})
  w.close()


class _Recorder:
  def __init__(self):
    self.calls = []

  def write_scalars(self, step, scalars):
    self.calls.append(("scalars", step, dict(scalars)))

  def write_images(self, step, images):
    self.calls.append(("images", step, sorted(images)))

  def flush(self):
    self.calls.append(("flush",))

  def close(self):
    self.calls.append(("close",))


def test_multiwriter_fans_out():
  a, b = _Recorder(), _Recorder()
  with writers.MultiWriter([a, b]) as w:
    w.write_scalars(4, {"x": 1.0})
    w.write_images(4, {"p": np.zeros((2, 2))})
    w.flush()
  expected = [("scalars", 4, {"x": 1.0}), ("images", 4, ["p"]), ("flush",), ("close",)]
  assert a.calls == expected and b.calls == expected


def test_create_writers(tmp_path):
  w = writers.create_writers(tmp_path / "run")
  w.write_scalars(5, {"loss": 1.5})
  w.write_images(5, {"panel": np.zeros((3, 4), np.uint8)})
  w.close()
  assert writers.read_jsonl(tmp_path / "run" / "metrics.jsonl")[0]["loss"] == 1.5
  (path,) = _event_files(tmp_path / "run" / "tensorboard")
  assert len(_raw_records_checked(path)) == 3

  other = writers.create_writers(tmp_path / "other", is_main_process=False)
  other.write_scalars(5, {"loss": 1.5})
  other.write_images(5, {"panel": np.zeros((3, 4), np.uint8)})
  other.flush()
  other.close()
  assert not (tmp_path / "other").exists()


def test_no_tensorflow_imported(tmp_path):
  code = ("import sys, numpy as np\n"
          "from medsr_jax.logging import writers\n"
          f"w = writers.create_writers({str(tmp_path)!r})\n"
          "w.write_scalars(1, {'a': 1.0}); w.write_images(1, {'p': np.zeros((2, 2))}); w.close()\n"
          "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == 0, result.stderr
