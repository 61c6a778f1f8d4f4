"""Image panels for eyeballing super-resolution results, and PNG encoding/saving (Pillow).

`comparison_panel` lays single-channel images side by side, in the order given (typically LR,
bicubic, SR, HR), followed by an error map, like the dissertation's qualitative figures with error
maps (Figs. 3.7, 3.8, 3.15, 3.16). Every image is brought to the HR size (a smaller one, typically the
LR input, by nearest-neighbour so its pixels stay visible), clipped to [0, 1] and separated by 2-pixel
white bars; the error map is |SR - HR| times `error_scale`, clipped. The default gain x10 matches the
display range of Fig. 3.8 (differences of images in [-1, 1] shown over [-0.2, 0.2], i.e. 0.1 on the
[0, 1] scale used here is full scale).

By default the panel is annotated (an RGB uint8 array): a title strip over every tile (its name,
or `labels[name]`, e.g. the method), each image of the HR size but HR itself (bicubic, SR) with its
PSNR / SSIM against HR computed as the results tables do (`metrics.image_quality`: border crop
ceil(scale), data range 1, no clipping; pass `scale`), the LR tile with its own size, the error map
in colour (`inferno`: black = no error) and a colour bar labelled in |SR - HR| units. Tiles narrower
than MIN_TILE_WIDTH are magnified by an integer factor (nearest neighbour) so the titles fit.
Rendering is numpy + Pillow text (matplotlib only supplies the colour map table): a few ms per
panel. `annotate=False` gives the bare greyscale tiles. The result is a uint8 array for `save_png`
or `TensorBoardWriter.write_images`.

`roi_panel` is the zoomed comparison of Fig. 3.17: the whole HR slice with the ROI outlined, then
the ROI of the ground truth and of each method, captioned with its PSNR / SSIM (Pillow's default
font, in a strip under the tiles).

Usage:
  panel = comparison_panel({"LR": lr, "bicubic": bic, "SR": sr, "HR": hr}, scale=4,
                           labels={"SR": "RDST"})
  save_png(workdir / "samples" / "step_001000.png", panel)
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from medsr_jax.errors import InputError
from medsr_jax.metrics import image_quality

SEPARATOR_VALUE = 255  # white bars between tiles
ERROR_CMAP = "inferno"  # colour map of the annotated error map (black = no error)
MIN_TILE_WIDTH = 128  # annotated panels zoom small tiles (integer, nearest) to at least this
MIN_FONT_SIZE, MAX_FONT_SIZE = 11, 18  # title font: about a tenth of the tile width


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
  bar = np.full((height, separator) + tiles[0].shape[2:], SEPARATOR_VALUE, np.uint8)
  parts = []
  for i, tile in enumerate(tiles):
    if i and separator:
      parts.append(bar)
    parts.append(tile)
  return np.concatenate(parts, axis=1)


def comparison_panel(images: Mapping[str, np.ndarray], *,
                     error_pair: tuple[str, str] | None = ("SR", "HR"),
                     error_scale: float = 10.0, separator: int = 2, annotate: bool = True,
                     labels: Mapping[str, str] | None = None, reference: str | None = None,
                     scale: float | None = None,
                     scores: Mapping[str, tuple[float, float]] | None = None,
                     colorbar: bool = True, cmap: str = ERROR_CMAP, zoom: int | None = None
                     ) -> np.ndarray:
  """Side-by-side panel of `images` (in dict order), plus an error map.

  Args:
    images: name -> (H, W) or (H, W, 1) image in [0, 1] (values outside are clipped for display,
      never for scoring). All images are shown at the size of `error_pair[1]` (the HR image) when
      present, else the largest one; an image of another size is nearest-neighbour resized to it.
    error_pair: (a, b): when both are in `images`, |a - b| * error_scale, clipped to [0, 1], is
      appended as the last tile; a and b must have the same shape. None: no error map.
    error_scale: gain of the error map (x10: an error of 0.1 is full scale; dissertation
      Fig. 3.8).
    separator: width in pixels of the white bars between tiles.
    annotate: True (default): an RGB panel with a title strip over every tile, each SR image's
      PSNR / SSIM against the reference in its title, the error map in colour (`cmap`) with a
      colour bar. False: the bare greyscale tiles (no text, grey error map), as before.
    labels: name -> title shown over the tile (default: the name), e.g. {"SR": "RDST"}.
    reference: the ground truth the scores are computed against; default `error_pair[1]` (or
      "HR" without an error pair). Every other image of the reference's own size is scored
      (typically bicubic and SR; the smaller LR input is not).
    scale: super-resolution scale: the scores crop ceil(scale) pixels from every border, as the
      results tables (`image_quality.slice_scores`: PSNR and SSIM with data range 1, images not
      clipped). None: inferred as the reference height over the height of the smallest image
      (the LR input), rounded to 0.1; no crop when every image has the reference size.
    scores: name -> (PSNR, SSIM) to show instead of computing them (e.g. the numbers of the
      results table).
    colorbar: annotate only: a colour bar of the error map (|a - b| from 0 to 1 / error_scale)
      right of the error tile.
    cmap: annotate only: matplotlib colour map of the error map.
    zoom: annotate only: integer nearest-neighbour magnification of every tile; None: the
      smallest that makes tiles at least MIN_TILE_WIDTH pixels wide, so the titles fit.

  Returns:
    annotate=False: uint8 array (H, n_tiles * W + (n_tiles - 1) * separator).
    annotate=True: uint8 RGB array (title strip + zoom * H, ..., 3).
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
  error = None
  if error_pair is not None and all(k in arrays for k in error_pair):
    a, b = (arrays[k] for k in error_pair)
    if a.shape != b.shape:
      raise ValueError(
          f"error map needs {error_pair[0]!r} and {error_pair[1]!r} of the same shape, "
          f"got {a.shape} and {b.shape}")
    error = np.clip(np.abs(a - b) * error_scale, 0.0, 1.0)
  if not annotate:
    return _hstack([to_uint8(t) for t in tiles + ([error] if error is not None else [])],
                   separator)

  labels = {name: str((labels or {}).get(name, name)) for name in arrays}
  if reference is None:
    reference = error_pair[1] if error_pair is not None else "HR"
  found = panel_scores(images, reference=reference, scale=scale, given=scores)
  zoom = int(zoom) if zoom else max(1, -(-MIN_TILE_WIDTH // width))
  if zoom < 1:
    raise ValueError(f"zoom must be >= 1, got {zoom}")
  font = _font(min(MAX_FONT_SIZE, max(MIN_FONT_SIZE, (width * zoom) // 11)))
  texts, columns = [], []
  for (name, raw), tile in zip(arrays.items(), tiles):
    lines = [labels[name]]
    if name in found:
      psnr, ssim = found[name]
      lines += [f"PSNR {psnr:.2f} dB", f"SSIM {ssim:.4f}"]
    elif raw.shape != (height, width):
      lines.append(f"{raw.shape[0]}x{raw.shape[1]} px")
    texts.append(lines)
    columns.append(_grey_rgb(_zoom(to_uint8(tile), zoom)))
  if error is not None:
    ea, eb = (labels[k] for k in error_pair)
    texts.append([f"|{ea} - {eb}|", f"x{error_scale:g}"])
    columns.append(_zoom(_colormap(cmap)[to_uint8(error)], zoom))
    if colorbar:
      texts.append([""])
      columns.append(_colorbar(height * zoom, error_scale, cmap, font))
  strip_h = _text_height(font, max(len(t) for t in texts))
  columns = [np.concatenate([_title_strip(t, c.shape[1], strip_h, font), c], axis=0)
             for t, c in zip(texts, columns)]
  return _hstack(columns, separator)


def panel_scores(images: Mapping[str, np.ndarray], *, reference: str = "HR",
                 scale: float | None = None,
                 given: Mapping[str, tuple[float, float]] | None = None
                 ) -> dict[str, tuple[float, float]]:
  """{name: (PSNR, SSIM)} of every image of the reference's size but the reference, against it:
  what `comparison_panel` shows (its `reference`, `scale` and `scores` arguments). `given`
  entries are taken as they are. Images too small for the crop and the 7x7 SSIM window, and all
  images when the reference is absent, get none."""
  found = {k: (float(v[0]), float(v[1])) for k, v in (given or {}).items() if k in images}
  if reference not in images:
    return found
  raw = {k: _squeeze(v) for k, v in images.items()}
  gt = raw[reference]
  if scale is None:
    smaller = [v.shape[0] for v in raw.values() if v.ndim == 2 and v.shape[0] < gt.shape[0]]
    scale = round(gt.shape[0] / min(smaller), 1) if smaller else 0.0
  margin = image_quality.evaluation_margin(scale) if scale > 0 else 0
  for name, pred in raw.items():
    if name == reference or name in found or pred.shape != gt.shape:
      continue
    try:
      g, p = image_quality.crop_border(gt, margin), image_quality.crop_border(pred, margin)
      found[name] = (image_quality.psnr(g, p), image_quality.ssim(g, p))
    except InputError:  # too small for the crop or the 7x7 SSIM window: no scores
      pass
  return found


def _squeeze(image) -> np.ndarray:
  image = np.asarray(image, dtype=np.float64)
  return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def _zoom(image: np.ndarray, zoom: int) -> np.ndarray:
  return image if zoom == 1 else np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def _grey_rgb(image: np.ndarray) -> np.ndarray:
  return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


@functools.lru_cache(maxsize=8)
def _colormap(name: str) -> np.ndarray:
  """(256, 3) uint8 lookup table of a matplotlib colour map (index = uint8 value)."""
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  lut = colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
  return np.round(lut * 255.0).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _font(size: int):
  from PIL import ImageFont  # pylint: disable=import-outside-toplevel
  try:
    return ImageFont.load_default(size=size)  # Aileron (FreeType); bitmap font without FreeType
  except (TypeError, OSError, ImportError):
    return ImageFont.load_default()


def _text_height(font, lines: int) -> int:
  return lines * (font.getbbox("Ag")[3] + 2) + 4


def _text_width(font, text: str) -> int:
  return int(font.getbbox(text)[2])


def _title_strip(lines: Sequence[str], width: int, height: int, font) -> np.ndarray:
  """White text on black, one line per entry, clipped to `width`; (height, width, 3) uint8."""
  from PIL import ImageDraw  # pylint: disable=import-outside-toplevel
  strip = Image.new("L", (int(width), int(height)), 0)
  draw = ImageDraw.Draw(strip)
  line_h = font.getbbox("Ag")[3] + 2
  for i, line in enumerate(lines):
    draw.text((2, 2 + i * line_h), line, fill=255, font=font)
  return _grey_rgb(np.asarray(strip, np.uint8))


def _colorbar(height: int, error_scale: float, cmap: str, font) -> np.ndarray:
  """A vertical colour bar (full scale at the top) with ticks at 0, half and full scale labelled
  in units of |a - b| (full scale = 1 / error_scale); white background, (height, w, 3) uint8."""
  from PIL import ImageDraw  # pylint: disable=import-outside-toplevel
  bar_w = max(8, height // 16)
  ticks = [(1.0, f"{1.0 / error_scale:.3g}+"), (0.5, f"{0.5 / error_scale:.3g}"), (0.0, "0")]
  text_h = font.getbbox("Ag")[3]
  label_w = max(_text_width(font, t) for _, t in ticks) + 6
  values = np.round(np.linspace(255.0, 0.0, height)).astype(np.uint8)
  out = np.full((height, bar_w + label_w, 3), 255, np.uint8)
  out[:, :bar_w] = _colormap(cmap)[values][:, None, :]
  image = Image.fromarray(out)
  draw = ImageDraw.Draw(image)
  for frac, text in ticks:
    y = int(round((1.0 - frac) * (height - 1)))
    draw.line([(bar_w, y), (bar_w + 3, y)], fill=(0, 0, 0))
    top = min(max(0, y - text_h // 2), max(0, height - text_h - 1))
    draw.text((bar_w + 5, top), text, fill=(0, 0, 0), font=font)
  return np.asarray(image, np.uint8)


def stack_rows(panels: Sequence[np.ndarray], separator: int = 2) -> np.ndarray:
  """Stacks uint8 panels of equal width vertically with white bars (one row per sample).

  Greyscale panels are made RGB when any panel is RGB.
  """
  if not panels:
    raise ValueError("stack_rows needs at least one panel")
  widths = {p.shape[1] for p in panels}
  if len(widths) != 1:
    raise ValueError(f"panels must have the same width, got {sorted(widths)}")
  panels = [to_uint8(p) for p in panels]
  if any(p.ndim == 3 for p in panels):
    panels = [_grey_rgb(p) for p in panels]
  return np.swapaxes(_hstack([np.swapaxes(p, 0, 1) for p in panels], separator), 0, 1)


# ---------------------------------------------------------------------------------------------
# ROI comparison panel (dissertation Fig. 3.17).

ROI_OUTLINE_VALUE = 255  # the ROI rectangle on the whole slice: 1-px, white


def _as_unit_2d(name: str, image: np.ndarray) -> np.ndarray:
  """`_as_2d`, with uint8 input taken as 0..255."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    image = image.astype(np.float32) / 255.0
  return _as_2d(name, image)


def _roi_box(roi_box, height: int, width: int) -> tuple[int, int, int, int]:
  try:
    top, left, h, w = (int(v) for v in roi_box)
  except (TypeError, ValueError):
    raise InputError(f"roi_box must be (top, left, height, width), got {roi_box!r}") from None
  if h < 1 or w < 1 or top < 0 or left < 0 or top + h > height or left + w > width:
    raise InputError(f"roi_box {(top, left, h, w)} does not fit in a {height}x{width} slice")
  return top, left, h, w


def crop_roi(image: np.ndarray, roi_box) -> np.ndarray:
  """image[top:top + height, left:left + width] for roi_box = (top, left, height, width)."""
  image = np.asarray(image)
  top, left, h, w = _roi_box(roi_box, image.shape[0], image.shape[1])
  return image[top:top + h, left:left + w]


def draw_rectangle(image: np.ndarray, roi_box, value: int = ROI_OUTLINE_VALUE) -> np.ndarray:
  """A uint8 copy of a 2-D image with the 1-px outline of roi_box set to `value`.

  The outline is the ROI's own outermost rows and columns (rows top and top + height - 1,
  columns left and left + width - 1), so it never leaves the slice.
  """
  out = to_uint8(image).copy()
  top, left, h, w = _roi_box(roi_box, out.shape[0], out.shape[1])
  out[top, left:left + w] = value
  out[top + h - 1, left:left + w] = value
  out[top:top + h, left] = value
  out[top:top + h, left + w - 1] = value
  return out


def _caption_strip(lines: Sequence[Sequence[str]], widths: Sequence[int], separator: int
                   ) -> np.ndarray:
  """White-on-black text under each tile (Pillow's default font), clipped to the tile width."""
  from PIL import ImageDraw, ImageFont  # pylint: disable=import-outside-toplevel
  font = ImageFont.load_default()
  line_h = font.getbbox("Ag")[3] + 2
  height = max(len(t) for t in lines) * line_h + 4
  strips = []
  for text, width in zip(lines, widths):
    strip = Image.new("L", (int(width), height), 0)
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(text):
      draw.text((2, 2 + i * line_h), line, fill=255, font=font)
    strips.append(np.asarray(strip, np.uint8))
  return _hstack(strips, separator)


def roi_panel(slice_image: np.ndarray, roi_box, rois: Mapping[str, np.ndarray],
              scores: Mapping[str, tuple[float, float]] | None = None, *,
              slice_label: str = "slice", captions: bool = True,
              separator: int = 2) -> np.ndarray:
  """The whole slice with the ROI outlined, then each method's ROI crop (dissertation Fig. 3.17).

  Args:
    slice_image: (H, W) or (H, W, 1) HR slice in [0, 1] (clipped), or uint8.
    roi_box: (top, left, height, width) of the ROI in slice pixels; drawn as a 1-px outline of
      value ROI_OUTLINE_VALUE (see `draw_rectangle`).
    rois: ordered mapping name -> (h, w) or (h, w, 1) ROI image of each method, ground truth
      included (use `crop_roi` to cut them). Every tile is nearest-neighbour scaled to the slice
      height H, its width to round(w * H / h), so the ROI is shown zoomed.
    scores: optional name -> (PSNR, SSIM); a tile whose name is here gets them in its caption.
    slice_label: caption of the whole-slice tile.
    captions: when True, a black strip under the tiles holds white text (Pillow's default
      font): the name, then "PSNR xx.xx" and "SSIM 0.xxxx" where `scores` has the name. Text
      wider than its tile is cut off.
    separator: width of the white bars between tiles.

  Returns:
    uint8 array (H + caption height, W + sum of tile widths + len(rois) * separator); without
    captions the height is H.
  """
  if not rois:
    raise InputError("roi_panel needs at least one ROI image")
  base = _as_unit_2d(slice_label, slice_image)
  height = base.shape[0]
  tiles = [draw_rectangle(base, roi_box)]
  for name, roi in rois.items():
    roi = _as_unit_2d(name, roi)
    width = max(1, int(round(roi.shape[1] * height / roi.shape[0])))
    if roi.shape != (height, width):
      roi = resize_nearest(roi, height, width)
    tiles.append(to_uint8(roi))
  panel = _hstack(tiles, separator)
  if not captions:
    return panel
  scores = scores or {}
  text = [[slice_label]]
  for name in rois:
    lines = [str(name)]
    if name in scores:
      psnr, ssim = scores[name]
      lines += [f"PSNR {float(psnr):.2f}", f"SSIM {float(ssim):.4f}"]
    text.append(lines)
  strip = _caption_strip(text, [t.shape[1] for t in tiles], separator)
  return np.concatenate([panel, strip], axis=0)
