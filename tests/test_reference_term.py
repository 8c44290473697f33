"""The image-to-3D reference term: image/depth loading, its camera, the unweighted losses."""

from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from threestudio_like.core.errors import UserError
from threestudio_like.data.cameras import make_cameras
from threestudio_like.renderers.base import RenderOutput
from threestudio_like.systems.reference_term import ReferenceViewTerm


def _write_rgba(path, h=8, w=8):
    img = np.zeros((h, w, 4), np.uint8)
    img[2:6, 2:6] = [255, 0, 0, 255]  # red square, opaque; rest transparent
    iio.imwrite(path, img)
    return path


def test_reference_term_losses_and_camera(tmp_path):
    image = _write_rgba(tmp_path / "ref.png")
    depth = np.arange(64, dtype=np.float32).reshape(8, 8)
    np.save(tmp_path / "d.npy", depth)
    term = ReferenceViewTerm(
        {
            "image": str(image),
            "depth": str(tmp_path / "d.npy"),
            "height": 8,
            "width": 8,
            "elevation_deg": 10,
            "azimuth_deg": 30,
            "distance": 2.5,
            "fovy_deg": 40,
            "depth_is_disparity": False,
        },
        name="ref",
    )
    cam = term.camera()
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    expected = make_cameras(t(10), t(30), t(2.5), t(40), 8, 8)
    assert torch.allclose(cam.c2w, expected.c2w)

    rgb = torch.full((1, 8, 8, 3), 0.5)
    opacity = torch.zeros(1, 8, 8, 1)
    opacity[:, 2:6, 2:6] = 1.0
    render_depth = torch.from_numpy(2 * depth + 1)[None, ..., None]  # affine in the mono depth
    render = RenderOutput(rgb=rgb, opacity=opacity, depth=render_depth, normal=torch.zeros(1, 8, 8, 3))
    ctx = SimpleNamespace(system=SimpleNamespace(render=lambda cams, shading: render))
    out = term(ctx)
    assert set(out) == {"ref_rgb", "ref_mask", "ref_depth", "ref_normal_smooth"}
    # object pixels are red (1,0,0) vs grey 0.5: MSE = (0.25 + 0.25 + 0.25) / 3
    assert out["ref_rgb"].item() == pytest.approx(0.25, rel=1e-5)
    assert out["ref_mask"].item() == pytest.approx(0.0, abs=1e-4)
    assert out["ref_depth"].item() == pytest.approx(0.0, abs=1e-5)  # perfectly correlated
    ref_rgb, elev, azim, dist = term.reference_image()
    assert (elev, azim, dist) == (10, 30, 2.5)
    assert torch.allclose(ref_rgb[0, 0, 0], torch.ones(3))  # transparent → white


def test_reference_image_without_alpha_is_user_error(tmp_path):
    iio.imwrite(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(UserError, match="no alpha channel"):
        ReferenceViewTerm({"image": str(tmp_path / "rgb.png")})
    with pytest.raises(UserError, match="image not found"):
        ReferenceViewTerm({"image": str(tmp_path / "missing.png")})
