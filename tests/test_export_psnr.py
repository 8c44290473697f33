"""PSNR/MSE against the formula and an independent numpy computation."""

import math

import numpy as np
import torch

from threestudio_like.eval.image_metrics import mse, psnr


def test_psnr_constant_offset_is_exact():
    target = torch.rand(2, 8, 8, 3) * 0.8
    pred = target + 0.1  # MSE = 0.01 → 20 dB
    assert torch.allclose(psnr(pred, target), torch.tensor([20.0, 20.0]), atol=1e-4)
    assert torch.allclose(psnr(pred * 255, target * 255, max_val=255.0), torch.tensor([20.0, 20.0]), atol=1e-4)
    assert math.isinf(float(psnr(target[0], target[0])))


def test_psnr_matches_numpy_per_image_and_mask():
    gen = np.random.default_rng(0)
    a, b = gen.random((3, 2, 5, 7, 3)), gen.random((3, 2, 5, 7, 3))
    ref = 10 * np.log10(1.0 / ((a - b) ** 2).mean(axis=(-3, -2, -1)))
    out = psnr(torch.tensor(a), torch.tensor(b))
    assert out.shape == (3, 2) and np.allclose(out.numpy(), ref)
    mask = gen.random((3, 2, 5, 7)) > 0.5
    ref_m = np.array([[((a[i, j] - b[i, j]) ** 2)[mask[i, j]].mean() for j in range(2)] for i in range(3)])
    assert np.allclose(mse(torch.tensor(a), torch.tensor(b), torch.tensor(mask)).numpy(), ref_m)
    assert np.allclose(mse(torch.tensor(a), torch.tensor(b), torch.tensor(mask)[..., None]).numpy(), ref_m)
