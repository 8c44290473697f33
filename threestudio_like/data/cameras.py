"""Cameras, rays and projection in one documented convention.

World frame: right-handed, **+Z up** (threestudio's convention); the object sits at the origin.
A camera at elevation ``e`` and azimuth ``a`` (degrees) and distance ``d`` sits at
``(d cos e cos a, d cos e sin a, d sin e)`` and looks at the origin; azimuth 0 is the *front*
(+X), 180 the back, elevation 90 overhead.

Camera frame: **OpenGL** — camera looks down its −Z axis, +Y is up, +X right. ``c2w`` columns
are (right, up, back, position). Pixel ``(row i, col j)`` has its centre at ``(j + .5, i + .5)``;
row 0 is the *top* of the image. Its ray direction in camera space is
``((j + .5 − W/2) / f, −(i + .5 − H/2) / f, −1)`` with focal ``f = H / (2 tan(fovy/2))``.

``mvp`` maps world points to clip space with an OpenGL projection whose y axis is flipped, so
that rasterized images (nvdiffrast or its twin) also have row 0 at the top, matching the rays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Annotated, Any, Literal, Optional

import torch
from torch import Tensor

from ..core.config import Configurable, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range, Schedule
from ..core.errors import UserError
from ..core.schedule import Updateable, schedule_value


@dataclass
class CameraBatch:
    """A batch of B pinhole cameras and their rays.

    Shapes: ``c2w`` (B,4,4), ``mvp`` (B,4,4), ``fovy`` (B,) radians, ``elevation``/``azimuth``
    (B,) degrees, ``distance`` (B,), ``position`` (B,3), ``light_position`` (B,3),
    ``rays_o``/``rays_d`` (B,H,W,3) with unit-length ``rays_d``.
    """

    c2w: Tensor
    mvp: Tensor
    fovy: Tensor
    elevation: Tensor
    azimuth: Tensor
    distance: Tensor
    position: Tensor
    light_position: Tensor
    rays_o: Tensor
    rays_d: Tensor
    height: int
    width: int

    @property
    def batch_size(self) -> int:
        return self.c2w.shape[0]

    def to(self, device: torch.device | str) -> CameraBatch:
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in fields(self)
                if isinstance(getattr(self, f.name), Tensor)
            },
        )

    def index(self, idx: slice | Tensor | int) -> CameraBatch:
        """A sub-batch (keeps the batch dimension)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return replace(
            self,
            **{f.name: getattr(self, f.name)[idx] for f in fields(self) if isinstance(getattr(self, f.name), Tensor)},
        )


def spherical_to_position(elevation_deg: Tensor, azimuth_deg: Tensor, distance: Tensor) -> Tensor:
    """(B,) degrees, degrees, units → (B,3) camera positions (Z up, azimuth 0 on +X)."""
    e, a = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack(
        [distance * torch.cos(e) * torch.cos(a), distance * torch.cos(e) * torch.sin(a), distance * torch.sin(e)],
        dim=-1,
    )


def look_at(position: Tensor, target: Optional[Tensor] = None, up: Optional[Tensor] = None) -> Tensor:
    """(B,3) positions → (B,4,4) OpenGL camera-to-world matrices looking at ``target``.

    ``up`` defaults to +Z; for cameras looking straight up/down +Y is used instead.
    """
    if target is None:
        target = torch.zeros_like(position)
    if up is None:
        up = torch.tensor([0.0, 0.0, 1.0], dtype=position.dtype, device=position.device).expand_as(position)
    forward = torch.nn.functional.normalize(target - position, dim=-1)
    right = torch.linalg.cross(forward, up, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    alt_up = torch.tensor([0.0, 1.0, 0.0], dtype=position.dtype, device=position.device).expand_as(position)
    right = torch.where(degenerate, torch.linalg.cross(forward, alt_up, dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    cam_up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.zeros(position.shape[0], 4, 4, dtype=position.dtype, device=position.device)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, cam_up, -forward, position
    c2w[:, 3, 3] = 1.0
    return c2w


def projection_matrix(fovy: Tensor, aspect: float, near: float = 0.01, far: float = 100.0) -> Tensor:
    """(B,) fovy radians → (B,4,4) OpenGL perspective with y flipped (row 0 = image top)."""
    f = 1.0 / torch.tan(fovy / 2)
    proj = torch.zeros(fovy.shape[0], 4, 4, dtype=fovy.dtype, device=fovy.device)
    proj[:, 0, 0] = f / aspect
    proj[:, 1, 1] = -f
    proj[:, 2, 2] = -(far + near) / (far - near)
    proj[:, 2, 3] = -2.0 * far * near / (far - near)
    proj[:, 3, 2] = -1.0
    return proj


def camera_rays(c2w: Tensor, fovy: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """(B,4,4), (B,) → rays_o, rays_d, each (B,H,W,3); rays_d unit length (see module doc)."""
    dtype, device = c2w.dtype, c2w.device
    focal = 0.5 * height / torch.tan(fovy / 2)  # (B,)
    j = torch.arange(width, dtype=dtype, device=device) + 0.5
    i = torch.arange(height, dtype=dtype, device=device) + 0.5
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    f = focal[:, None, None]
    dirs = torch.stack(
        [(jj - width / 2) / f, -(ii - height / 2) / f, -torch.ones_like(ii).expand(c2w.shape[0], -1, -1)], dim=-1
    )
    rays_d = torch.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], dirs)
    rays_d = torch.nn.functional.normalize(rays_d, dim=-1)
    rays_o = c2w[:, None, None, :3, 3].expand_as(rays_d)
    return rays_o, rays_d


def make_cameras(
    elevation: Tensor,
    azimuth: Tensor,
    distance: Tensor,
    fovy_deg: Tensor,
    height: int,
    width: int,
    light_position: Optional[Tensor] = None,
    center: Optional[Tensor] = None,
    up: Optional[Tensor] = None,
) -> CameraBatch:
    """Build a :class:`CameraBatch` from (B,) spherical coordinates (degrees) and FOV (degrees)."""
    position = spherical_to_position(elevation, azimuth, distance)
    if center is not None:
        position = position + center
    c2w = look_at(position, center, up)
    fovy = torch.deg2rad(fovy_deg)
    proj = projection_matrix(fovy, width / height)
    mvp = proj @ torch.linalg.inv(c2w)
    rays_o, rays_d = camera_rays(c2w, fovy, height, width)
    if light_position is None:
        light_position = position.clone()
    return CameraBatch(
        c2w=c2w,
        mvp=mvp,
        fovy=fovy,
        elevation=elevation,
        azimuth=azimuth,
        distance=distance,
        position=position,
        light_position=light_position,
        rays_o=rays_o,
        rays_d=rays_d,
        height=height,
        width=width,
    )


def orbit_cameras(
    n_views: int,
    elevation_deg: float,
    distance: float,
    fovy_deg: float,
    height: int,
    width: int,
    azimuth_start_deg: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> CameraBatch:
    """``n_views`` cameras evenly spaced in azimuth on a circle (validation / test / turntable)."""
    kw = dict(dtype=dtype, device=device)
    az = azimuth_start_deg + torch.arange(n_views, **kw) * (360.0 / n_views)
    az = (az + 180.0) % 360.0 - 180.0
    full = lambda v: torch.full((n_views,), float(v), **kw)  # noqa: E731
    return make_cameras(full(elevation_deg), az, full(distance), full(fovy_deg), height, width)


def magic3d_light_positions(
    camera_position: Tensor, distance: Tensor, azimuth_deg: Tensor, elevation_deg: Tensor
) -> Tensor:
    """(B,3) light positions at ``distance`` (B,) in the frame whose zenith is the camera
    direction: local z = camera direction, x = z × (world +Z) normalised (horizontal), y = z × x;
    the light sits at local spherical (``elevation_deg``, ``azimuth_deg``) (Magic3D's sampling:
    azimuth uniform, elevation uniform in 30°–90°). For a camera straight above or below the
    origin, x and y vanish and the light sits on the camera axis."""
    z = torch.nn.functional.normalize(camera_position, dim=-1)
    x = torch.nn.functional.normalize(torch.stack([z[:, 1], -z[:, 0], torch.zeros_like(z[:, 0])], dim=-1), dim=-1)
    y = torch.nn.functional.normalize(torch.linalg.cross(z, x, dim=-1), dim=-1)
    local = spherical_to_position(elevation_deg, azimuth_deg, distance)
    return local[:, :1] * x + local[:, 1:2] * y + local[:, 2:] * z


def _check_resolution_schedule(schedule: list[list[int]], where: str) -> None:
    steps = [e[0] for e in schedule if len(e) == 4]
    if len(steps) < len(schedule):
        raise UserError(f"{where}: every entry is [from_step, height, width, batch_size], got {schedule}")
    if schedule and (steps[0] != 0 or steps != sorted(set(steps))):
        raise UserError(f"{where}: entry steps must start at 0 and increase, got {steps}")
    if any(v <= 0 for e in schedule for v in e[1:]):
        raise UserError(f"{where}: heights, widths and batch sizes must be positive, got {schedule}")


class RandomCameraSampler(Configurable, Updateable):
    """Random training views around the origin (DreamFusion/threestudio distribution).

    Elevation, azimuth, distance and FOV are uniform in their ranges (elevation uniform in
    degrees, uniform on the sphere, or either with probability ½ per batch — threestudio's
    ``mixed``); with ``batch_uniform_azimuth`` a batch's azimuths are stratified so each view
    covers its own sector. ``progressive_until`` > 0 widens the elevation/azimuth ranges linearly
    from the eval view to the full ranges over that many steps. The point light follows the
    camera direction with Gaussian jitter (DreamFusion) or sits at a random direction within 60°
    of the camera's zenith (Magic3D). ``resolution_schedule`` switches render size and batch size
    together (threestudio's ``resolution_milestones`` with per-resolution batch sizes).

    With ``n_views`` > 1 (multi-view priors: MVDream) each sampled camera becomes ``n_views``
    consecutive views 360°/``n_views`` apart in azimuth, sharing its elevation, distance, FOV,
    jitter and light draw (the light follows each view as it follows a single camera);
    ``batch_size`` counts views and must be a multiple of ``n_views``.
    """

    @dataclass
    class Config:
        height: Annotated[Any, Schedule(Range(gt=0))] = 64
        """Render height in pixels (number or schedule)."""
        width: Annotated[Any, Schedule(Range(gt=0))] = 64
        """Render width in pixels (number or schedule)."""
        batch_size: Annotated[Any, Schedule(Range(gt=0))] = 1
        """Views per training step (number or schedule); a multiple of ``n_views``."""
        n_views: PositiveInt = 1
        """Views per sampled camera, 360°/n_views apart in azimuth with the camera's elevation,
        distance, FOV and light, consecutive in the batch (4 for MVDream; threestudio-mvdream's
        ``n_view``)."""
        resolution_schedule: list[list[int]] = field(default_factory=list)
        """``[[from_step, height, width, batch_size], ...]`` from step 0 on, steps increasing: each
        entry holds until the next one's step; when set it replaces height/width/batch_size."""
        elevation_range: tuple[float, float] = (-10.0, 90.0)
        """Elevation range in degrees."""
        azimuth_range: tuple[float, float] = (-180.0, 180.0)
        """Azimuth range in degrees (0 = front, +X)."""
        distance_range: tuple[float, float] = (1.0, 1.5)
        """Camera distance range (in units of 1/tan(fovy/2) with ``relative_distance``)."""
        relative_distance: bool = False
        """The sampled distance is divided by tan(fovy/2), so the view's half-height at the origin
        is the sampled value whatever the FOV (threestudio-mvdream's ``relative_radius``)."""
        fovy_range: tuple[float, float] = (40.0, 70.0)
        """Vertical field of view range in degrees."""
        elevation_sampling: Literal["degrees", "sphere", "mixed"] = "degrees"
        """Elevation uniform in degrees, uniform on the sphere (∝ cos e), or one of the two with
        probability ½ per batch (``mixed``, threestudio's)."""
        batch_uniform_azimuth: bool = True
        """Stratify azimuth within a batch."""
        camera_perturb: NonNegativeFloat = 0.1
        """Scale of the jitter added to camera positions (see ``camera_perturb_distribution``)."""
        camera_perturb_distribution: Literal["normal", "uniform"] = "normal"
        """Camera jitter per axis: N(0, p²) or U[−p, p] (threestudio's), p = ``camera_perturb``."""
        center_perturb: NonNegativeFloat = 0.2
        """Std of the Gaussian jitter of the look-at point."""
        up_perturb: NonNegativeFloat = 0.02
        """Std of the Gaussian jitter of the up vector."""
        light_distance_range: tuple[float, float] = (0.8, 1.5)
        """Distance of the point light from the origin."""
        light_position_perturb: NonNegativeFloat = 1.0
        """Std of the direction jitter of the light around the camera direction (DreamFusion)."""
        light_sample_strategy: Literal["dreamfusion", "magic3d"] = "dreamfusion"
        """Light direction: the camera's with Gaussian jitter (``dreamfusion``), or uniform in
        azimuth and in elevation 30°–90° about the camera direction as zenith (``magic3d``)."""
        progressive_until: NonNegativeInt = 0
        """Steps over which elevation/azimuth ranges widen from the eval view (0 = off)."""
        eval_elevation_deg: float = 15.0
        """Elevation of validation/test orbits."""
        eval_distance: PositiveFloat = 1.5
        """Camera distance of validation/test orbits."""
        eval_fovy_deg: Annotated[float, Range(gt=0, lt=180)] = 70.0
        """FOV of validation/test orbits."""
        eval_height: PositiveInt = 64
        """Validation/test render height."""
        eval_width: PositiveInt = 64
        """Validation/test render width."""
        n_val_views: NonNegativeInt = 4
        """Views rendered at each validation."""
        n_test_views: PositiveInt = 30
        """Views of the test orbit (turntable)."""

    def __init__(self, cfg: Any = None, where: str = "data") -> None:
        self.parse_config(cfg, where)
        self.where = where
        c = self.cfg
        for name in ("elevation_range", "azimuth_range", "distance_range", "fovy_range", "light_distance_range"):
            lo, hi = getattr(c, name)
            if lo > hi:
                raise UserError(f"{where}.{name}: lower bound {lo} is above upper bound {hi}")
        _check_resolution_schedule(c.resolution_schedule, f"{where}.resolution_schedule")
        for entry in c.resolution_schedule:
            self._check_batch_size(entry[3])
        self.global_step = 0
        self.on_update_step(0, 0)

    def on_update_step(self, epoch: int, global_step: int) -> None:
        self.global_step = global_step
        c = self.cfg
        if c.resolution_schedule:
            _, self.height, self.width, self.batch_size = [e for e in c.resolution_schedule if e[0] <= global_step][-1]
            return
        self.height = int(schedule_value(c.height, global_step))
        self.width = int(schedule_value(c.width, global_step))
        self.batch_size = self._check_batch_size(int(schedule_value(c.batch_size, global_step)))

    def _check_batch_size(self, batch_size: int) -> int:
        n = self.cfg.n_views
        if batch_size % n:
            raise UserError(
                f"{self.where}.batch_size {batch_size} is not a multiple of n_views {n}: "
                f"a batch holds whole groups of {n} views (e.g. batch_size={n * max(batch_size // n, 1)})"
            )
        return batch_size

    def _ranges(self) -> tuple[tuple[float, float], tuple[float, float]]:
        c = self.cfg
        if c.progressive_until <= 0:
            return c.elevation_range, c.azimuth_range
        r = min(1.0, self.global_step / c.progressive_until)
        e = c.eval_elevation_deg
        elev = ((1 - r) * e + r * c.elevation_range[0], (1 - r) * e + r * c.elevation_range[1])
        azim = (r * c.azimuth_range[0], r * c.azimuth_range[1])
        return elev, azim

    def sample(
        self,
        generator: Optional[torch.Generator] = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> CameraBatch:
        """One random training batch. Uses the global torch RNG unless ``generator`` is given.

        Every random draw is per camera (``batch_size / n_views`` of them) and repeated over the
        camera's views; only the azimuth steps by 360°/n_views from view to view."""
        c, b, v = self.cfg, self.batch_size, self.cfg.n_views
        g = b // v  # cameras
        u = lambda lo, hi, n=g: lo + (hi - lo) * torch.rand(n, generator=generator, dtype=dtype)  # noqa: E731
        n = lambda *shape: torch.randn(*shape, generator=generator, dtype=dtype)  # noqa: E731
        views = lambda x: x.repeat_interleave(v, dim=0)  # noqa: E731 - per camera → per view
        (e0, e1), (a0, a1) = self._ranges()
        on_sphere = c.elevation_sampling == "sphere"
        if c.elevation_sampling == "mixed":
            on_sphere = bool(torch.rand((), generator=generator) < 0.5)
        if on_sphere:  # inverse transform sampling: sin(e) uniform
            s0, s1 = math.sin(math.radians(e0)), math.sin(math.radians(e1))
            elevation = torch.rad2deg(torch.asin(u(s0, s1)))
        else:
            elevation = u(e0, e1)
        if c.batch_uniform_azimuth:
            azimuth = (torch.rand(g, generator=generator, dtype=dtype) + torch.arange(g, dtype=dtype)) / g
            azimuth = a0 + (a1 - a0) * azimuth
        else:
            azimuth = u(a0, a1)
        if v > 1:  # each camera's views around the object, wrapped to [-180, 180)
            azimuth = views(azimuth) + torch.arange(v, dtype=dtype).repeat(g) * (360.0 / v)
            azimuth = (azimuth + 180.0) % 360.0 - 180.0
        elevation = views(elevation)
        distance = views(u(*c.distance_range))
        fovy = views(u(*c.fovy_range))
        if c.relative_distance:
            distance = distance / torch.tan(torch.deg2rad(fovy) / 2)
        jitter = n(g, 3) if c.camera_perturb_distribution == "normal" else 2 * u(0.0, 1.0, (g, 3)) - 1
        position = spherical_to_position(elevation, azimuth, distance) + c.camera_perturb * views(jitter)
        center = views(c.center_perturb * n(g, 3))
        up = torch.tensor([0.0, 0.0, 1.0], dtype=dtype) + c.up_perturb * views(n(g, 3))
        if c.light_sample_strategy == "dreamfusion":
            light_dir = torch.nn.functional.normalize(position + c.light_position_perturb * views(n(g, 3)), dim=-1)
            light_position = light_dir * views(u(*c.light_distance_range))[:, None]
        else:
            light_distance = views(u(*c.light_distance_range))
            light_azimuth, light_elevation = views(u(-180.0, 180.0)), views(u(30.0, 90.0))
            light_position = magic3d_light_positions(position, light_distance, light_azimuth, light_elevation)
        c2w = look_at(position, center, up)
        fov = torch.deg2rad(fovy)
        mvp = projection_matrix(fov, self.width / self.height) @ torch.linalg.inv(c2w)
        rays_o, rays_d = camera_rays(c2w, fov, self.height, self.width)
        batch = CameraBatch(
            c2w=c2w,
            mvp=mvp,
            fovy=fov,
            elevation=elevation,
            azimuth=azimuth,
            distance=distance,
            position=position,
            light_position=light_position,
            rays_o=rays_o,
            rays_d=rays_d,
            height=self.height,
            width=self.width,
        )
        return batch.to(device)

    def val_cameras(self, device: torch.device | str = "cpu") -> CameraBatch:
        c = self.cfg
        return orbit_cameras(
            c.n_val_views,
            c.eval_elevation_deg,
            c.eval_distance,
            c.eval_fovy_deg,
            c.eval_height,
            c.eval_width,
            device=device,
        )

    def test_cameras(self, device: torch.device | str = "cpu") -> CameraBatch:
        c = self.cfg
        return orbit_cameras(
            c.n_test_views,
            c.eval_elevation_deg,
            c.eval_distance,
            c.eval_fovy_deg,
            c.eval_height,
            c.eval_width,
            device=device,
        )
