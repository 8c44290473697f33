"""Zero123++ view grid: split, poses, reconstruction loss."""

import math

import numpy as np
import pytest
import torch

from threestudio_like.core.errors import UserError
from threestudio_like.systems.multiview_term import (
    MultiViewReconstructionLoss,
    load_view_grid,
    split_grid,
    zero123pp_cameras,
    zero123pp_poses,
)


def _synthetic_grid(th=4, tw=5, c=3):
    """3×2 grid where tile k is filled with the value k (row-major)."""
    grid = torch.zeros(3 * th, 2 * tw, c)
    for r in range(3):
        for col in range(2):
            grid[r * th : (r + 1) * th, col * tw : (col + 1) * tw] = r * 2 + col
    return grid


def test_split_grid_row_major():
    tiles = split_grid(_synthetic_grid())
    assert tiles.shape == (6, 4, 5, 3)
    for k in range(6):
        assert torch.all(tiles[k] == k)
    # a non-constant tile keeps its pixel layout
    grid = torch.arange(6 * 4 * 3, dtype=torch.float32).reshape(6, 4, 3)  # h=6, w=4
    tiles = split_grid(grid)
    assert torch.equal(tiles[3], grid[2:4, 2:4])
    assert split_grid(torch.zeros(960, 640, 3)).shape == (6, 320, 320, 3)
    with pytest.raises(UserError):
        split_grid(torch.zeros(961, 640, 3))


def test_zero123pp_poses_hand_values():
    e, a = zero123pp_poses()
    assert e.tolist() == [30, -20, 30, -20, 30, -20]
    assert a.tolist() == [30, 90, 150, 210, 270, 330]
    e, a = zero123pp_poses(input_azimuth_deg=100.0, elevations_deg=(20.0, -10.0))
    assert e.tolist() == [20, -10, 20, -10, 20, -10]
    assert a.tolist() == [130, 190, 250, 310, 10, 70]


def test_zero123pp_cameras_positions():
    cams = zero123pp_cameras(distance=2.0, fovy_deg=30.0, height=8, width=8)
    assert cams.batch_size == 6 and cams.rays_d.shape == (6, 8, 8, 3)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    assert torch.allclose(cams.position[0], torch.tensor([2 * c * c, 2 * c * s, 2 * s]), atol=1e-5)
    ce, se = math.cos(math.radians(-20)), math.sin(math.radians(-20))
    assert torch.allclose(cams.position[1], torch.tensor([0.0, 2 * ce, 2 * se]), atol=1e-5)
    # every camera looks at the origin: the centre ray passes through it
    centre = -cams.c2w[:, :3, 2]
    assert torch.allclose(centre, -cams.position / 2.0, atol=1e-5)
    assert torch.allclose(cams.fovy, torch.full((6,), math.radians(30)))


def test_reconstruction_loss_values_and_resize():
    rgb = torch.zeros(6, 2, 2, 3, requires_grad=True)
    target = torch.ones(6, 4, 4, 3)  # resized (area) to 2×2 → still ones
    loss = MultiViewReconstructionLoss({"kind": "l2"})
    assert loss(rgb, target)["mv_rgb"].item() == pytest.approx(1.0)
    assert MultiViewReconstructionLoss({"kind": "l1"})(rgb, 0.5 * target)["mv_rgb"].item() == pytest.approx(0.5)
    mask = torch.zeros(6, 2, 2, 1)
    mask[:, 0, 0] = 1.0
    t2 = torch.full((6, 2, 2, 3), 0.25)
    t2[:, 0, 0] = 0.5
    out = MultiViewReconstructionLoss({"kind": "l2"})(rgb, t2, mask)
    assert out["mv_rgb"].item() == pytest.approx(0.25)  # only the object pixel
    out = MultiViewReconstructionLoss({"masked_rgb": False, "background": [1, 1, 1], "lambda_mask": 2.0})(
        rgb, t2, mask, opacity=torch.zeros(6, 2, 2, 1)
    )
    assert out["mv_rgb"].item() == pytest.approx((0.25 + 3 * 1.0) / 4)
    assert out["mv_mask"].item() == pytest.approx(2.0 * 0.25)
    out["mv_rgb"].backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    with pytest.raises(UserError):
        loss(rgb, target[:5])


def test_load_view_grid_with_alpha(tmp_path):
    import imageio.v3 as iio

    grid = np.zeros((30, 20, 4), dtype=np.uint8)
    for k in range(6):
        r, c = divmod(k, 2)
        grid[r * 10 : (r + 1) * 10, c * 10 : (c + 1) * 10, :3] = 40 * k
    grid[..., 3] = 255
    grid[:10, :10, 3] = 0
    iio.imwrite(tmp_path / "grid.png", grid)
    views, masks = load_view_grid(str(tmp_path / "grid.png"))
    assert views.shape == (6, 10, 10, 3) and masks.shape == (6, 10, 10, 1)
    assert torch.allclose(views[:, 0, 0, 0], torch.tensor([40.0 * k / 255 for k in range(6)]))
    assert masks[0].max() == 0 and masks[1].min() == 1
    with pytest.raises(UserError):
        load_view_grid(str(tmp_path / "missing.png"))
