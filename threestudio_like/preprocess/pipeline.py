"""A photo → the inputs of image-to-3D: cut-out, mask, depth, caption, and a record of how.

:meth:`PhotoPreprocessor.run` reads top to bottom:

1. read the photo (:mod:`.photo`) and check the prompts lie inside it;
2. locate every model it will use (json files only) and check the output directory, so a missing
   model or an unwritable directory is refused before any work, and nothing is written;
3. the mask: SAM (:mod:`.segment`) — or the photo's own alpha channel when it is a cut-out and
   neither a prompt nor ``segment`` asks for SAM; cleaned (:mod:`.masks`): the largest component,
   and for SAM's masks holes filled and the edge feathered;
4. the framing (:mod:`.framing`): the object centred, its longer side ``fill`` of the frame;
5. the caption (:mod:`.caption`) of the framed object on white (as Anything-3D captions it);
6. the disparity (:mod:`.depth`) of the framed photo, background included (context helps the
   estimate), then masked: object pixels scaled to [0, 1], background 0;
7. the elevation of the photo's view: ``elevation_deg`` when given, else ``estimate_elevation(rgba)``
   when an estimator is given (:class:`~.elevation.ElevationEstimator`: the Zero123 prior), else null;
8. write ``<name>_rgba.png``, ``_mask.png``, ``_depth.npy`` + ``_depth.png`` (16-bit),
   ``_caption.txt`` and ``_preprocess.json``, each atomically.

The models are loaded one at a time and released after use, so SAM ViT-H, BLIP-large and DPT
never occupy memory together.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence

import numpy as np

from .. import __version__
from ..core.atomic import atomic_write, atomic_write_text
from ..core.config import NonNegativeFloat, Range, parse_structured
from ..core.errors import UserError
from .caption import Captioner, locate_captioner
from .depth import DepthEstimator, locate_depth_model
from .elevation import ElevationEstimate
from .framing import Framing, frame_object
from .masks import bounding_box, clean_mask, feather, largest_component
from .photo import OPAQUE, Photo, load_photo
from .segment import Box, Point, SamSegmenter, Segmentation, locate_sam

MODEL_INPUT_SIZE = 512
"""Side of the framed images the captioner and the depth model see (their processors resize them)."""
EstimateElevation = Callable[[np.ndarray], "float | ElevationEstimate"]
"""(size,size,4) float RGBA in [0,1], object centred → elevation of the view in degrees, or an
:class:`~.elevation.ElevationEstimate` (its details go into the json)."""
NO_ELEVATION = (
    "not estimated (--zero123 MODEL estimates it with the Zero123 prior; --elevation DEG records a "
    "known one); give the photo's elevation to an image-to-3D run with reference.elevation_deg=DEG"
)


@dataclass
class PreprocessResult:
    """The files written and the record saved in ``<name>_preprocess.json``."""

    files: dict[str, Path]
    record: dict[str, Any]


class PhotoPreprocessor:
    """``PhotoPreprocessor(cfg).run(photo, out_dir, points, box)`` (see the module docstring)."""

    @dataclass
    class Config:
        size: Annotated[int, Range(ge=16)] = 256
        """Side of the output images, in pixels (Zero123's input size)."""
        fill: Annotated[float, Range(gt=0, le=1)] = 0.8
        """Fraction of the frame spanned by the object's longer side (Zero123/threestudio recentring)."""
        feather: NonNegativeFloat = 1.0
        """Gaussian blur of the alpha edge of a SAM mask, in output pixels (0: none)."""
        segment: bool = False
        """Segment with SAM even when the photo's alpha channel already cuts the object out."""
        caption: bool = True
        """Caption the object with BLIP (<name>_caption.txt)."""
        depth: bool = True
        """Estimate the object's monocular depth (<name>_depth.npy and .png)."""
        elevation_deg: Optional[Annotated[float, Range(gt=-90, lt=90)]] = None
        """The photo's elevation in degrees when it is known: recorded as given, nothing estimated."""
        segmenter: SamSegmenter.Config = field(default_factory=SamSegmenter.Config)
        captioner: Captioner.Config = field(default_factory=Captioner.Config)
        depth_estimator: DepthEstimator.Config = field(default_factory=DepthEstimator.Config)

    def __init__(
        self,
        cfg: Any = None,
        log: Callable[[str], None] = print,
        estimate_elevation: Optional[EstimateElevation] = None,
    ) -> None:
        self.cfg = parse_structured(self.Config, cfg)
        self.log = log
        self.estimate_elevation = estimate_elevation

    def run(
        self,
        photo_path: str | Path,
        out_dir: Optional[str | Path] = None,
        points: Sequence[Point] = (),
        box: Optional[Box] = None,
    ) -> PreprocessResult:
        c = self.cfg
        # 1. the photo and the prompts
        photo = load_photo(photo_path)
        check_prompts(points, box, photo.width, photo.height)
        alpha = "cut-out, alpha" if photo.has_cutout else "alpha unused" if photo.alpha is not None else "no alpha"
        self.log(f"{photo.path.name}: {photo.width}×{photo.height} {photo.mode} ({alpha})")
        use_sam = c.segment or bool(points) or box is not None or not photo.has_cutout
        out = Path(out_dir) if out_dir is not None else photo.path.parent

        # 2. every model it will need and the output directory, before any work
        models = self.locate_models(use_sam)
        check_output_dir(out)

        # 3. the mask
        if not use_sam:
            self.log("the photo's alpha channel cuts the object out: no SAM (--segment to use SAM)")
        segmentation = self.segment(photo, points, box) if use_sam else None
        mask, alpha_source = object_mask(photo, segmentation)
        object_box = bounding_box(mask)
        self.log(f"object: {mask.mean():.1%} of the photo, box {','.join(map(str, object_box))}")

        # 4. the framing
        framing = frame_object(object_box, c.fill, c.size)
        rgba = self.framed_rgba(photo, alpha_source, framing, feathered=use_sam)
        framed_mask = rgba[..., 3] >= OPAQUE

        # 5. the caption, 6. the depth, 7. the elevation
        caption = self.caption(photo, alpha_source, framing) if c.caption else None
        disparity = self.disparity(photo, framing, framed_mask) if c.depth else None
        elevation, elevation_note, elevation_estimate = self.elevation(rgba)

        # 8. the files
        files = output_files(out, photo.path.stem, disparity is not None, caption is not None)
        record = {
            "version": __version__,
            "photo": str(photo.path.resolve()),
            "photo_size": [photo.width, photo.height],
            "photo_mode": photo.mode,
            "mask_source": "sam" if use_sam else "alpha",
            "prompts": None,
            "segmentation": None,
            "object_box": list(object_box),
            "crop_box": [round(v, 3) for v in framing.box],
            "size": c.size,
            "fill": c.fill,
            "caption": caption,
            "depth": None,
            "elevation": elevation,
            "elevation_note": elevation_note,
            "elevation_estimate": elevation_estimate,
            "models": models,
            "files": {k: p.name for k, p in files.items()},
        }
        if segmentation is not None:
            box_list = list(box) if box is not None else None
            record["prompts"] = {"mode": segmentation.prompt, "points": [list(p) for p in points], "box": box_list}
            record["segmentation"] = {"predicted_iou": segmentation.predicted_iou, "stability": segmentation.stability}
        if disparity is not None:
            record["depth"] = {"kind": "disparity", "values": "object scaled to [0, 1] (1 = nearest), background 0"}
        write_outputs(files, rgba, framed_mask, disparity, caption, record)
        self.log(f"wrote {', '.join(str(p) for p in files.values())}")
        return PreprocessResult(files=files, record=record)

    def locate_models(self, use_sam: bool) -> dict[str, Any]:
        """The models this run will load (as given, and where they are), located without loading them."""
        c = self.cfg
        models: dict[str, Any] = {}
        if use_sam:
            models["sam"] = {"model": c.segmenter.model, "path": locate_sam(c.segmenter.model)}
        if c.caption:
            models["blip"] = {"model": c.captioner.model, "path": locate_captioner(c.captioner.model)[0]}
        if c.depth:
            models["depth"] = {"model": c.depth_estimator.model, "path": locate_depth_model(c.depth_estimator.model)}
        return models

    def segment(self, photo: Photo, points: Sequence[Point], box: Optional[Box]) -> Segmentation:
        how = describe_prompts(points, box, self.cfg.segmenter.points_per_side)
        self.log(f"segmenting with SAM {self.cfg.segmenter.model} ({how})")
        rgb = photo.on_white() if photo.has_cutout else photo.rgb
        return SamSegmenter(self.cfg.segmenter).segment(rgb, points, box)

    def elevation(self, rgba: np.ndarray) -> tuple[Optional[float], str, Optional[dict[str, Any]]]:
        """(elevation in degrees or None, how it was obtained, the estimator's record or None)."""
        if self.cfg.elevation_deg is not None:
            self.log(f"elevation: {self.cfg.elevation_deg:g}° (given)")
            return self.cfg.elevation_deg, "given", None
        if self.estimate_elevation is None:
            return None, NO_ELEVATION, None
        self.log("estimating the elevation of the view")
        result = self.estimate_elevation(rgba)
        self.log(f"elevation: {float(result):g}° (estimated)")
        details = result.record() if isinstance(result, ElevationEstimate) else None
        return float(result), "estimated", details

    def framed_rgba(self, photo: Photo, alpha_source: np.ndarray, framing: Framing, feathered: bool) -> np.ndarray:
        """(size,size,4) float RGBA in [0,1]: the photo's colours, the object's alpha (feathered for SAM's masks)."""
        rgb = np.clip(framing.apply(photo.rgb / 255.0, "lanczos"), 0.0, 1.0)
        alpha = framing.apply(alpha_source, "bilinear")
        if feathered:
            alpha = feather(alpha, self.cfg.feather)
        return np.concatenate([rgb, alpha[..., None]], axis=-1)

    def caption(self, photo: Photo, alpha_source: np.ndarray, framing: Framing) -> str:
        """BLIP's caption of the framed object over white."""
        self.log(f"captioning with {self.cfg.captioner.model}")
        model_framing = Framing(framing.box, MODEL_INPUT_SIZE)
        rgb = model_framing.apply(photo.rgb / 255.0, "lanczos").clip(0.0, 1.0)
        a = model_framing.apply(alpha_source, "bilinear")[..., None]
        caption = Captioner(self.cfg.captioner).caption(np.round((rgb * a + (1.0 - a)) * 255.0).astype(np.uint8))
        self.log(f'caption: "{caption}"' if caption else "caption: (empty) — give the prompt yourself")
        return caption

    def disparity(self, photo: Photo, framing: Framing, mask: np.ndarray) -> np.ndarray:
        """(size,size) disparity of the framed photo (background included), masked and scaled on the object."""
        self.log(f"depth with {self.cfg.depth_estimator.model}")
        model_framing = Framing(framing.box, MODEL_INPUT_SIZE)
        rgb = np.round(model_framing.apply(photo.rgb, "lanczos", pad="edge").clip(0, 255)).astype(np.uint8)
        disparity = DepthEstimator(self.cfg.depth_estimator).disparity(rgb)
        whole = Framing((0.0, 0.0, float(MODEL_INPUT_SIZE), float(MODEL_INPUT_SIZE)), self.cfg.size)  # a resize
        return normalize_on_object(whole.apply(disparity, "bilinear"), mask)


def object_mask(photo: Photo, segmentation: Optional[Segmentation]) -> tuple[np.ndarray, np.ndarray]:
    """(the object's mask (H,W) bool, its alpha (H,W) float): SAM's mask cleaned (largest component,
    holes filled), or the photo's alpha restricted to its largest opaque component. UserError if empty."""
    if segmentation is not None:
        mask = clean_mask(segmentation.mask)
        alpha = mask.astype(np.float32)
    else:
        mask = largest_component(photo.alpha >= OPAQUE)
        alpha = photo.alpha * mask
    if not mask.any():
        raise UserError(
            f"segmentation found nothing in {photo.path}: the mask is empty; "
            "give a --point on the object or a --box around it"
        )
    return mask, alpha


def output_files(out: Path, name: str, depth: bool, caption: bool) -> dict[str, Path]:
    files = {"rgba": out / f"{name}_rgba.png", "mask": out / f"{name}_mask.png"}
    if depth:
        files["depth"], files["depth_preview"] = out / f"{name}_depth.npy", out / f"{name}_depth.png"
    if caption:
        files["caption"] = out / f"{name}_caption.txt"
    files["record"] = out / f"{name}_preprocess.json"
    return files


def check_prompts(points: Sequence[Point], box: Optional[Box], width: int, height: int) -> None:
    """Every point inside the photo, the box non-empty and inside it (photo pixels, x right, y down)."""
    inside = f"the photo is {width}×{height}: x in [0, {width}), y in [0, {height})"
    for x, y in points:
        if not (0 <= x < width and 0 <= y < height):
            raise UserError(f"--point {x:g},{y:g} is outside the photo ({inside})")
    if box is not None:
        x0, y0, x1, y1 = box
        if not (x0 < x1 and y0 < y1):
            raise UserError(f"--box {x0:g},{y0:g},{x1:g},{y1:g} is empty: it needs x0 < x1 and y0 < y1")
        if not (x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height):
            raise UserError(
                f"--box {x0:g},{y0:g},{x1:g},{y1:g} is outside the photo ({inside}; x1 ≤ {width}, y1 ≤ {height})"
            )


def describe_prompts(points: Sequence[Point], box: Optional[Box], points_per_side: int) -> str:
    shown = [f"point {x:g},{y:g}" for x, y in points] + ([f"box {','.join(f'{v:g}' for v in box)}"] if box else [])
    return ", ".join(shown) if shown else f"automatic: {points_per_side}×{points_per_side} point prompts"


def check_output_dir(out: Path) -> None:
    """``out`` exists as a writable directory or can be created (nothing is created here)."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create the output directory {out}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into the output directory {out}: {existing} is not writable")


def normalize_on_object(disparity: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Object pixels scaled to [0, 1] (a flat object: 1), background 0; (H,W) float32."""
    values = disparity[mask]
    low, high = float(values.min()), float(values.max())
    scaled = (disparity - low) / (high - low) if high > low else np.ones_like(disparity)
    return np.where(mask, scaled, 0.0).astype(np.float32)


def write_outputs(
    files: dict[str, Path],
    rgba: np.ndarray,
    mask: np.ndarray,
    disparity: Optional[np.ndarray],
    caption: Optional[str],
    record: dict[str, Any],
) -> None:
    """Write every file of :meth:`PhotoPreprocessor.run` atomically (the directory is created here)."""
    from ..export.image_io import write_png

    writes = {
        "rgba": lambda path: write_png(path, rgba),
        "mask": lambda path: write_png(path, mask.astype(np.float32)),
        "depth": lambda path: atomic_write(path, lambda f: np.save(f, disparity)),
        "depth_preview": lambda path: atomic_write(path, lambda f: _png16(disparity).save(f, format="PNG")),
        "caption": lambda path: atomic_write_text(path, f"{caption}\n"),
        "record": lambda path: atomic_write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n"),
    }
    for kind, path in files.items():
        try:
            writes[kind](path)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def _png16(values: np.ndarray) -> Any:
    """A PIL 16-bit greyscale image of ``values`` in [0, 1]."""
    from PIL import Image

    return Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 65535.0).astype(np.uint16))
