"""Image panels for eyeballing super-resolution results, and PNG encoding/saving (Pillow).

`comparison_panel` lays single-channel images side by side, in the order given (typically LR,
bicubic, SR, HR), followed by an error map, like the dissertation's qualitative figures with error
maps (Figs. 3.7, 3.8, 3.15, 3.16). Every image is brought to the HR size (a smaller one, typically the
LR input, by nearest-neighbour so its pixels stay visible), clipped to [0, 1] and separated by 2-pixel
white bars; the error map is |SR - HR| times `error_scale`, clipped. The default gain x10 matches the
display range of Fig. 3.8 (differences of images in [-1, 1] shown over [-0.2, 0.2], i.e. 0.1 on the
[0, 1] scale used here is white). The result is a uint8 array for `save_png` or
`TensorBoardWriter.write_images`.

Usage:
  panel = comparison_panel({"LR": lr, "bicubic": bic, "SR": sr, "HR": hr})
  save_png(workdir / "samples" / "step_001000.png", panel)
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

SEPARATOR_VALUE = 255  # white bars between tiles


def to_uint8(image: np.ndarray) -> np.ndarray:
  """uint8 passes through; anything else is taken as [0, 1] floats, clipped and rounded (NaN -> 0)."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  image = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
  return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _as_png_array(image: np.ndarray) -> np.ndarray:
  image = to_uint8(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
    raise ValueError(f"PNG image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f"PNG image must not be empty, got shape {image.shape}")
  return np.ascontiguousarray(image)


def encode_png(image: np.ndarray, compress_level: int = 6) -> bytes:
  """PNG bytes of a uint8 (or [0, 1] float) HxW / HxWx1 / HxWx3 / HxWx4 image."""
  buf = io.BytesIO()
  Image.fromarray(_as_png_array(image)).save(buf, format="PNG", compress_level=compress_level)
  return buf.getvalue()


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
  """Writes `image` as a PNG atomically (temporary file in the same folder, then os.replace)."""
  path = os.fspath(path)
  data = encode_png(image)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _as_2d(name: str, image: np.ndarray) -> np.ndarray:
  image = np.asarray(image, dtype=np.float32)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim != 2 or image.size == 0:
    raise ValueError(f"panel image {name!r} must be (H, W) or (H, W, 1), got shape {image.shape}")
  return np.clip(np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of a 2-D array (pixel-centre sampling; integer scales = np.repeat)."""
  h, w = image.shape[:2]
  rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
  cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
  return image[rows[:, None], cols[None, :]]


def _hstack(tiles: Sequence[np.ndarray], separator: int) -> np.ndarray:
  height = tiles[0].shape[0]
  bar = np.full((height, separator), SEPARATOR_VALUE, np.uint8)
  parts = []
  for i, tile in enumerate(tiles):
    if i and separator:
      parts.append(bar)
    parts.append(tile)
  return np.concatenate(parts, axis=1)


def comparison_panel(images: Mapping[str, np.ndarray], *,
                     error_pair: tuple[str, str] | None = ("SR", "HR"),
                     error_scale: float = 10.0, separator: int = 2) -> np.ndarray:
  """Side-by-side uint8 panel of `images` (in dict order), plus an error map.

  Args:
    images: name -> (H, W) or (H, W, 1) image in [0, 1] (values outside are clipped). All images are
      shown at the size of `error_pair[1]` (the HR image) when present, else the largest one; an
      image of another size is nearest-neighbour resized to it.
    error_pair: (a, b): when both are in `images`, |a - b| * error_scale, clipped to [0, 1], is
      appended as the last tile; a and b must have the same shape. None: no error map.
    error_scale: gain of the error map (x10: an error of 0.1 is white; dissertation Fig. 3.8).
    separator: width in pixels of the white bars between tiles.

  Returns:
    uint8 array of shape (H, n_tiles * W + (n_tiles - 1) * separator).
  """
  if not images:
    raise ValueError("comparison_panel needs at least one image")
  arrays = {name: _as_2d(name, im) for name, im in images.items()}
  if error_pair is not None and error_pair[1] in arrays:
    height, width = arrays[error_pair[1]].shape
  else:
    height, width = max((a.shape for a in arrays.values()), key=lambda s: s[0] * s[1])
  tiles = []
  for a in arrays.values():
    if a.shape != (height, width):
      a = resize_nearest(a, height, width)
    tiles.append(a)
  if error_pair is not None and all(k in arrays for k in error_pair):
    a, b = (arrays[k] for k in error_pair)
    if a.shape != b.shape:
      raise ValueError(
          f"error map needs {error_pair[0]!r} and {error_pair[1]!r} of the same shape, "
          f"got {a.shape} and {b.shape}")
    tiles.append(np.clip(np.abs(a - b) * error_scale, 0.0, 1.0))
  return _hstack([to_uint8(t) for t in tiles], separator)


def stack_rows(panels: Sequence[np.ndarray], separator: int = 2) -> np.ndarray:
  """Stacks uint8 panels of equal width vertically with white bars (one row per sample)."""
  if not panels:
    raise ValueError("stack_rows needs at least one panel")
  widths = {p.shape[1] for p in panels}
  if len(widths) != 1:
    raise ValueError(f"panels must have the same width, got {sorted(widths)}")
  return np.swapaxes(_hstack([np.swapaxes(to_uint8(p), 0, 1) for p in panels], separator), 0, 1)
