"""Monocular depth of the photo (transformers ``AutoModelForDepthEstimation``): Make-It-3D's depth prior.

Any depth-estimation model transformers knows works (DPT, Depth Anything, ZoeDepth, GLPN…), with
the image processor saved beside it (its PIL variant: no torchvision). The prediction is resized
to the input image (bicubic, as the processors' ``post_process_depth_estimation``) and returned
as a *disparity* (larger = nearer), the orientation of MiDaS-style relative models (DPT, Depth
Anything) and of ``depth_is_disparity: true`` in the reference term; metric models' depth is
inverted. Make-It-3D's loss is a Pearson correlation, blind to the scale and shift of the map.

With ``flip_average`` (test-time augmentation), the model also sees the image mirrored left-right;
its prediction, mirrored back, is brought to the first one's scale and shift (least squares over
the image: relative models' outputs have none of their own) and the two are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.config import parse_structured
from .models import WeightsDtype, model_dir, require_model_type, torch_device, torch_dtype


def locate_depth_model(name_or_path: str, where: str = "--depth") -> str:
    """The directory of a depth-estimation model (no weights loaded)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES

    directory = model_dir(name_or_path, where)
    require_model_type(
        directory,
        where,
        tuple(MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES),
        "a depth-estimation model (DPT, Depth Anything…)",
    )
    return directory


def predicts_disparity(config: Any) -> bool:
    """Whether a depth model's output is a disparity: MiDaS-style relative models (DPT, Depth
    Anything's relative variant) are; metric ones (ZoeDepth, GLPN, Depth Pro, Depth Anything metric) are not."""
    if config.model_type == "dpt":
        return True
    return config.model_type == "depth_anything" and config.depth_estimation_type == "relative"


class DepthEstimator:
    """``DepthEstimator(cfg).disparity(rgb)`` → (H,W) float32, larger = nearer."""

    @dataclass
    class Config:
        model: str = "Intel/dpt-hybrid-midas"
        """Hub id (local HF cache only) or directory of a transformers depth-estimation model and its processor."""
        device: str = "auto"
        """auto (CUDA when available), cpu, cuda, cuda:N."""
        dtype: WeightsDtype = "auto"
        """Weights dtype; auto: float16 on CUDA, float32 elsewhere."""
        flip_average: bool = True
        """Average with the prediction for the left-right mirrored image, fitted to it (twice the model's cost)."""

    def __init__(self, cfg: Any = None, where: str = "--depth") -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.cfg = parse_structured(self.Config, cfg, where)
        directory = locate_depth_model(self.cfg.model, where)
        self.device = torch_device(self.cfg.device, where)
        self.dtype = torch_dtype(self.cfg.dtype, self.device)
        self.processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True)
        self.model = AutoModelForDepthEstimation.from_pretrained(directory, local_files_only=True).eval()
        self.model.to(self.device, self.dtype).requires_grad_(False)
        self.inverts = not predicts_disparity(self.model.config)

    @torch.no_grad()
    def disparity(self, rgb: np.ndarray) -> np.ndarray:
        """(H,W) float32 relative disparity of ``rgb`` (H,W,3 uint8), at its size."""
        out = self.predict(rgb)
        if self.cfg.flip_average:
            out = (out + fit_affine(self.predict(rgb[:, ::-1]).flip(-1), out)) / 2
        if self.inverts:
            out = 1.0 / out.clamp(min=1e-6)
        return out.cpu().numpy().astype(np.float32)

    def predict(self, rgb: np.ndarray) -> torch.Tensor:
        """(H,W) float32 tensor: the model's output for ``rgb`` (H,W,3 uint8), resized to it (bicubic)."""
        from PIL import Image

        h, w = rgb.shape[:2]
        inputs = self.processor(images=Image.fromarray(np.ascontiguousarray(rgb)), return_tensors="pt")
        predicted = self.model(pixel_values=inputs["pixel_values"].to(self.device, self.dtype)).predicted_depth
        return F.interpolate(predicted[:, None].float(), (h, w), mode="bicubic", align_corners=False)[0, 0]


def fit_affine(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``a·x + b`` with the scale ``a`` and shift ``b`` that bring ``x`` closest to ``target`` (least squares)."""
    xc, tc = x - x.mean(), target - target.mean()
    a = (xc * tc).sum() / (xc * xc).sum().clamp(min=1e-12)
    return a * xc + target.mean()
