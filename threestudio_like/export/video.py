"""Turntable videos (MP4, GIF) and contact sheets from frames the system rendered.

Frames: a sequence of (H,W,3) images or one (N,H,W,3) array/tensor, float in [0,1] or uint8,
row 0 = top. All frames must have the same size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from torch import Tensor

from ..core.atomic import atomic_write
from ..core.errors import UserError
from .image_io import ImageLike, to_uint8, write_png

Frames = Union[Sequence[ImageLike], np.ndarray, Tensor]


def to_uint8_frames(frames: Frames) -> list[np.ndarray]:
    """List of (H,W,3) uint8 arrays; raises UserError on no frames or mixed sizes."""
    out = [to_uint8(frame) for frame in frames]
    if not out:
        raise UserError("no frames to write (0 rendered views); render at least one view")
    out = [np.repeat(f, 3, axis=-1) if f.shape[-1] == 1 else f[..., :3] for f in out]
    if any(f.shape != out[0].shape for f in out):
        raise ValueError(f"frames differ in size: {sorted({f.shape for f in out})}")
    return out


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad by edge replication to even height/width (H.264 with yuv420p needs both even)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: str | Path, frames: Frames, fps: float = 30.0, quality: int = 8) -> Path:
    """H.264 MP4 (yuv420p, plays in browsers) through imageio-ffmpeg; odd sizes are padded by one
    pixel. ``quality`` 0–10 (imageio's scale, 10 = best). Written to a temp file, then renamed."""
    import imageio.v2 as imageio

    data = [_even(f) for f in to_uint8_frames(frames)]
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with imageio.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            quality=quality,
            pixelformat="yuv420p",
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"],
        ) as writer:
            for frame in data:
                writer.append_data(frame)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_gif(path: str | Path, frames: Frames, fps: float = 15.0) -> Path:
    """Looping GIF (palette per frame by Pillow)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in to_uint8_frames(frames)]
    duration = max(int(round(1000.0 / fps)), 20)

    def write(f) -> None:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0, disposal=1)

    return atomic_write(path, write)


def contact_sheet(images: Sequence[ImageLike], n_cols: int = 0, pad: int = 2, background: int = 255) -> np.ndarray:
    """(rows·(H+pad)+pad, cols·(W+pad)+pad, 3) uint8 grid of the images in reading order.

    ``n_cols`` 0 picks ⌈√N⌉; images smaller than the largest are placed at their cell's top-left.
    """
    tiles = [f if f.shape[-1] == 3 else np.repeat(f[..., :1], 3, axis=-1) for f in map(to_uint8, images)]
    if not tiles:
        raise ValueError("contact_sheet: no images")
    cols = n_cols if n_cols > 0 else math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), background, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return sheet


def write_contact_sheet(path: str | Path, images: Sequence[ImageLike], n_cols: int = 0, pad: int = 2) -> Path:
    """PNG of :func:`contact_sheet`."""
    return write_png(path, contact_sheet(images, n_cols, pad))
