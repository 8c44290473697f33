"""Mask cleanup: one object, no holes, a soft edge (numpy/scipy).

A segmentation mask (from SAM or a photo's alpha channel) often has specks elsewhere in the image
and holes where the object has highlights or thin gaps. :func:`clean_mask` keeps the largest
8-connected component and fills the holes inside it (background regions not connected to the
image border); :func:`feather` softens the edge of the final alpha with a Gaussian.
"""

from __future__ import annotations

import numpy as np


def largest_component(mask: np.ndarray) -> np.ndarray:
    """(H,W) bool → the largest 8-connected component of ``mask`` (empty stays empty)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(H,W) bool with every background region that does not reach the image border filled."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """(H,W) bool: the largest component of ``mask`` with its holes filled."""
    return fill_holes(largest_component(mask.astype(bool)))


def feather(alpha: np.ndarray, sigma: float) -> np.ndarray:
    """(H,W) float in [0,1] blurred by a Gaussian of ``sigma`` pixels (0: unchanged)."""
    from scipy import ndimage

    if sigma <= 0:
        return alpha.astype(np.float32)
    return np.clip(ndimage.gaussian_filter(alpha.astype(np.float32), sigma, mode="nearest"), 0.0, 1.0)


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the True pixels, x1/y1 exclusive; ``mask`` must not be empty."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
