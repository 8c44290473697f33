"""The fixed orbit ``threestudio-like eval`` renders a run's final model on.

``n_views`` cameras evenly spaced in azimuth starting at the front (azimuth 0°, +X), at
:data:`ELEVATION_DEG` above the horizon, looking at the origin, at the run's evaluation distance
and field of view (``data.eval_distance``, ``data.eval_fovy_deg``: every experiment frames its
object the same way for its validation and turntable) — so runs of one experiment, and of
experiments that frame alike, are rendered from the same viewpoints. An even ``n_views`` has a
view exactly at the back (180°), the one the Janus indicator scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.cameras import CameraBatch, orbit_cameras

ELEVATION_DEG = 15.0
"""Elevation of every orbit view."""
CHUNK = 4
"""Views rendered at a time."""


@dataclass(frozen=True)
class EvalOrbit:
    """The orbit's cameras (see module docstring)."""

    n_views: int
    """Views, evenly spaced in azimuth from 0°."""
    distance: float
    """Camera distance from the origin."""
    fovy_deg: float
    """Vertical field of view in degrees."""
    height: int
    """Image height in pixels."""
    width: int
    """Image width in pixels."""
    elevation_deg: float = ELEVATION_DEG
    """Elevation of the views in degrees."""

    @classmethod
    def of_system(cls, system: Any, n_views: int, size: int = 0) -> EvalOrbit:
        """The orbit at a system's evaluation distance and field of view; ``size`` pixels square,
        or (0) the system's evaluation resolution."""
        c = system.data.cfg
        h, w = (size, size) if size > 0 else (int(c.eval_height), int(c.eval_width))
        return cls(n_views, float(c.eval_distance), float(c.eval_fovy_deg), h, w)

    def cameras(self, device: torch.device | str = "cpu") -> CameraBatch:
        return orbit_cameras(
            self.n_views, self.elevation_deg, self.distance, self.fovy_deg, self.height, self.width, device=device
        )

    @property
    def back_view(self) -> int:
        """Index of the view nearest azimuth 180°."""
        return round(self.n_views / 2) % self.n_views

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def render_orbit(system: Any, cameras: CameraBatch) -> dict[str, Tensor]:
    """The system's renders of ``cameras`` in eval mode: ``rgb`` (N,H,W,3) in [0,1], ``opacity``
    and ``depth`` (N,H,W,1), on the CPU."""
    was_training = system.training
    system.eval()
    out: dict[str, list[Tensor]] = {"rgb": [], "opacity": [], "depth": []}
    try:
        for i in range(0, cameras.batch_size, CHUNK):
            r = system.render(cameras.index(slice(i, i + CHUNK)))
            out["rgb"].append(r.rgb.clamp(0, 1).cpu())
            out["opacity"].append(r.opacity.cpu())
            out["depth"].append(r.depth.cpu())
    finally:
        system.train(was_training)
    return {k: torch.cat(v) for k, v in out.items()}
