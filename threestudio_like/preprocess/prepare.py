"""``prepare=photo``: a run's image-to-3D inputs made from an ordinary photo (Anything-3D).

The photo goes through :class:`~.pipeline.PhotoPreprocessor` (SAM cut-out with the run's
``point=``/``box=`` prompts or automatic, framing, BLIP caption, monocular depth) and, unless the
elevation is given, :class:`~.elevation.ElevationEstimator` (the Zero123 prior); the run then uses

* ``image`` = ``<photo>_rgba.png`` and ``depth`` = ``<photo>_depth.npy`` (from ``<run>/preprocess/``);
* ``prompt`` = the caption, unless the run has a prompt (then BLIP is not run);
* ``reference.elevation_deg`` = the estimate, unless it is given.

How the run directory and the config take these updates: :mod:`threestudio_like.core.prepare`.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from ..core.errors import UserError
from ..core.prepare import InputPreparer, PreparedInputs
from .elevation import ElevationEstimator
from .pipeline import PhotoPreprocessor
from .segment import Box, Point


class PrepareInputs(InputPreparer):
    """``PrepareInputs(cfg).prepare(directory) -> PreparedInputs`` (see the module docstring)."""

    @dataclass
    class Config:
        photo: Optional[str] = None
        """The photo (``${image}``)."""
        point: Optional[list] = None
        """SAM point prompt(s) in photo pixels (x right, y down): ``[x, y]`` or ``[[x1, y1], [x2, y2]]``."""
        box: Optional[list] = None
        """A box around the object in photo pixels: ``[x0, y0, x1, y1]``."""
        prompt: str = ""
        """The run's text prompt (``${prompt}``); empty: the caption becomes the prompt."""
        preprocess: PhotoPreprocessor.Config = field(default_factory=PhotoPreprocessor.Config)
        """:class:`~.pipeline.PhotoPreprocessor`'s settings (cut-out, framing, caption, depth); its
        ``elevation_deg`` given: no estimate."""
        elevation: ElevationEstimator.Config = field(default_factory=ElevationEstimator.Config)
        """The elevation estimate (used when ``preprocess.elevation_deg`` is null)."""

    def __init__(self, cfg: Any = None, where: str = "prepare") -> None:
        c = self.parse_config(cfg, where)
        if not c.photo:
            raise UserError("no photo to prepare the inputs from: add image=PHOTO")
        self.points = parse_points(c.point)
        self.box = parse_box(c.box)
        settings = c.preprocess
        # a given prompt replaces the caption: BLIP is not run
        self.preprocessor_cfg = replace(settings, caption=settings.caption and not c.prompt.strip())
        self.estimator = (
            ElevationEstimator(c.elevation, where=f"{where}.elevation") if settings.elevation_deg is None else None
        )

    def prepare(self, directory: Path) -> PreparedInputs:
        c = self.cfg
        preprocessor = PhotoPreprocessor(
            asdict(self.preprocessor_cfg), log=_progress, estimate_elevation=self.estimator
        )
        result = preprocessor.run(c.photo, directory, self.points, self.box)
        _progress("(staged: these files move into <run directory>/preprocess/ when the run starts)")
        prepared = PreparedInputs(files={"image": result.files["rgba"].name})
        if "depth" in result.files:
            prepared.files["depth"] = result.files["depth"].name
        if self.preprocessor_cfg.caption:
            prepared.values["prompt"] = result.record["caption"]
        if self.estimator is not None:
            prepared.values["reference.elevation_deg"] = result.record["elevation"]
        return prepared


def parse_points(value: Optional[list]) -> list[Point]:
    """``None``, ``[x, y]`` or ``[[x, y], …]`` → a list of (x, y); anything else is a UserError."""
    if value is None:
        return []
    pairs = [value] if len(value) == 2 and all(_is_number(v) for v in value) else value
    if not pairs or not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(map(_is_number, p)) for p in pairs):
        raise UserError(f"point= takes [X,Y] or [[X1,Y1],[X2,Y2],…] (photo pixels), got {value}")
    return [(float(x), float(y)) for x, y in pairs]


def parse_box(value: Optional[list]) -> Optional[Box]:
    if value is None:
        return None
    if len(value) != 4 or not all(map(_is_number, value)):
        raise UserError(f"box= takes [X0,Y0,X1,Y1] (photo pixels), got {value}")
    x0, y0, x1, y1 = (float(v) for v in value)
    return x0, y0, x1, y1


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _progress(message: str) -> None:
    print(f"preprocess: {message}", file=sys.stderr, flush=True)
