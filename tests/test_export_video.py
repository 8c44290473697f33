"""Turntable MP4/GIF writers and contact sheets: read back and compare with the frames."""

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from threestudio_like.core.errors import UserError
from threestudio_like.eval.image_metrics import psnr
from threestudio_like.export.video import contact_sheet, write_contact_sheet, write_gif, write_video


def _frames(n=8, h=47, w=63):
    """Smooth moving gradients (H.264 compresses them well), float in [0,1]."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    return [np.stack([(x + k / n) % 1, y, 0.5 + 0.4 * np.sin(2 * np.pi * (x + y + k / n))], -1) for k in range(n)]


def test_mp4_roundtrip_odd_size(tmp_path):
    frames = _frames()
    path = write_video(tmp_path / "turntable.mp4", frames, fps=10)
    reader = imageio.get_reader(path, format="FFMPEG")
    back = [f for f in reader]
    meta = reader.get_meta_data()
    reader.close()
    assert len(back) == len(frames) and back[0].shape == (48, 64, 3)  # padded to even
    assert meta["fps"] == pytest.approx(10)
    ref = torch.tensor(np.stack(frames), dtype=torch.float32)
    got = torch.tensor(np.stack(back)[:, :47, :63] / 255.0, dtype=torch.float32)
    assert float(psnr(got, ref).min()) > 30
    wrong = torch.roll(got, 1, dims=0)  # a different frame order scores low
    assert float(psnr(wrong, ref).mean()) < 25
    assert [p.name for p in tmp_path.iterdir()] == ["turntable.mp4"]


def test_gif_roundtrip_exact_for_few_colours(tmp_path):
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 250]], dtype=np.uint8)
    frames = [palette[(np.arange(16)[:, None] + np.arange(20)[None] + k) % 4] for k in range(5)]
    path = write_gif(tmp_path / "t.gif", torch.tensor(np.stack(frames)), fps=10)
    back = imageio.mimread(path)
    assert len(back) == 5
    for a, b in zip(back, frames):
        assert np.array_equal(np.asarray(a)[..., :3], b)


def test_contact_sheet_layout(tmp_path):
    tiles = [np.full((4, 6, 3), 10 * k, dtype=np.uint8) for k in range(5)]
    sheet = contact_sheet(tiles, n_cols=0, pad=1)
    assert sheet.shape == (2 * 5 + 1, 3 * 7 + 1, 3)  # ⌈√5⌉ = 3 columns, 2 rows
    for k, tile in enumerate(tiles):
        r, c = divmod(k, 3)
        assert np.array_equal(sheet[1 + r * 5 : 1 + r * 5 + 4, 1 + c * 7 : 1 + c * 7 + 6], tile)
    assert (sheet[6:, 15:] == 255).all()  # empty sixth cell is background
    path = write_contact_sheet(tmp_path / "sheet.png", [t / 255.0 for t in tiles], n_cols=5)
    assert imageio.imread(path).shape == (1 * (4 + 2) + 2, 5 * (6 + 2) + 2, 3)  # default pad 2


def test_no_frames_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no frames"):
        write_video(tmp_path / "x.mp4", [])
    assert not list(tmp_path.iterdir())
