"""The colour guided filter (preprocess/guided_filter.py) against the paper's definition written
out pixel by pixel, and on a step edge whose answer is known."""

import numpy as np
import pytest
import torch

from threestudio_like.preprocess.guided_filter import guided_filter


def naive_guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al. 2010, Algorithm 1 with explicit windows: (H,W,3) guide, (H,W) src; windows clipped
    at the border, every statistic over the pixels inside (float64)."""
    h, w = src.shape
    a = np.zeros((h, w, 3))
    b = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            win = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
            colours, values = guide[win].reshape(-1, 3), src[win].reshape(-1)
            mu, mean_p = colours.mean(0), values.mean()
            sigma = (colours - mu).T @ (colours - mu) / len(values)
            cov = ((colours - mu) * (values - mean_p)[:, None]).mean(0)
            a[y, x] = np.linalg.solve(sigma + eps * np.eye(3), cov)
            b[y, x] = mean_p - a[y, x] @ mu
    q = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            win = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
            q[y, x] = a[win].reshape(-1, 3).mean(0) @ guide[y, x] + b[win].mean()
    return q


@pytest.mark.parametrize("radius, eps", [(1, 1e-3), (2, 1e-2), (3, 1e-4)])
def test_guided_filter_is_the_papers_definition(radius, eps):
    rng = np.random.default_rng(radius)
    guide = rng.random((11, 9, 3))
    guide[:, 5:] *= 0.3  # an edge, and flat-ish colour beside it
    src = rng.random((11, 9))
    got = guided_filter(torch.from_numpy(guide).permute(2, 0, 1), torch.from_numpy(src), radius, eps)
    assert got.dtype == torch.float64 and got.shape == (11, 9)
    assert np.allclose(got.numpy(), naive_guided_filter(guide, src, radius, eps), atol=1e-9)


def step_edge_case(size: int = 48, edge: int = 20, offset: int = 3):
    """A photo split at column ``edge`` (red object left, grey-green background right, mild noise)
    and a soft mask whose 0.5 level is ``offset`` columns off the edge, as an upsampled
    low-resolution mask is."""
    rng = np.random.default_rng(0)
    guide = np.empty((size, size, 3))
    guide[:, :edge] = (0.85, 0.15, 0.1)
    guide[:, edge:] = (0.45, 0.55, 0.4)
    guide += 0.02 * rng.standard_normal(guide.shape)
    columns = np.arange(size) + 0.5
    soft = 1.0 / (1.0 + np.exp((columns - (edge + offset)) / 2.0))  # σ of a blurred logit ramp
    return guide, np.tile(soft, (size, 1))


@pytest.mark.parametrize("subsample", [1, 2])
def test_guided_filter_moves_a_blurred_mask_edge_onto_the_photos_edge(subsample):
    guide, soft = step_edge_case()
    assert ((soft > 0.5).sum(1) == 23).all()  # 3 columns past the edge before filtering
    q = guided_filter(
        torch.from_numpy(guide).permute(2, 0, 1).float(), torch.from_numpy(soft).float(), 6, 1e-3, subsample
    )
    width = (q.numpy() > 0.5).sum(1)
    # away from the top and bottom borders the rows end at the edge (column 20), a few a column
    # past it where the photo's noise tips the balance
    inner = width[4:-4]
    assert (np.abs(inner - 20) <= 1).all() and (inner == 20).mean() >= 0.8, width


def test_guided_filter_refuses_bad_parameters():
    x = torch.zeros(3, 4, 4)
    for radius, eps, subsample in ((0, 1e-3, 1), (1, 0.0, 1), (1, 1e-3, 0)):
        with pytest.raises(ValueError, match="radius ≥ 1, eps > 0, subsample ≥ 1"):
            guided_filter(x, x[0], radius, eps, subsample)
