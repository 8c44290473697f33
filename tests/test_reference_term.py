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
    ctx = SimpleNamespace(system=SimpleNamespace(render=lambda cams, shading: render), global_step=0)
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


def test_reference_term_threestudio_forms_and_resolution_schedule(tmp_path):
    """threestudio's Zero123 options: whole-image squared errors over white, the normal image's
    total variation, the file's own alpha for the guidance, the render size growing by schedule."""
    img = np.zeros((8, 8, 4), np.uint8)
    img[2:6, 2:6] = [255, 0, 0, 255]
    img[0, 0] = [0, 0, 255, 128]  # a half-transparent blue pixel: binarised away, kept by file_alpha
    iio.imwrite(tmp_path / "ref.png", img)
    term = ReferenceViewTerm(
        {
            "image": str(tmp_path / "ref.png"),
            "height": {"milestones": [[0, 4], [10, 8]]},
            "width": {"milestones": [[0, 4], [10, 8]]},
            "rgb_background": [1.0, 1.0, 1.0],
            "rgb_loss": "l1",
            "mask_loss": "mse",
            "normal_smooth_form": "image_sum",
            "guidance_image": "file_alpha",
        },
        name="ref",
    )
    seen = []

    def render(cams, shading):
        h, w = cams.height, cams.width
        seen.append((h, w))
        normal = torch.zeros(1, h, w, 3)
        normal[..., 2] = 1.0
        normal[:, :, : w // 2, 0] = 1.0  # left half tilted: one vertical edge in the normal image
        return RenderOutput(
            rgb=torch.zeros(1, h, w, 3), opacity=torch.ones(1, h, w, 1), depth=torch.zeros(1, h, w, 1), normal=normal
        )

    out = term(SimpleNamespace(system=SimpleNamespace(render=render), global_step=0))
    assert seen == [(4, 4)] and term.rgb.shape == (1, 4, 4, 3)
    # L1 against the reference over white: every pixel is black, the reference is 1 except red's G, B
    target = term.rgb * term.mask + (1 - term.mask)
    assert out["ref_rgb"].item() == pytest.approx(target.mean().item(), rel=1e-6)
    assert out["ref_mask"].item() == pytest.approx(((1 - term.mask) ** 2).mean().item(), rel=1e-6)
    # normal image m = (n/|n| + 1)/2: columns differ only across the middle edge, rows not at all
    n = torch.nn.functional.normalize(torch.tensor([1.0, 0, 1]), dim=0)
    jump = (((n + 1) / 2 - torch.tensor([0.5, 0.5, 1.0])) ** 2).sum().item()
    assert out["ref_normal_smooth"].item() == pytest.approx(jump * 4 / (4 * 3 * 3), rel=1e-5)
    term(SimpleNamespace(system=SimpleNamespace(render=render), global_step=10))
    assert seen[-1] == (8, 8) and term.rgb.shape == (1, 8, 8, 3)
    guide, *_ = term.reference_image()
    assert guide.shape == (1, 8, 8, 3)
    expected = torch.tensor([0.0, 0.0, 1.0]) * (128 / 255) + (1 - 128 / 255)
    assert torch.allclose(guide[0, 0, 0], expected, atol=1e-6)
