"""Surface geometries (rasterized): a shared base with the appearance field, and a fixed mesh.

:class:`FieldSurface` is the base of :class:`ExplicitMesh` and ``DMTetGeometry``: a triangle
mesh from ``mesh()`` plus an appearance field ``feature_network(encoding(u))`` at surface points
(``u = (p / radius + 1) / 2``, the same contraction as the volumes, so a volume's colour field
can be moved over unchanged). ``forward(points (N,3)) -> GeometryOutput(features (N,F))``;
normals come from the mesh, not from the field.

:class:`ExplicitMesh` loads an OBJ/GLB/PLY (anything trimesh reads), optionally turns a +Y-up
file into our +Z-up world (:func:`~threestudio_like.export.axes.from_up_axis`), centres its
bounding box on the origin and scales it so that its largest half-extent is
``normalize_extent * radius``. The mesh is fixed (buffers, saved in checkpoints); only the
appearance field trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..core.config import NonNegativeInt, PositiveFloat, PositiveInt, parse_structured
from ..core.errors import UserError
from ..export.axes import UpAxis, from_up_axis
from ..ops.encodings import ProgressiveBandHashGrid, make_encoding
from ..ops.mlp import MLP
from .base import FieldGeometry, Geometry, GeometryOutput, Mesh, SurfaceGeometry, contract_to_unit


class FieldSurface(FieldGeometry, SurfaceGeometry):
    """Base of the mesh geometries: ``mesh()``, ``isosurface()`` (= ``mesh()``), appearance field."""

    def __init__(self, cfg=None, where: str = "geometry") -> None:
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        self.where = where
        c = self.cfg
        self.encoding = make_encoding(self.encoding_config(), 3, where=f"{where}.pos_encoding_config")
        self.feature_network = MLP(
            self.encoding.n_output_dims, c.n_feature_dims, c.mlp_network_config, where=f"{where}.mlp_network_config"
        )

    def forward(self, points: Tensor, output_normal: bool = False) -> GeometryOutput:
        """points (N,3) world → features (N,F); density and normal are None (take normals from
        the mesh)."""
        enc = self.encoding(contract_to_unit(points, self.cfg.radius))
        return GeometryOutput(features=self.feature_network(enc))

    # ---- stage hand-off helpers -------------------------------------------------------------
    @classmethod
    def _config_with_appearance_of(cls, other: Geometry, cfg: Any, where: str) -> Any:
        """``cfg`` parsed, with ``radius``, ``n_feature_dims``, ``pos_encoding_config`` and
        ``mlp_network_config`` taken from ``other`` (when it has an appearance field) so that
        its appearance field can be copied."""
        c = parse_structured(cls.Config, cfg, where)
        if not isinstance(other, FieldGeometry):
            return c
        return dataclasses.replace(
            c,
            radius=float(other.cfg.radius),
            n_feature_dims=int(other.cfg.n_feature_dims),
            pos_encoding_config=_continued_encoding(other),
            mlp_network_config=dict(other.cfg.mlp_network_config),
        )

    def copy_appearance_from(self, other: Geometry) -> None:
        """Copy ``other``'s encoding and feature MLP weights (same architecture required), when
        it has an appearance field."""
        if isinstance(other, FieldGeometry):
            self.encoding.load_state_dict(other.encoding.state_dict())
            self.feature_network.load_state_dict(other.feature_network.state_dict())


def _continued_encoding(other: FieldGeometry) -> dict[str, Any]:
    """``other``'s encoding config for the next stage. A progressive-band hash grid continues
    from the level it had reached (the next stage restarts its step count, which would otherwise
    switch fine levels off again and change the colours at the hand-off)."""
    encoding = other.encoding_config()
    if isinstance(other.encoding, ProgressiveBandHashGrid):
        encoding.update(start_level=int(other.encoding.current_level), start_step=0)
    return encoding


def load_mesh_file(path: str | Path, where: str = "geometry") -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V,3) float64, faces (F,3) int64) of the triangles in an OBJ/GLB/PLY/... file
    (a scene's meshes are concatenated)."""
    import trimesh

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{where}.mesh_path: no file at '{path}'; give the path of an OBJ, GLB or PLY mesh")
    try:
        loaded = trimesh.load(str(p), force="mesh")
    except Exception as e:  # trimesh raises assorted types for unreadable files
        raise UserError(f"{where}.mesh_path: cannot read '{path}' as a mesh ({type(e).__name__}: {e})") from None
    faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    if faces.shape[0] == 0:
        raise UserError(f"{where}.mesh_path: '{path}' holds no triangles; give a triangle mesh (OBJ, GLB, PLY)")
    return np.asarray(loaded.vertices, dtype=np.float64).reshape(-1, 3), faces


def normalize_vertices(v: Tensor, radius: float, extent: float, up_axis: str) -> Tensor:
    """Up-axis conversion, then centre the bounding box and scale the largest half-extent to
    ``extent * radius``."""
    v = from_up_axis(v, up_axis)
    lo, hi = v.min(0).values, v.max(0).values
    half = float((hi - lo).max()) / 2
    if half <= 0:
        raise UserError("the mesh has zero extent (all vertices coincide); give a mesh with some size")
    return (v - (lo + hi) / 2) * (extent * radius / half)


class ExplicitMesh(FieldSurface):
    """A fixed triangle mesh with a trainable appearance field (texture stages)."""

    @dataclass
    class Config(FieldSurface.Config):
        mesh_path: str = ""
        """OBJ/GLB/PLY file to load (empty when the mesh comes from create_from or a checkpoint)."""
        up_axis: UpAxis = "+Z"
        """Up axis of the file: +Z (ours) | +Y (glTF, most DCC exports), converted to +Z."""
        normalize: bool = True
        """Centre the loaded mesh and scale it into the scene box."""
        normalize_extent: float = 0.8
        """After normalising, the largest half-extent is this fraction of radius."""
        appearance_fit_steps: NonNegativeInt = 300
        """create_from a geometry without an appearance field (Gaussians): Adam steps fitting this
        field to the other geometry's features at points sampled on the surface (0: start untrained)."""
        appearance_fit_points: PositiveInt = 65536
        """Surface points where the other geometry's features are read (once)."""
        appearance_fit_batch: PositiveInt = 8192
        """Of those, points per fitting step."""
        appearance_fit_lr: PositiveFloat = 0.01
        """Learning rate of the fit."""

    def __init__(self, cfg=None, where: str = "geometry", mesh: Optional[Mesh] = None) -> None:
        super().__init__(cfg, where)
        c = self.cfg
        if mesh is not None:
            v, f = mesh.v_pos.detach().float(), mesh.t_pos_idx.detach().long()
        elif c.mesh_path:
            v_np, f_np = load_mesh_file(c.mesh_path, where)
            v, f = torch.from_numpy(v_np), torch.from_numpy(f_np)
            if c.normalize:
                v = normalize_vertices(v, c.radius, c.normalize_extent, c.up_axis)
            else:
                v = from_up_axis(v, c.up_axis)
            v = v.float()
        else:  # filled by load_state_dict
            v, f = torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64)
        self.register_buffer("v_pos", v)
        self.register_buffer("t_pos_idx", f)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for name in ("v_pos", "t_pos_idx"):  # the mesh's size comes from the checkpoint
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def mesh(self) -> Mesh:
        """The fixed mesh: v_pos (V,3), t_pos_idx (F,3)."""
        if self.t_pos_idx.shape[0] == 0:
            raise UserError(
                f"{self.where}: this ExplicitMesh has no mesh; set mesh_path or build it from a "
                "previous stage (geometry_init=previous)"
            )
        return Mesh(v_pos=self.v_pos, t_pos_idx=self.t_pos_idx)

    @classmethod
    def create_from(cls, other: Geometry, cfg=None, where: str = "geometry") -> ExplicitMesh:
        """From another ExplicitMesh: a copy (mesh and appearance). From any other geometry: its
        ``isosurface()`` (detached; DMTet's deformed marching-tets mesh, a volume's marching-cubes
        mesh), with its appearance field (encoding + feature MLP weights, and the configs and
        radius they need) when it has one. ``mesh_path`` is ignored."""
        c = cls._config_with_appearance_of(other, cfg, where)
        mesh = other.isosurface()
        with torch.no_grad():
            mesh = Mesh(v_pos=mesh.v_pos.detach().clone(), t_pos_idx=mesh.t_pos_idx.detach().clone())
        instance = cls(dataclasses.replace(c, mesh_path=""), where=where, mesh=mesh).to(mesh.v_pos.device)
        if isinstance(other, FieldGeometry):
            instance.copy_appearance_from(other)
        else:
            instance.fit_appearance_to(other)
        return instance

    def fit_appearance_to(self, other: Geometry) -> None:
        """Train this appearance field to reproduce ``other(points).features`` on the mesh
        (``appearance_fit_*``): the hand-off from a geometry whose appearance is no field."""
        c, mesh = self.cfg, self.mesh()
        if c.appearance_fit_steps == 0 or mesh.num_faces == 0:
            return
        points = mesh.sample_surface(c.appearance_fit_points)
        with torch.no_grad():
            targets = other(points).features
        params = [*self.encoding.parameters(), *self.feature_network.parameters()]
        optimizer = torch.optim.Adam(params, lr=c.appearance_fit_lr)
        for _ in range(c.appearance_fit_steps):
            batch = torch.randint(0, points.shape[0], (c.appearance_fit_batch,), device=points.device)
            loss = torch.nn.functional.mse_loss(self(points[batch]).features, targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
