"""Segmenting the photo's object with SAM (transformers ``SamModel``).

Prompts are in photo pixels (x right, y down). **Prompted**: positive points and/or one box, the
mask SAM rates best (highest predicted IoU; three candidates for a single point, SAM's answer to
its ambiguity, one otherwise). With ``flip_average`` (test-time augmentation), SAM also segments
the photo mirrored left-right with the prompts mirrored (pixel x → W − 1 − x; a box's edges
x0, x1 → W − x1, W − x0), and each candidate's mask logits (mirrored back, at the photo's size) and
predicted IoU are the mean of the two passes' — candidate k with candidate k, SAM's multimask
outputs being ordered — before the best is picked: two views of one prompt, whose errors partly
cancel. **Automatic** (no prompt, a photo with one main object): a
``points_per_side``² grid of single-point prompts, three candidate masks each, and the main object
is the candidate with the highest

    score = predicted IoU · stability · exp(−d² / 2σ²) · (1 − border)

where stability is SAM's (IoU of the mask thresholded at ±``stability_offset`` logits), ``d`` the
distance of the mask's centroid from the image centre (in image widths/heights), σ =
``centre_sigma``, and ``border`` the fraction of the image border the mask covers (a background
mask surrounds the object and covers most of it); masks covering less than ``min_area`` or more
than ``max_area`` of the image are not candidates. Candidates are scored on SAM's low-resolution
logits; only the winner is upsampled.

Preprocessing is SAM's, done here in PIL/torch (no torchvision): the longest side resized to the
encoder's input size (bilinear), normalized with the model's mean/std (its image processor's when
the directory has one, else ImageNet's — the original checkpoints' values), padded at the
bottom/right; masks are upsampled to the padded square, cropped and resized to the photo
(bilinear), thresholded at 0 — as ``SamProcessor.post_process_masks``. Then, with ``edge_radius``
> 0, the chosen mask's edge is refined: SAM's masks are decoded at a quarter of the encoder's
embedding stride (256² for a 1024² input) and upsampled, so their edges are blurred over several
photo pixels; σ(logits) is filtered with the photo itself as the guide (the colour guided filter,
:mod:`.guided_filter`), which snaps it to the photo's colour edges, and thresholded at ½.

The model is a hub id (local cache only) or a directory in the transformers layout
(``facebook/sam-vit-base``, ``-large``, ``-huge``), or an original segment-anything checkpoint
(``sam_vit_{b,l,h}_*.pth``, converted on load: :mod:`.sam_checkpoint`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.config import NonNegativeFloat, PositiveFloat, PositiveInt, Probability, Range, parse_structured
from ..core.errors import UserError
from .guided_filter import guided_filter
from .models import WeightsDtype, model_dir, require_model_type, torch_device, torch_dtype
from .sam_checkpoint import is_original_checkpoint, load_original_sam

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass
class Segmentation:
    """SAM's mask of the object and how SAM rated it."""

    mask: np.ndarray
    """(H,W) bool, at the photo's size."""
    predicted_iou: float
    stability: float
    prompt: str
    """``automatic``, ``points``, ``box`` or ``points+box``."""


def locate_sam(name_or_path: str, where: str = "--sam") -> str:
    """The checkpoint file or model directory ``name_or_path`` refers to (no weights loaded)."""
    if is_original_checkpoint(name_or_path):
        if not os.path.isfile(name_or_path):
            raise UserError(f"{where}: SAM checkpoint not found: {name_or_path}")
        return name_or_path
    directory = model_dir(name_or_path, where)
    require_model_type(directory, where, ("sam",), "a SAM model (facebook/sam-vit-base…-huge, or a sam_vit_*.pth)")
    return directory


class SamSegmenter:
    """``SamSegmenter(cfg).segment(rgb, points, box)`` → :class:`Segmentation` (see the module docstring)."""

    @dataclass
    class Config:
        model: str = "facebook/sam-vit-huge"
        """Hub id (local HF cache only), transformers SAM directory, or original sam_vit_*.pth checkpoint."""
        device: str = "auto"
        """auto (CUDA when available), cpu, cuda, cuda:N."""
        dtype: WeightsDtype = "auto"
        """Weights dtype; auto: float16 on CUDA, float32 elsewhere."""
        points_per_side: PositiveInt = 16
        """Automatic mode: the prompt grid is points_per_side × points_per_side."""
        points_per_batch: PositiveInt = 64
        """Automatic mode: point prompts decoded at once (memory)."""
        centre_sigma: PositiveFloat = 0.35
        """Automatic mode: width of the centre weighting, in image widths/heights."""
        min_area: Probability = 0.002
        """Automatic mode: smallest candidate mask, as a fraction of the image."""
        max_area: Probability = 0.9
        """Automatic mode: largest candidate mask, as a fraction of the image."""
        stability_offset: Annotated[float, Range(gt=0)] = 1.0
        """Logit offset of SAM's stability score."""
        flip_average: bool = True
        """Prompted mode: average SAM's logits over the photo and its left-right mirror (twice the encoder's cost)."""
        edge_radius: NonNegativeFloat = 3.0
        """Edge refinement: window radius of the colour guided filter that moves the mask's edge onto
        the photo's edges, in SAM's low-resolution mask pixels (4 × the image embedding's; 0: off)."""
        edge_eps: PositiveFloat = 0.001
        """Edge refinement: the filter's ε, the colour variance (RGB in [0, 1]) below which a window
        counts as flat and the mask is smoothed rather than snapped."""

    def __init__(self, cfg: Any = None, where: str = "--sam") -> None:
        self.cfg = parse_structured(self.Config, cfg, where)
        self.where = where
        self.device = torch_device(self.cfg.device, where)
        self.dtype = torch_dtype(self.cfg.dtype, self.device)
        self.model, self.mean, self.std = load_sam(self.cfg.model, where)
        self.model.to(self.device, self.dtype).requires_grad_(False)
        vision = self.model.config.vision_config
        self.input_size = int(vision.image_size)
        self.low_res = 4 * self.input_size // int(vision.patch_size)  # SAM's mask decoder upscales 4×

    # ---- the image -------------------------------------------------------------------------
    def pixels(self, rgb: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
        """(H,W,3) uint8 → (1,3,S,S) normalized, padded encoder input and the resized (h, w)."""
        from PIL import Image

        h, w = rgb.shape[:2]
        scale = self.input_size / max(h, w)
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        resized = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR), dtype=np.float32)
        x = (resized / 255.0 - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        x = torch.from_numpy(x).permute(2, 0, 1)
        x = F.pad(x, (0, self.input_size - nw, 0, self.input_size - nh))
        return x[None].to(self.device, self.dtype), (nh, nw)

    # ---- segmentation ----------------------------------------------------------------------
    @torch.no_grad()
    def segment(self, rgb: np.ndarray, points: Sequence[Point] = (), box: Optional[Box] = None) -> Segmentation:
        """Mask of the object in ``rgb`` (H,W,3 uint8) given the prompts, or automatically without."""
        if points or box is not None:
            logits, iou = self._prompted(rgb, points, box)
            if self.cfg.flip_average:
                w = rgb.shape[1]
                mirrored, mirrored_iou = self._prompted(rgb[:, ::-1], mirror_points(points, w), mirror_box(box, w))
                logits, iou = (logits + mirrored.flip(-1)) / 2, (iou + mirrored_iou) / 2
            best = int(torch.argmax(iou))
            stability = float(stability_score(logits[best], self.cfg.stability_offset))
            prompt = "points+box" if points and box is not None else "points" if points else "box"
            return Segmentation(
                mask=self.refined_mask(rgb, logits[best]),
                predicted_iou=float(iou[best]),
                stability=stability,
                prompt=prompt,
            )
        h, w = rgb.shape[:2]
        pixels, resized = self.pixels(rgb)
        embeddings = self.model.get_image_embeddings(pixels)
        scale = torch.tensor([resized[1] / w, resized[0] / h])
        low, iou, stability = self._automatic(embeddings, (h, w), resized, scale)
        logits = upscale_logits(low[None, None], self.input_size, resized, (h, w))[0, 0]
        return Segmentation(
            mask=self.refined_mask(rgb, logits), predicted_iou=iou, stability=stability, prompt="automatic"
        )

    def refined_mask(self, rgb: np.ndarray, logits: Tensor) -> np.ndarray:
        """(H,W) bool: the mask of ``logits`` (H,W, at the photo's size), its edge refined when
        ``edge_radius`` > 0: σ(logits) filtered with the photo as the guide, thresholded at ½. The
        filter runs at about two pixels per low-resolution mask pixel (the fast variant's
        subsampling) on larger photos. It moves edges; where it would remove the whole mask (an
        object narrower than its window, or specks with no edge under them) SAM's mask is kept."""
        mask = (logits > 0).cpu().numpy()
        if self.cfg.edge_radius == 0:
            return mask
        per_low_res_pixel = max(rgb.shape[:2]) / self.low_res
        radius = max(1, round(self.cfg.edge_radius * per_low_res_pixel))
        subsample = max(1, int(per_low_res_pixel // 2))
        guide = torch.tensor(np.ascontiguousarray(rgb), device=logits.device).permute(2, 0, 1).float() / 255.0
        soft = guided_filter(guide, torch.sigmoid(logits.float()), radius, self.cfg.edge_eps, subsample)
        refined = (soft > 0.5).cpu().numpy()
        return refined if refined.any() else mask

    def _prompted(self, rgb: np.ndarray, points: Sequence[Point], box: Optional[Box]) -> tuple[Tensor, Tensor]:
        """(candidate mask logits (C,H,W) at the photo's size, their predicted IoU (C,)) of one SAM pass."""
        h, w = rgb.shape[:2]
        pixels, resized = self.pixels(np.ascontiguousarray(rgb))
        embeddings = self.model.get_image_embeddings(pixels)
        scale = torch.tensor([resized[1] / w, resized[0] / h])
        kwargs: dict[str, Tensor] = {}
        if points:
            kwargs["input_points"] = self._model_coords(torch.tensor(points, dtype=torch.float32) * scale)[None, None]
            kwargs["input_labels"] = torch.ones(1, 1, len(points), dtype=torch.long, device=self.device)
        if box is not None:
            xy = torch.tensor(box, dtype=torch.float32).reshape(2, 2) * scale
            kwargs["input_boxes"] = self._model_coords(xy.reshape(4))[None, None]
        multimask = len(points) == 1 and box is None  # one point is ambiguous: three candidates
        out = self.model(image_embeddings=embeddings, multimask_output=multimask, **kwargs)
        logits = upscale_logits(out.pred_masks[0], self.input_size, resized, (h, w))[0]
        return logits, out.iou_scores[0, 0].float()

    def _automatic(
        self, embeddings: Tensor, size: tuple[int, int], resized: tuple[int, int], scale: Tensor
    ) -> tuple[Tensor, float, float]:
        c = self.cfg
        h, w = size
        grid = (torch.arange(c.points_per_side, dtype=torch.float32) + 0.5) / c.points_per_side
        ys, xs = torch.meshgrid(grid * h, grid * w, indexing="ij")
        prompts = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1) * scale  # (N,2) encoder pixels
        best: tuple[float, Tensor, float, float] = (-math.inf, torch.empty(0), 0.0, 0.0)
        for chunk in prompts.split(c.points_per_batch):
            out = self.model(
                image_embeddings=embeddings,
                input_points=self._model_coords(chunk)[None, :, None, :],
                input_labels=torch.ones(1, len(chunk), 1, dtype=torch.long, device=self.device),
                multimask_output=True,
            )
            low = out.pred_masks[0].flatten(0, 1).float()  # (P·3, L, L) over the padded square
            iou = out.iou_scores[0].flatten().float()
            valid = low_res_valid_size(low.shape[-1], self.input_size, resized)
            scores, stability = candidate_scores(low[:, : valid[0], : valid[1]], iou, c)
            i = int(torch.argmax(scores))
            if float(scores[i]) > best[0]:
                best = (float(scores[i]), low[i], float(iou[i]), float(stability[i]))
        if best[0] == -math.inf:
            raise UserError(
                f"segmentation found no object: none of SAM's {len(prompts) * 3} candidate masks covers between "
                f"{c.min_area:.1%} and {c.max_area:.0%} of the photo; give a --point on the object or a --box"
            )
        return best[1], best[2], best[3]

    def _model_coords(self, xy: Tensor) -> Tensor:
        return xy.to(self.device, self.dtype)


def load_sam(name_or_path: str, where: str = "--sam") -> tuple[Any, tuple[float, ...], tuple[float, ...]]:
    """(``SamModel`` in fp32 on the CPU, eval; pixel mean; pixel std) from a directory, hub id or ``.pth``."""
    location = locate_sam(name_or_path, where)
    if os.path.isfile(location):
        return load_original_sam(location, where), IMAGENET_MEAN, IMAGENET_STD
    from transformers import AutoImageProcessor, SamModel

    model = SamModel.from_pretrained(location, local_files_only=True).eval()
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if any(os.path.isfile(os.path.join(location, f)) for f in ("preprocessor_config.json", "processor_config.json")):
        processor = AutoImageProcessor.from_pretrained(location, local_files_only=True)
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    return model, mean, std


def mirror_points(points: Sequence[Point], width: int) -> list[Point]:
    """Point prompts (pixel x, y) on the photo mirrored left-right: x → width − 1 − x."""
    return [(width - 1 - x, y) for x, y in points]


def mirror_box(box: Optional[Box], width: int) -> Optional[Box]:
    """A box prompt (x0, y0, x1, y1; x1 past the last column) on the photo mirrored left-right."""
    return None if box is None else (width - box[2], box[1], width - box[0], box[3])


def upscale_logits(low: Tensor, input_size: int, resized: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """(B,C,L,L) low-resolution mask logits → (B,C,H,W) at the photo's ``size``: upsampled to the
    padded encoder square, cropped to the ``resized`` image, resized to the photo (bilinear)."""
    x = F.interpolate(low.float(), (input_size, input_size), mode="bilinear", align_corners=False)
    x = x[..., : resized[0], : resized[1]]
    return F.interpolate(x, size, mode="bilinear", align_corners=False)


def low_res_valid_size(low_res: int, input_size: int, resized: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the part of a ``low_res``² logit map that covers the image (not the padding)."""
    return (math.ceil(resized[0] * low_res / input_size), math.ceil(resized[1] * low_res / input_size))


def stability_score(logits: Tensor, offset: float) -> Tensor:
    """SAM's stability: |logits > offset| / |logits > −offset| over the last two dims (0 when empty)."""
    inner = (logits > offset).sum(dim=(-2, -1)).float()
    outer = (logits > -offset).sum(dim=(-2, -1)).float()
    return inner / outer.clamp(min=1.0)


def candidate_scores(logits: Tensor, iou: Tensor, cfg: SamSegmenter.Config) -> tuple[Tensor, Tensor]:
    """(scores (N,), stability (N,)) of candidate masks ``logits`` (N,h,w) over the image with SAM's
    predicted ``iou`` (N,): the automatic mode's score (module docstring), −inf for masks outside
    the area bounds."""
    n, h, w = logits.shape
    mask = (logits > 0).float()
    area = mask.mean(dim=(-2, -1))
    stability = stability_score(logits, cfg.stability_offset)
    count = mask.sum(dim=(-2, -1)).clamp(min=1.0)
    ys = (torch.arange(h, dtype=torch.float32, device=logits.device) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32, device=logits.device) + 0.5) / w
    cy = (mask.sum(dim=-1) * ys).sum(dim=-1) / count
    cx = (mask.sum(dim=-2) * xs).sum(dim=-1) / count
    centre = torch.exp(-((cx - 0.5) ** 2 + (cy - 0.5) ** 2) / (2 * cfg.centre_sigma**2))
    border = torch.cat([mask[:, 0, :], mask[:, -1, :], mask[:, 1:-1, 0], mask[:, 1:-1, -1]], dim=-1).mean(dim=-1)
    scores = iou.clamp(0.0, 1.0) * stability * centre * (1.0 - border)
    outside = (area < cfg.min_area) | (area > cfg.max_area)
    return scores.masked_fill(outside, -math.inf), stability
