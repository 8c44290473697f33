"""Image-to-3D: the final model at the input image's camera against the input image.

The run's reference-view term (``systems/reference_term.py``) holds the input (its RGB and object
mask at the term's render size) and its camera. The model is rendered there with the term's
shading, then

* masked (``ref_psnr_masked``, ``ref_ssim_masked``): the render against the input on the
  object's pixels (SSIM: windows centred on them);
* unmasked (``ref_psnr``, ``ref_ssim``, ``ref_lpips``): the whole render against the whole input,
  both over white (the render's own background replaced by white using its opacity).

LPIPS (AlexNet, Zhang et al. 2018) only where the ``lpips`` package imports (its weights come
with it); otherwise it is reported as skipped.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Optional

import torch
from torch import Tensor

from ..systems.reference_term import ReferenceViewTerm
from .evaluator import Scores
from .image_metrics import psnr, ssim

LPIPS_MISSING = "the lpips package is not installed (pip install lpips)"


def reference_term(system: Any) -> Optional[ReferenceViewTerm]:
    """The system's reference-view term, or None (text-to-3D)."""
    return next((t for t in system.terms.values() if isinstance(t, ReferenceViewTerm)), None)


@torch.no_grad()
def reference_renders(system: Any, term: ReferenceViewTerm) -> tuple[Tensor, Tensor]:
    """(render over white (1,H,W,3), input over white (1,H,W,3)) at the input's camera."""
    was_training = system.training
    system.eval()
    try:
        cameras = term.camera()
        r = system.render(cameras, shading=term.cfg.shading)
        background = system.background(cameras.rays_d)
    finally:
        system.train(was_training)
    clear = 1.0 - r.opacity
    render = (r.rgb - clear * background + clear).clamp(0, 1)
    return render, term.rgb * term.mask + (1.0 - term.mask)


def reference_view_scores(system: Any, term: ReferenceViewTerm) -> tuple[Scores, Optional[str]]:
    """The scores of the module docstring, and why LPIPS is missing (None when it is there)."""
    render, target = reference_renders(system, term)
    render, target, mask = render.cpu(), target.cpu(), term.mask.cpu()
    scores: Scores = {
        "ref_psnr": float(psnr(render, target)[0]),
        "ref_ssim": float(ssim(render, target)[0]),
        "ref_psnr_masked": float(psnr(render, target, mask=mask)[0]),
        "ref_ssim_masked": float(ssim(render, target, mask=mask)[0]),
    }
    if importlib.util.find_spec("lpips") is None:
        return scores, LPIPS_MISSING
    scores["ref_lpips"] = lpips_distance(render, target)
    return scores, None


def lpips_distance(a: Tensor, b: Tensor) -> float:
    """LPIPS (AlexNet) between two (1,H,W,3) images in [0,1]."""
    import lpips

    model = lpips.LPIPS(net="alex", verbose=False)
    return float(model(a.permute(0, 3, 1, 2) * 2 - 1, b.permute(0, 3, 1, 2) * 2 - 1).mean())
