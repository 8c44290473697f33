"""The raster renderer's colour guards (renderers/raster.py): surface facing outside the training
cameras' elevations (grazing guard) and pixels at the silhouette's edge (border guard) pass no
colour gradient; the rest is untouched, the image is unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from threestudio_like.background.base import SolidBackground
from threestudio_like.cli import compose_config
from threestudio_like.core.errors import UserError
from threestudio_like.core.stages import resolve_stage
from threestudio_like.data.cameras import make_cameras
from threestudio_like.geometry.base import GeometryOutput, Mesh, SurfaceGeometry
from threestudio_like.materials.base import NoMaterial
from threestudio_like.renderers.raster import RasterRenderer, elevation_cosine, grazing_color_weight

HALF = 0.4
"""Half side of the test box."""


class BoxWithLeafFeatures(SurfaceGeometry):
    """A box whose faces do not share vertices (so the interpolated normal of a point is its
    face's normal); ``forward`` returns fresh zero features that keep their gradient."""

    def __init__(self) -> None:
        super().__init__()
        box = trimesh.creation.box(extents=(2 * HALF,) * 3)
        box.unmerge_vertices()
        self._mesh = Mesh(torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces))
        self.points: torch.Tensor | None = None
        self.features: torch.Tensor | None = None

    def mesh(self) -> Mesh:
        return self._mesh

    def forward(self, points: torch.Tensor, output_normal: bool = False) -> GeometryOutput:
        self.points = points.detach()
        self.features = torch.zeros(points.shape[0], 3, requires_grad=True)
        return GeometryOutput(features=self.features)


def test_elevation_cosine_is_the_angle_to_the_nearest_camera_elevation():
    # normals at these elevations (degrees) against cameras at −10…60°: cos of the angle to −10° or 60°
    elevations = torch.tensor([-90.0, -45.0, -10.0, 0.0, 60.0, 75.0, 90.0])
    expected = torch.tensor([0.173648, 0.819152, 1.0, 1.0, 1.0, 0.965926, 0.866025])
    got = elevation_cosine(torch.sin(torch.deg2rad(elevations)), (-10.0, 60.0))
    assert torch.allclose(got, expected, atol=1e-5)


def test_grazing_weight_is_zero_below_the_low_cosine_one_above_the_high_linear_between():
    z = torch.sin(torch.deg2rad(torch.tensor([-90.0, -45.0, -20.0, 0.0])))
    got = grazing_color_weight(z, (-10.0, 60.0), (0.8, 0.99))
    # −45°: cos 35° = 0.819152 → (0.819152 − 0.8) / 0.19; −20°: cos 10° = 0.984808 → 0.920041
    expected = torch.tensor([0.0, (0.819152 - 0.8) / 0.19, (0.984808 - 0.8) / 0.19, 1.0])
    assert torch.allclose(got, expected, atol=1e-5)


def _render(guard: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rgb, feature gradient, point z) of the box seen from below (−30°, so its base shows)."""
    t = lambda *v: torch.tensor([float(x) for x in v])  # noqa: E731
    cams = make_cameras(t(-30), t(30), t(2.5), t(40), 48, 48)
    cfg = {"implementation": "torch"}
    if guard:
        cfg["grazing_elevation_range"] = (-10.0, 60.0)
    geometry = BoxWithLeafFeatures()
    out = RasterRenderer(cfg)(cams, geometry, NoMaterial(), SolidBackground(), "albedo")
    weights = torch.linspace(0.5, 1.5, out.rgb.numel()).reshape(out.rgb.shape)
    (out.rgb * weights).sum().backward()
    return out.rgb.detach(), geometry.features.grad, geometry.points[:, 2]


def test_guard_stops_the_colour_gradient_of_the_base_only_and_leaves_the_image():
    rgb_off, grad_off, z = _render(guard=False)
    rgb_on, grad_on, z_on = _render(guard=True)
    assert torch.equal(z, z_on) and torch.equal(rgb_off, rgb_on)
    base = z < -HALF + 1e-4  # the face pointing straight down: 80° below the lowest camera
    sides = z.abs() < HALF - 1e-3  # vertical faces: inside the cameras' elevations
    assert base.sum() > 50 and sides.sum() > 50
    assert grad_off[base].abs().sum() > 0
    assert torch.all(grad_on[base] == 0)
    assert torch.allclose(grad_on[sides], grad_off[sides])


def test_guard_rejects_an_empty_cosine_range():
    with pytest.raises(UserError, match="grazing_cos"):
        RasterRenderer({"grazing_cos": (0.9, 0.5)})


def test_default_refine_guards_the_elevations_it_trains_at():
    cfg = compose_config([])
    renderer = resolve_stage(cfg, "refine")["renderer"]
    assert list(renderer["grazing_elevation_range"]) == list(cfg.data.elevation_range)
    assert math.isclose(min(cfg.data.elevation_range), -10.0)


def test_interior_is_the_mask_eroded_by_a_square_window():
    from scipy.ndimage import binary_erosion

    from threestudio_like.renderers.raster import interior

    g = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 20, 24, 1, generator=g) > 0.3
    mask[:, 5:15, 6:18] = True
    for px in (1, 2):
        square = torch.ones(2 * px + 1, 2 * px + 1, dtype=torch.bool).numpy()
        # outside the image counts as covered (border_value=1): only the silhouette's own edge is guarded
        expected = np.stack([binary_erosion(m[..., 0].numpy(), square, border_value=1) for m in mask])
        assert torch.equal(interior(mask, px).bool(), torch.from_numpy(expected))


def test_border_guard_stops_the_colour_gradient_at_the_silhouette_edge_only():
    t = lambda *v: torch.tensor([float(x) for x in v])  # noqa: E731
    cams = make_cameras(t(20), t(30), t(2.5), t(40), 48, 48)
    grads, images = [], []
    for px in (0, 1):
        geometry = BoxWithLeafFeatures()
        renderer = RasterRenderer({"implementation": "torch", "border_guard_px": px, "antialias": False})
        out = renderer(cams, geometry, NoMaterial(), SolidBackground(), "albedo")
        weights = torch.linspace(0.5, 1.5, out.rgb.numel()).reshape(out.rgb.shape)
        (out.rgb * weights).sum().backward()
        grads.append(geometry.features.grad)
        images.append(out.rgb.detach())
        covered = out.opacity[0, ..., 0] > 0
    assert torch.equal(images[0], images[1])
    # the points are the covered pixels in row-major order; edge: a covered pixel with an empty 8-neighbour
    padded = torch.nn.functional.pad((~covered).float()[None, None], (1, 1, 1, 1))
    edge = (torch.nn.functional.max_pool2d(padded, 3, stride=1)[0, 0] > 0)[covered]
    assert edge.sum() > 20 and (~edge).sum() > 200
    assert torch.all(grads[1][edge] == 0) and grads[0][edge].abs().sum() > 0
    assert torch.equal(grads[1][~edge], grads[0][~edge])


def test_default_refine_guards_the_silhouette_edge():
    assert resolve_stage(compose_config([]), "refine")["renderer"]["border_guard_px"] == 1
