"""Reference-view losses against hand-computed values."""

import math

import pytest
import torch

from threestudio_like.core.errors import UserError
from threestudio_like.systems.reference_term import (
    depth_correlation_loss,
    normal_smoothness_loss,
    reference_mask_loss,
    reference_rgb_loss,
)


def test_rgb_loss_masked_counts_only_object_pixels():
    rgb = torch.zeros(1, 2, 2, 3)
    ref = torch.zeros(1, 2, 2, 3)
    ref[0, 0, 0] = 1.0  # object pixel, error 1 in each channel
    ref[0, 1, 1] = 0.5  # background pixel: ignored
    mask = torch.zeros(1, 2, 2, 1)
    mask[0, 0, 0] = 1.0
    mask[0, 0, 1] = 1.0  # object pixel, error 0
    assert reference_rgb_loss(rgb, ref, mask).item() == pytest.approx((3 * 1.0) / (3 * 2))
    # whole image, no mask: 3 channels·1 + 3·0.25 over 12 values
    assert reference_rgb_loss(rgb, ref).item() == pytest.approx((3 + 0.75) / 12)


def test_rgb_loss_against_white_background():
    rgb = torch.ones(1, 2, 2, 3)  # a white render
    ref = torch.zeros(1, 2, 2, 3)
    mask = torch.zeros(1, 2, 2, 1)
    mask[0, 0, 0] = 1.0  # one black object pixel
    loss = reference_rgb_loss(rgb, ref, mask, background=torch.ones(3))
    assert loss.item() == pytest.approx(3 / 12)  # only the object pixel differs, by 1 per channel


def test_mask_loss_values():
    opacity = torch.tensor([0.8, 0.3]).reshape(1, 1, 2, 1)
    mask = torch.tensor([1.0, 0.0]).reshape(1, 1, 2, 1)
    bce = -(math.log(0.8) + math.log(0.7)) / 2
    assert reference_mask_loss(opacity, mask, "bce").item() == pytest.approx(bce, rel=1e-5)
    assert reference_mask_loss(opacity, mask, "mse").item() == pytest.approx((0.04 + 0.09) / 2)
    with pytest.raises(UserError):
        reference_mask_loss(opacity, mask, "l1")


def test_depth_correlation_affine_and_negated():
    g = torch.Generator().manual_seed(0)
    d = torch.rand(2, 4, 4, 1, generator=g)
    mask = torch.ones_like(d)
    mask[:, 0] = 0.0
    assert depth_correlation_loss(d, 3.0 * d + 2.0, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert depth_correlation_loss(d, -0.5 * d + 1.0, mask).item() == pytest.approx(2.0, abs=1e-6)
    # background pixels do not count: garbage outside the mask changes nothing
    mono = 3.0 * d + 2.0
    mono[:, 0] = 100.0 * torch.rand(2, 4, 1, generator=g)
    assert depth_correlation_loss(d, mono, mask).item() == pytest.approx(0.0, abs=1e-6)
    # against an independent Pearson (numpy corrcoef) on a non-trivial pair
    x, y = torch.rand(1, 3, 3, 1, generator=g), torch.rand(1, 3, 3, 1, generator=g)
    import numpy as np

    r = np.corrcoef(x.reshape(-1).numpy(), y.reshape(-1).numpy())[0, 1]
    assert depth_correlation_loss(x, y).item() == pytest.approx(1 - r, abs=1e-5)


def test_normal_smoothness_hand_values():
    n = torch.zeros(1, 2, 2, 3)
    n[0, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    # vertical pairs: (00,10) diff² sum = 1; (01,11) 0 → dy.mean = 1/(1·1·2·3)
    # horizontal pairs: (00,01) 1; (10,11) 0 → dx.mean = 1/6
    assert normal_smoothness_loss(n).item() == pytest.approx(1 / 6)
    mask = torch.ones(1, 2, 2, 1)
    mask[0, 1, 0] = 0.0  # drops the vertical pair (00,10) and horizontal pair (10,11)
    # dy: only (01,11): 0 → 0 ; dx: only (00,01): 1 over 3 channels → 1/3
    assert normal_smoothness_loss(n, mask).item() == pytest.approx(0.5 * (0 + 1 / 3))
    assert normal_smoothness_loss(torch.ones(1, 3, 3, 3)).item() == 0.0
