"""3D Gaussians (3DGS, DreamGaussian): a set of anisotropic Gaussians rendered by splatting.

Gaussian ``i`` has a centre ``mu_i``, a rotation ``R_i`` (unit quaternion, w x y z), axis scales
``s_i``, an opacity ``o_i`` and material features ``f_i``; its covariance is
``Sigma_i = R_i diag(s_i^2) R_i^T``. Parameters are stored raw, activated on use (3DGS's):

======================== ===================== ========================================
parameter (optimizer)    shape                 accessor the renderer reads
======================== ===================== ========================================
``means_raw``            (N,3) world           ``means`` (as is)
``scales_log``           (N,3) ``log s``       ``scales`` = ``exp`` (> 0)
``quats_raw``            (N,4) w x y z         ``quats`` = normalised
``opacities_logit``      (N,1)                 ``opacities`` = ``sigmoid``
``features_raw``         (N,F)                 ``features`` (raw: the material applies its
                                               activation, e.g. sigmoid albedo)
======================== ===================== ========================================

so the optimizer's per-prefix groups read ``geometry.means``, ``geometry.scales``,
``geometry.quats``, ``geometry.opacities``, ``geometry.features``. ``normals()`` is the unit axis
of each Gaussian's smallest scale.

* **Initialisation** (``init``): DreamGaussian's blob (``init_num_points`` uniform in a ball of
  ``init_radius``), a sphere shell, or a point cloud file (``points_path``, read with trimesh;
  vertex colours when present). Opacity ``init_opacity``; isotropic scale = ``init_scale`` or the
  root mean squared distance to the 3 nearest points (3DGS's ``distCUDA2``, here a chunked
  ``cdist``); identity rotations; colours stored as ``logit(rgb)`` (the sigmoid albedo of
  ``materials/base.py``), grey without colours. ``create_from(other)``: points sampled on
  ``other.isosurface()`` (area-weighted) with ``other(points).features``; from Gaussians, a copy.
* **Densification and pruning** (3DGS's rules, DreamGaussian's schedule): after each optimizer
  step the system calls :meth:`GaussianGeometry.add_densification_stats` (view-space gradient
  norms) while :meth:`~GaussianGeometry.densifying`, and
  :meth:`~GaussianGeometry.densify_and_prune`, which clones small Gaussians and splits large ones
  with a large mean gradient, prunes, resets opacities on its interval and resizes the
  optimizer's per-parameter state in place (see there). Parameters keep their identity; only
  their data change size, so the optimizer's param groups stay valid.
* **Checkpoints**: ``load_state_dict`` resizes the parameters to the checkpoint's N first. The
  densification statistics are transient (not saved): a resumed run starts collecting afresh.
* **Density** ``forward(points)``: ``sum_i o_i exp(-1/2 d^T Sigma_i^-1 d)`` over the Gaussians
  within ``density_cutoff`` Mahalanobis units of each point, found through a uniform grid of
  cells (:class:`GaussianSum`), and the density-weighted mean feature; ``isosurface()`` runs
  marching cubes on that density (DreamGaussian's ``extract_fields``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.config import NonNegativeInt, PositiveFloat, PositiveInt, Probability, Range, parse_structured
from ..core.errors import UserError
from ..export.axes import UpAxis, from_up_axis
from .base import Geometry, GeometryOutput, Mesh
from .explicit_mesh import normalize_vertices
from .isosurface import density_grid, extract_isosurface, resolve_threshold

PARAMETERS = ("means_raw", "scales_log", "quats_raw", "opacities_logit", "features_raw")
"""The per-Gaussian parameters (first dimension N), in the order new rows are built."""

SPLIT_CHILDREN = 2
"""A split Gaussian is replaced by this many samples of itself (3DGS's N)."""

SPLIT_SHRINK = 0.8 * SPLIT_CHILDREN
"""The children's scales are the parent's divided by this (3DGS: 0.8 N = 1.6)."""

MIN_SQ_DISTANCE = 1e-7
"""Floor on the squared neighbour distance of the initial scales (3DGS's clamp)."""

CELL_FRACTION = 0.25
"""Side of the density grid's cells relative to the median cutoff box width (smaller cells: fewer
Gaussians tested per point, more cells entered per Gaussian)."""

BOUNDS_MIN_OPACITY = 0.005
"""Gaussians below this opacity do not widen the isosurface grid (DreamGaussian's filter)."""


def quaternion_to_rotation(q: Tensor) -> Tensor:
    """Unit quaternions (N,4) w x y z → rotation matrices (N,3,3)."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def mean_sq_neighbour_distance(points: Tensor, k: int = 3, chunk: int = 2048) -> Tensor:
    """(N,) mean squared distance of each of ``points`` (N,3), N ≥ 2, to its ``k`` nearest other
    points (fewer when N ≤ k), floored at :data:`MIN_SQ_DISTANCE`; chunked ``cdist``, O(N²) time."""
    k = min(k, points.shape[0] - 1)
    out = []
    for rows in points.split(chunk):
        d2 = torch.cdist(rows, points, compute_mode="donot_use_mm_for_euclid_dist").square()
        out.append(d2.topk(k + 1, dim=1, largest=False).values[:, 1:].mean(1))  # the first is the point itself
    return torch.cat(out).clamp(min=MIN_SQ_DISTANCE)


def load_point_cloud(path: str, where: str) -> tuple[Tensor, Optional[Tensor]]:
    """(points (N,3) float32, colours (N,3) in [0,1] or None) of a point cloud or mesh file that
    trimesh reads (PLY, OBJ, GLB...): its vertices and their colours when it has any."""
    import trimesh

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{where}.points_path: no file at '{path}'; give the path of a point cloud (PLY)")
    try:
        loaded = trimesh.load(str(p))
    except Exception as e:  # trimesh raises assorted types for unreadable files
        raise UserError(f"{where}.points_path: cannot read '{path}' ({type(e).__name__}: {e})") from None
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.to_geometry()
    vertices = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float32).reshape(-1, 3)
    if vertices.shape[0] < 2:
        raise UserError(f"{where}.points_path: '{path}' holds {vertices.shape[0]} points; give at least 2")
    colors = getattr(loaded, "colors", None)  # a PointCloud's
    if colors is None and getattr(getattr(loaded, "visual", None), "kind", None) == "vertex":
        colors = loaded.visual.vertex_colors
    rgb = None
    if colors is not None and len(colors) == vertices.shape[0]:
        rgb = torch.from_numpy(np.asarray(colors, dtype=np.float32)[:, :3] / 255.0)
    return torch.from_numpy(vertices), rgb


class GaussianSum:
    """``density(p) = sum_i o_i exp(-1/2 (p - mu_i)^T A_i (p - mu_i))`` (``A_i = Sigma_i^-1``)
    over the Gaussians with ``(p - mu_i)^T A_i (p - mu_i) <= cutoff^2``, without an M×N loop.

    Each Gaussian is entered in the cells of a uniform grid that its cutoff ellipsoid's bounding
    box overlaps (half-width ``cutoff sqrt(Sigma_kk)`` on axis k); a point is tested against the
    Gaussians of its own cell only — every Gaussian whose ellipsoid holds the point is among them.
    Cells are :data:`CELL_FRACTION` of the median box width, coarsened until at most
    ``max_entries`` (Gaussian, cell) entries are made. Point–Gaussian pairs are evaluated in chunks
    of at most ``pair_chunk`` pairs. Differentiable in the Gaussians' tensors and the points."""

    def __init__(
        self,
        means: Tensor,
        inv_cov: Tensor,
        half_width: Tensor,
        opacities: Tensor,
        cutoff: float,
        features: Optional[Tensor] = None,
        max_entries: int = 1 << 22,
        pair_chunk: Optional[int] = None,
    ) -> None:
        upper = inv_cov.reshape(-1, 9)[:, [0, 1, 2, 4, 5, 8]]  # A_xx A_xy A_xz A_yy A_yz A_zz
        self.packed = torch.cat([means, upper, opacities.reshape(-1, 1)], dim=1)  # (N,10): one gather a pair
        self.features = features
        self.cutoff_sq = cutoff * cutoff
        # chunks that stay in a CPU's cache (measured fastest, 2^16 of 2^14..2^20); larger on a GPU
        self.pair_chunk = pair_chunk or (1 << 16 if means.device.type == "cpu" else 1 << 22)
        n = means.shape[0]
        with torch.no_grad():
            lo, hi = (means - half_width).detach(), (means + half_width).detach()
            self.origin = lo.amin(0) if n else means.new_zeros(3)
            top = hi.amax(0) if n else means.new_zeros(3)
            extent = float((top - self.origin).max()) if n else 0.0
            width = (hi - lo).amax(1)
            cell = max(CELL_FRACTION * float(width.median()) if n else 1.0, extent / 512, 1e-6)
            while True:
                first = torch.floor((lo - self.origin) / cell).long()
                span = torch.floor((hi - self.origin) / cell).long() - first + 1  # cells per axis
                per = span.prod(1)
                if int(per.sum()) <= max_entries:
                    break
                cell *= 1.5
            self.cell = cell
            self.dims = (torch.floor((top - self.origin) / cell).long() + 1).tolist()
            g = torch.repeat_interleave(torch.arange(n, device=means.device), per)
            local = torch.arange(g.shape[0], device=means.device) - (torch.cumsum(per, 0) - per)[g]
            sy, sz = span[g, 1], span[g, 2]
            ijk = first[g] + torch.stack([local // (sy * sz), (local // sz) % sy, local % sz], dim=1)
            key = self._key(ijk)
            order = torch.argsort(key, stable=True)
            self.gaussian_of_entry = g[order]
            self.cell_keys, self.cell_counts = torch.unique_consecutive(key[order], return_counts=True)
            self.cell_starts = torch.cumsum(self.cell_counts, 0) - self.cell_counts

    def _key(self, ijk: Tensor) -> Tensor:
        return (ijk[:, 0] * self.dims[1] + ijk[:, 1]) * self.dims[2] + ijk[:, 2]

    def _candidates(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """(count (M,), first entry (M,)) of the Gaussians listed in each point's cell."""
        ijk = torch.floor((points.detach() - self.origin) / self.cell).long()
        inside = ((ijk >= 0) & (ijk < torch.tensor(self.dims, device=ijk.device))).all(1)
        key = self._key(ijk.clamp(min=0))
        if self.cell_keys.shape[0] == 0:
            return torch.zeros_like(key), torch.zeros_like(key)
        pos = torch.searchsorted(self.cell_keys, key).clamp(max=self.cell_keys.shape[0] - 1)
        found = inside & (self.cell_keys[pos] == key)
        return torch.where(found, self.cell_counts[pos], 0), self.cell_starts[pos]

    def __call__(
        self, points: Tensor, with_features: bool = False, with_gradient: bool = False
    ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """points (M,3) → density (M,1), density-weighted feature sums (M,F) (None unless asked),
        density gradient d density / d p (M,3) (None unless asked)."""
        m = points.shape[0]
        count, start = self._candidates(points)
        density = points.new_zeros(m)
        feat = points.new_zeros(m, self.features.shape[1]) if with_features and self.features is not None else None
        grad = points.new_zeros(m, 3) if with_gradient else None
        ends = torch.cumsum(count, 0)
        i = 0
        while i < m:
            base = int(ends[i - 1]) if i else 0
            j = max(int(torch.searchsorted(ends, base + self.pair_chunk, right=True)), i + 1)
            j = min(j, m)
            self._accumulate(points, i, j, count[i:j], start[i:j], density, feat, grad)
            i = j
        return density[:, None], feat, grad

    def _accumulate(self, points, i, j, count, start, density, feat, grad) -> None:
        if int(count.sum()) == 0:
            return
        q = torch.repeat_interleave(torch.arange(j - i, device=points.device), count)
        rank = torch.arange(q.shape[0], device=points.device) - (torch.cumsum(count, 0) - count)[q]
        g = self.gaussian_of_entry[start[q] + rank]
        gp = self.packed.index_select(0, g)  # (P,10)
        d = points[i:j].index_select(0, q) - gp[:, :3]
        x, y, z = d.unbind(1)
        axx, axy, axz, ayy, ayz, azz, opacity = gp[:, 3:].unbind(1)
        ax, ay, az = axx * x + axy * y + axz * z, axy * x + ayy * y + ayz * z, axz * x + ayz * y + azz * z  # A d
        m2 = x * ax + y * ay + z * az
        w = torch.where(m2 <= self.cutoff_sq, opacity * torch.exp(-0.5 * m2.clamp(min=0)), 0.0)
        rows = q + i
        density.index_add_(0, rows, w)
        if feat is not None:
            feat.index_add_(0, rows, w[:, None] * self.features.index_select(0, g))
        if grad is not None:
            grad.index_add_(0, rows, -w[:, None] * torch.stack([ax, ay, az], dim=1))


@dataclass
class DensifyReport:
    """What one :meth:`GaussianGeometry.densify_and_prune` call did (for the metrics log)."""

    cloned: int
    """Gaussians cloned (one copy each)."""
    split: int
    """Gaussians split (each replaced by two smaller samples of itself)."""
    pruned: int
    """Gaussians removed by the opacity and size rules."""
    opacity_reset: bool
    """Whether the opacities were reset at this step."""
    num_gaussians: int
    """Gaussians after the call."""


class GaussianGeometry(Geometry):
    """3D Gaussians: parameters, initialisation, densification/pruning, density and isosurface
    (module docstring). Renderers read ``means``, ``quats``, ``scales``, ``opacities``,
    ``features`` and ``normals()``."""

    @dataclass
    class Config:
        radius: PositiveFloat = 2.0
        """Half the side of the scene box [-radius, radius]^3 (isosurface_bounds: scene_box)."""
        n_feature_dims: PositiveInt = 3
        """Material features per Gaussian (3 for an RGB albedo material; create_from takes the
        previous geometry's)."""
        init: Literal["blob", "sphere", "points"] = "blob"
        """Initial centres: uniform in a ball of init_radius (DreamGaussian), uniform on its
        sphere, or the points of points_path."""
        init_num_points: PositiveInt = 5000
        """Gaussians of blob/sphere, and points sampled on the previous stage's surface in create_from."""
        init_radius: PositiveFloat = 0.5
        """Radius of the blob/sphere, world units."""
        init_opacity: Annotated[float, Range(gt=0, lt=1)] = 0.1
        """Initial opacity of every Gaussian."""
        init_scale: Optional[PositiveFloat] = None
        """Initial (isotropic) scale, world units; null: root mean squared distance to the 3
        nearest points (3DGS/DreamGaussian)."""
        points_path: str = ""
        """init: points — a point cloud (PLY, or any file trimesh reads; vertex colours used)."""
        points_up_axis: UpAxis = "+Z"
        """Up axis of points_path: +Z (ours) | +Y, converted to +Z."""
        points_normalize_size: Optional[PositiveFloat] = 0.5
        """Centre the point cloud and scale its largest half-extent to this, world units; null:
        keep the file's coordinates."""
        densify_from_step: NonNegativeInt = 0
        """First step of the densification window (steps counted as optimizer steps done): view-space
        gradients are collected and Gaussians densified and pruned within it."""
        densify_until_step: NonNegativeInt = 3000
        """Last step of the densification window, inclusive (0: no densification)."""
        densify_interval: PositiveInt = 50
        """Densify and prune every this many steps within the window."""
        densify_grad_threshold: PositiveFloat = 0.01
        """Clone/split Gaussians whose mean view-space gradient norm (NDC units) reaches this."""
        percent_dense: PositiveFloat = 0.01
        """Gaussians whose largest scale is at most percent_dense × scene_extent are cloned, larger
        ones split."""
        scene_extent: PositiveFloat = 4.0
        """Size of the scene for the densify and prune rules, world units (DreamGaussian's extent)."""
        prune_opacity: Probability = 0.01
        """Prune Gaussians with a lower opacity."""
        prune_world_size: Optional[PositiveFloat] = 0.1
        """Prune Gaussians whose largest scale exceeds this × scene_extent; null: never."""
        prune_screen_size: Optional[PositiveFloat] = None
        """Prune Gaussians whose projected radius exceeded this many pixels since the last
        densification; null: never (in 3DGS/DreamGaussian the radii are reset just before the
        check, so it never fires)."""
        opacity_reset_interval: NonNegativeInt = 700
        """Within the densification window, every this many steps clamp opacities to at most
        0.01 (0: never)."""
        max_gaussians: PositiveInt = 1_000_000
        """Safety cap: densification adds Gaussians (largest gradients first) only up to this count."""
        density_cutoff: PositiveFloat = 3.0
        """forward/isosurface: a Gaussian counts at points within this many standard deviations
        (Mahalanobis distance); the rest of its density is below opacity × exp(-cutoff²/2)."""
        isosurface_resolution: Annotated[int, Range(ge=2)] = 128
        """Samples per side of the marching-cubes grid."""
        isosurface_threshold: Any = 1.0
        """Density level of the surface (DreamGaussian's density_thresh): a number or 'auto'
        (geometry/isosurface.py)."""
        isosurface_auto_max_fill: Probability = 0.6
        """auto: at most this fraction of the grid may be inside the surface."""
        isosurface_auto_min_threshold: float = 1.0
        """auto: the level never goes below this density."""
        isosurface_bounds: Literal["gaussians", "scene_box"] = "gaussians"
        """Marching-cubes grid: a cube about the origin holding every Gaussian's cutoff ellipsoid
        (opacity above 0.005), or the scene box."""
        isosurface_remove_outliers: bool = True
        """Drop small disconnected pieces (floaters) from the isosurface."""
        isosurface_outlier_fraction: Probability = 0.01
        """A piece with fewer than this fraction of the faces is an outlier."""

    cfg: Config

    def __init__(
        self,
        cfg: Any = None,
        where: str = "geometry",
        points: Optional[Tensor] = None,
        features: Optional[Tensor] = None,
    ) -> None:
        """Initialised by ``cfg.init``, or at ``points`` (N,3) with raw ``features`` (N,F) when given
        (create_from; N = 0 gives an empty set that ``load_state_dict`` fills)."""
        nn.Module.__init__(self)
        self.parse_config(cfg, where)
        self.where = where
        c = self.cfg
        if points is None:
            points, features = self._initial_points()
        points = points.detach().float()
        n = points.shape[0]
        if features is None:
            features = points.new_zeros(n, c.n_feature_dims)
        if features.shape != (n, c.n_feature_dims):
            raise ValueError(f"{where}: features {tuple(features.shape)} for {n} points of {c.n_feature_dims} features")
        if c.init_scale is not None:
            scale = torch.full((n,), float(c.init_scale), device=points.device)
        elif n >= 2:
            scale = mean_sq_neighbour_distance(points).sqrt()
        elif n == 1:
            raise UserError(f"{where}: one point gives no neighbour distance; set init_scale")
        else:
            scale = points.new_zeros(0)
        quats = points.new_zeros(n, 4)
        quats[:, 0] = 1.0
        self.means_raw = nn.Parameter(points.clone())
        self.scales_log = nn.Parameter(scale.log()[:, None].repeat(1, 3))
        self.quats_raw = nn.Parameter(quats)
        logit = math.log(c.init_opacity / (1 - c.init_opacity))
        self.opacities_logit = nn.Parameter(torch.full((n, 1), logit, device=points.device))
        self.features_raw = nn.Parameter(features.detach().float().to(points.device).clone())
        self._reset_stats()

    def _initial_points(self) -> tuple[Tensor, Optional[Tensor]]:
        """(centres (N,3), raw features (N,F) or None) of ``cfg.init``."""
        c = self.cfg
        if c.init == "points":
            if not c.points_path:
                raise UserError(f"{self.where}.points_path: init=points needs a point cloud file")
            points, rgb = load_point_cloud(c.points_path, self.where)
            if c.points_normalize_size is not None:
                points = normalize_vertices(points, 1.0, c.points_normalize_size, c.points_up_axis)
            else:
                points = from_up_axis(points, c.points_up_axis)
            features = None
            if rgb is not None:
                features = torch.zeros(points.shape[0], c.n_feature_dims)
                features[:, : min(3, c.n_feature_dims)] = torch.logit(rgb.clamp(1e-4, 1 - 1e-4))[:, : c.n_feature_dims]
            return points, features
        n = c.init_num_points
        direction = F.normalize(torch.randn(n, 3), dim=-1)
        r = torch.full((n, 1), c.init_radius) if c.init == "sphere" else c.init_radius * torch.rand(n, 1).pow(1 / 3)
        return direction * r, None

    # ---- activated accessors (what the renderer reads) -------------------------------------
    @property
    def num_gaussians(self) -> int:
        return self.means_raw.shape[0]

    @property
    def means(self) -> Tensor:
        """(N,3) centres, world units."""
        return self.means_raw

    @property
    def scales(self) -> Tensor:
        """(N,3) axis scales (standard deviations), > 0."""
        return self.scales_log.exp()

    @property
    def quats(self) -> Tensor:
        """(N,4) unit quaternions, w x y z."""
        return F.normalize(self.quats_raw, dim=-1)

    @property
    def opacities(self) -> Tensor:
        """(N,1) opacities in (0,1)."""
        return torch.sigmoid(self.opacities_logit)

    @property
    def features(self) -> Tensor:
        """(N,F) raw material features."""
        return self.features_raw

    def rotations(self) -> Tensor:
        """(N,3,3) rotation matrices; column k is the direction of axis k."""
        return quaternion_to_rotation(self.quats)

    def normals(self) -> Tensor:
        """(N,3) unit axis of each Gaussian's smallest scale, pointing away from the origin (the
        scene's centre; a renderer turns it towards the camera where it needs)."""
        axis = torch.gather(self.rotations(), 2, self.scales.argmin(1)[:, None, None].expand(-1, 3, 1))[..., 0]
        sign = torch.where((axis * self.means).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        return axis * sign

    def inverse_covariances(self) -> Tensor:
        """(N,3,3) ``Sigma^-1 = R diag(s^-2) R^T``."""
        r = self.rotations()
        return r @ (self.scales.pow(-2)[:, :, None] * r.transpose(1, 2))

    def cutoff_half_widths(self) -> Tensor:
        """(N,3) half-widths of the bounding boxes of the ellipsoids at ``density_cutoff``
        standard deviations: ``cutoff sqrt(Sigma_kk)``."""
        return self.cfg.density_cutoff * (self.rotations().square() * self.scales.square()[:, None, :]).sum(-1).sqrt()

    # ---- density -------------------------------------------------------------------------
    def gaussian_sum(self) -> GaussianSum:
        """The density field of the current Gaussians (build once, query many times)."""
        return GaussianSum(
            self.means,
            self.inverse_covariances(),
            self.cutoff_half_widths(),
            self.opacities,
            self.cfg.density_cutoff,
            self.features,
        )

    def forward_density(self, points: Tensor) -> Tensor:
        """Density (M,1) ≥ 0 at world points (M,3)."""
        return self.gaussian_sum()(points)[0]

    def forward(self, points: Tensor, output_normal: bool = False) -> GeometryOutput:
        """points (M,3) → density (M,1); features (M,F): the density-weighted mean of the
        Gaussians' (the nearest centre's where no Gaussian reaches the point: density ≤ 1e-12);
        normal (M,3):
        ``-grad density`` normalised (zero where the density is), when asked."""
        density, weighted, grad = self.gaussian_sum()(points, with_features=True, with_gradient=output_normal)
        empty = density[:, 0] <= 1e-12
        features = weighted / density.clamp(min=1e-12)
        if bool(empty.any()) and self.num_gaussians:
            features = features.clone()
            features[empty] = self.features[self._nearest(points[empty])]
        normal = F.normalize(-grad, dim=-1) if output_normal else None
        return GeometryOutput(features=features, density=density, normal=normal)

    def _nearest(self, points: Tensor, chunk: int = 4096) -> Tensor:
        """(M,) index of the nearest Gaussian centre to each point."""
        means = self.means.detach()
        return torch.cat([torch.cdist(p, means).argmin(1) for p in points.detach().split(chunk)])

    # ---- surface ---------------------------------------------------------------------------
    def isosurface_half_side(self) -> float:
        """Half the side of the marching-cubes cube (about the origin): see ``isosurface_bounds``."""
        c = self.cfg
        if c.isosurface_bounds == "scene_box":
            return float(c.radius)
        with torch.no_grad():
            keep = self.opacities[:, 0] > BOUNDS_MIN_OPACITY
            if not bool(keep.any()):
                raise UserError(
                    f"{self.where}: every Gaussian is nearly transparent (opacity ≤ {BOUNDS_MIN_OPACITY}); "
                    "there is no surface to extract"
                )
            reach = (self.means[keep].abs() + self.cutoff_half_widths()[keep]).max()
        return float(reach) * (1 + 2 / c.isosurface_resolution)  # a sample beyond the support on every side

    def density_grid(self, resolution: Optional[int] = None) -> tuple[Tensor, float]:
        """((R,R,R) densities over ``[-h, h]^3`` in the axis order of marching cubes, h)."""
        half = self.isosurface_half_side()
        with torch.no_grad():
            field = self.gaussian_sum()
            resolution = resolution or self.cfg.isosurface_resolution
            grid = density_grid(lambda p: field(p)[0], resolution, half, self.means.device)
        return grid, half

    def isosurface(self) -> Mesh:
        """Marching-cubes mesh (detached) of ``density = isosurface_threshold``; the grid's outer
        layer is set to 0 so that the surface is closed."""
        c = self.cfg
        grid, half = self.density_grid()
        grid[[0, -1]] = 0.0
        grid[:, [0, -1]] = 0.0
        grid[:, :, [0, -1]] = 0.0
        level = resolve_threshold(
            grid, c.isosurface_threshold, c.isosurface_auto_max_fill, c.isosurface_auto_min_threshold, self.where
        )
        return extract_isosurface(
            grid, level, half, self.where, c.isosurface_remove_outliers, c.isosurface_outlier_fraction
        )

    # ---- densification -------------------------------------------------------------------
    def _reset_stats(self) -> None:
        """Forget the densification statistics (per Gaussian: summed gradient norm, views
        counted, largest projected radius)."""
        self._grad_sum: Optional[Tensor] = None
        self._grad_views: Optional[Tensor] = None
        self._max_radii: Optional[Tensor] = None

    def densifying(self, step: int) -> bool:
        """Whether step ``step`` (counted in optimizer steps done, 1 after the first) is inside the
        densification window: then the system passes the step's view-space gradients to
        :meth:`add_densification_stats` (the renderer must keep them)."""
        return self.cfg.densify_from_step <= step <= self.cfg.densify_until_step

    def after_optimizer_step(self, optimizer: torch.optim.Optimizer, global_step: int, render: Any) -> None:
        """The system's hook after the optimizer step ``global_step`` (0-based): the step's
        view-space gradients (``render.extras["means2d"]``, ``["radii"]`` from the splat renderer)
        into the statistics while :meth:`densifying`, then :meth:`densify_and_prune`."""
        done = global_step + 1
        means2d = render.extras.get("means2d")
        if self.densifying(done) and means2d is not None and means2d.grad is not None:
            self.add_densification_stats(means2d.grad, render.extras["radii"], tuple(render.rgb.shape[1:3]))
        self.densify_and_prune(optimizer, done)

    @torch.no_grad()
    def add_densification_stats(self, means2d_grad: Tensor, radii: Tensor, image_size: tuple[int, int]) -> None:
        """Accumulate one step's view-space gradients.

        ``means2d_grad`` (B,N,2) or (N,2): gradient of the loss with respect to the projected
        centres in pixels (x right, y down) of ``image_size`` = (H, W) images; converted to NDC
        units (× W/2, × H/2, as 3DGS's rasterizer reports them) and multiplied by B (the loss
        averages its B views; gsplat's strategy does the same). ``radii`` (B,N), (N,) or
        (B,N,2) (per-axis, gsplat ≥ 1.5) projected radii in pixels, 0 where a Gaussian is not
        visible — or a bool visibility mask of shape (B,N)/(N,). Each view in which a Gaussian is
        visible adds its gradient norm and counts one view."""
        grad, radii = means2d_grad.detach(), radii.detach()
        if radii.dtype != torch.bool and radii.shape == grad.shape:  # per-axis radii
            radii = radii.amax(-1)
        if grad.dim() == 2:
            grad, radii = grad[None], radii.reshape(1, -1)
        b, n = grad.shape[:2]
        if n != self.num_gaussians or radii.shape != grad.shape[:2]:
            raise ValueError(
                f"add_densification_stats: gradients {tuple(grad.shape)} and radii {tuple(radii.shape)} "
                f"for {self.num_gaussians} Gaussians"
            )
        visible = radii if radii.dtype == torch.bool else radii > 0
        h, w = image_size
        norm = (grad * grad.new_tensor([w / 2.0, h / 2.0])).norm(dim=-1) * b  # (B,N)
        if self._grad_sum is None or self._grad_sum.shape[0] != n:
            self._grad_sum = grad.new_zeros(n)
            self._grad_views = grad.new_zeros(n)
            self._max_radii = grad.new_zeros(n)
        self._grad_sum += (norm * visible).sum(0)
        self._grad_views += visible.sum(0)
        if radii.dtype != torch.bool:
            self._max_radii = torch.maximum(self._max_radii, radii.float().amax(0))

    def densify_and_prune(self, optimizer: Optional[torch.optim.Optimizer], step: int) -> Optional[DensifyReport]:
        """Call after ``optimizer.step()`` of step ``step`` (optimizer steps done, 1 after the first).

        Inside the window (:meth:`densifying`), every ``densify_interval`` steps: Gaussians whose
        mean view-space gradient reaches ``densify_grad_threshold`` are cloned (largest scale ≤
        percent_dense × scene_extent: an exact copy) or split (larger: replaced by 2 samples of
        their own Gaussian with scales / 1.6); then Gaussians below ``prune_opacity``, larger than
        ``prune_world_size`` × scene_extent or (when set) seen larger than ``prune_screen_size``
        pixels are removed — unless that would remove them all. Every ``opacity_reset_interval``
        steps, opacities are clamped to ≤ 0.01.

        The optimizer is edited in place: each parameter keeps its identity (its param group stays
        valid) and every state tensor of the parameter's shape (Adam's ``exp_avg``/``exp_avg_sq``,
        Adan's ``exp_avg_diff``/``previous_grad``...) keeps the rows of surviving Gaussians, zeros
        for new ones (zeroed for the opacities at a reset); other state (``step``) is left as is.
        Returns what was done, or None when nothing was due."""
        c = self.cfg
        if not self.densifying(step):
            return None
        densify = step % c.densify_interval == 0
        reset = c.opacity_reset_interval > 0 and step % c.opacity_reset_interval == 0
        if not (densify or reset):
            return None
        cloned = split = pruned = 0
        if densify:
            cloned, split, pruned = self._densify_and_prune(optimizer)
        if reset:
            self._reset_opacity(optimizer)
        return DensifyReport(cloned, split, pruned, reset, self.num_gaussians)

    @torch.no_grad()
    def _densify_and_prune(self, optimizer: Optional[torch.optim.Optimizer]) -> tuple[int, int, int]:
        c = self.cfg
        n = self.num_gaussians
        if self._grad_sum is None or self._grad_sum.shape[0] != n:
            grads = self.means.new_zeros(n)
        else:
            grads = self._grad_sum / self._grad_views.clamp(min=1)
        scales = self.scales
        largest = scales.amax(1)
        candidate = grads >= c.densify_grad_threshold
        room = max(c.max_gaussians - n, 0)  # each clone or split adds one Gaussian
        if int(candidate.sum()) > room:
            order = torch.argsort(torch.where(candidate, grads, -1.0), descending=True)
            candidate = torch.zeros_like(candidate)
            candidate[order[:room]] = True
        small = largest <= c.percent_dense * c.scene_extent
        clone, split = candidate & small, candidate & ~small

        raw = {name: getattr(self, name).data for name in PARAMETERS}
        k = int(split.sum())
        std = scales[split]
        samples = std[None] * torch.randn(SPLIT_CHILDREN, k, 3, device=std.device, dtype=std.dtype)
        offsets = torch.einsum("kij,ckj->cki", quaternion_to_rotation(self.quats[split]), samples)
        children = {
            "means_raw": (raw["means_raw"][split][None] + offsets).reshape(-1, 3),
            "scales_log": (std / SPLIT_SHRINK).log().repeat(SPLIT_CHILDREN, 1),
        }
        for name in ("quats_raw", "opacities_logit", "features_raw"):
            children[name] = raw[name][split].repeat(SPLIT_CHILDREN, 1)
        new = {name: torch.cat([raw[name][clone], children[name]]) for name in PARAMETERS}

        def doomed(opacity_logit: Tensor, log_scales: Tensor) -> Tensor:
            out = torch.sigmoid(opacity_logit[:, 0]) < c.prune_opacity
            if c.prune_world_size is not None:
                out |= log_scales.exp().amax(1) > c.prune_world_size * c.scene_extent
            return out

        prune_old = doomed(raw["opacities_logit"], raw["scales_log"])
        if c.prune_screen_size is not None and self._max_radii is not None and self._max_radii.shape[0] == n:
            prune_old |= self._max_radii > c.prune_screen_size
        prune_new = doomed(new["opacities_logit"], new["scales_log"])
        keep_old, keep_new = ~(split | prune_old), ~prune_new
        if not (bool(keep_old.any()) or bool(keep_new.any())):  # never prune the set away
            keep_old, keep_new = ~split, torch.ones_like(prune_new)
        pruned = int((~keep_old & ~split).sum()) + int((~keep_new).sum())
        self._replace_rows(optimizer, keep_old, {name: v[keep_new] for name, v in new.items()})
        self._reset_stats()
        return int(clone.sum()), k, pruned

    @torch.no_grad()
    def _replace_rows(
        self, optimizer: Optional[torch.optim.Optimizer], keep: Tensor, new_rows: dict[str, Tensor]
    ) -> None:
        """Every parameter becomes ``cat(old[keep], new_rows[name])``; so do the optimizer's
        state tensors of the parameter's shape (zeros for the new rows)."""
        for name in PARAMETERS:
            p = getattr(self, name)
            old, added = p.data, new_rows[name].to(p.data)
            state = optimizer.state.get(p) if optimizer is not None else None
            for key, value in (state or {}).items():
                if torch.is_tensor(value) and value.shape == old.shape:
                    state[key] = torch.cat([value[keep], value.new_zeros(added.shape)])
            p.data = torch.cat([old[keep], added])
            p.grad = None

    @torch.no_grad()
    def _reset_opacity(self, optimizer: Optional[torch.optim.Optimizer]) -> None:
        """Opacities clamped to ≤ 0.01 (3DGS), their optimizer state zeroed."""
        p = self.opacities_logit
        p.data = torch.logit(torch.sigmoid(p.data).clamp(max=0.01))
        state = optimizer.state.get(p) if optimizer is not None else None
        for key, value in (state or {}).items():
            if torch.is_tensor(value) and value.shape == p.shape:
                state[key] = torch.zeros_like(value)

    # ---- checkpoints -----------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for name in PARAMETERS:  # the number of Gaussians comes from the checkpoint
            key = prefix + name
            p = getattr(self, name)
            if key in state_dict and state_dict[key].shape != p.shape:
                p.data = p.data.new_empty(state_dict[key].shape)
                p.grad = None
        self._reset_stats()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- stage hand-off --------------------------------------------------------------------
    @classmethod
    def create_from(cls, other: Geometry, cfg: Any = None, where: str = "geometry") -> GaussianGeometry:
        """From Gaussians: a copy (every parameter; the settings come from ``cfg``). From any
        other geometry: ``init_num_points`` points sampled uniformly on ``other.isosurface()``
        with ``other(points).features`` (``n_feature_dims`` taken from them), scales from the
        neighbour distances (or ``init_scale``), ``init_opacity``."""
        c = parse_structured(cls.Config, cfg, where)
        if isinstance(other, GaussianGeometry):
            n_features = other.features.shape[1]
            device = other.means.device
            instance = cls(
                replace(c, n_feature_dims=n_features),
                where,
                points=torch.zeros(0, 3, device=device),
                features=torch.zeros(0, n_features, device=device),
            )
            instance.load_state_dict(other.state_dict())
            return instance.to(device)
        mesh = other.isosurface()
        with torch.no_grad():
            points = mesh.sample_surface(c.init_num_points)
            features = torch.cat([other(p).features for p in points.split(1 << 16)]).detach()
        return cls(replace(c, n_feature_dims=features.shape[1]), where, points=points, features=features).to(
            points.device
        )
