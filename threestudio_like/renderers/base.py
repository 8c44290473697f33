"""The renderer interface and the typed result every renderer returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import Tensor, nn

from ..background.base import Background
from ..core.config import Configurable
from ..core.schedule import Updateable
from ..data.cameras import CameraBatch
from ..geometry.base import Geometry
from ..materials.base import Material


@dataclass
class RenderOutput:
    """Images of a :class:`~threestudio_like.data.cameras.CameraBatch` (B views, H×W).

    ``rgb`` (B,H,W,3) in [0,1] composited over the background; ``opacity`` (B,H,W,1);
    ``depth`` (B,H,W,1) distance along the ray (0 where empty); ``normal`` (B,H,W,3) world
    normals in [-1,1] (None if not computed); ``extras`` holds what regularizers need
    (volume: ``weights`` (S,1), ``t_mid``/``intervals`` (S,1), ``ray_indices`` (S,),
    ``normal_points`` (S,3), ``dirs`` (S,3); raster: ``mesh``) documented by each renderer.
    """

    rgb: Tensor
    opacity: Tensor
    depth: Tensor
    normal: Optional[Tensor] = None
    extras: dict = field(default_factory=dict)


class Renderer(Configurable, Updateable, nn.Module):
    """What the system calls: ``renderer(cameras, geometry, material, background, shading)``
    → :class:`RenderOutput` (``renderers/volume.py``, ``renderers/raster.py``)."""

    def forward(
        self,
        cameras: CameraBatch,
        geometry: Geometry,
        material: Material,
        background: Background,
        shading: str = "diffuse",
    ) -> RenderOutput:
        raise NotImplementedError
