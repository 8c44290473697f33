"""Loss-term forms (ours and threestudio's) against hand-computed values and formulas."""

import math
from types import SimpleNamespace

import pytest
import torch

from threestudio_like.geometry.base import GeometryOutput, Mesh
from threestudio_like.renderers.base import RenderOutput
from threestudio_like.systems.regularizers import (
    LaplacianSmoothnessLoss,
    NormalConsistencyLoss,
    NormalPerturbationLoss,
    NormalSmoothnessLoss,
    OrientationLoss,
)

# a square pyramid without its base: apex 4 over the unit square 0..3
V = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 0.5]])
F = torch.tensor([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])


def _ctx(render, **kw):
    return SimpleNamespace(render=render, global_step=0, **kw)


def test_vertex_normal_consistency_by_hand():
    mesh_ctx = _ctx(RenderOutput(rgb=None, opacity=None, depth=None, extras={"mesh": Mesh(V, F)}))
    value = NormalConsistencyLoss({"normals": "vertex"}, name="nc")(mesh_ctx)["nc"]
    # area-weighted vertex normals: the apex's points up; each base corner's is the sum of its two
    # faces' (equal-area) normals: 8 edges, 4 base edges between corner normals, 4 to the apex
    face_n = torch.nn.functional.normalize(torch.linalg.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]]), dim=-1)
    corner = {
        k: torch.nn.functional.normalize(face_n[[i for i in range(4) if k in F[i]]].sum(0), dim=0) for k in range(4)
    }
    apex = torch.tensor([0.0, 0, 1])
    cos = [corner[a] @ corner[b] for a, b in ((0, 1), (1, 2), (2, 3), (3, 0))] + [corner[k] @ apex for k in range(4)]
    assert value.item() == pytest.approx(sum(1 - c.item() for c in cos) / 8, rel=1e-6)
    face = NormalConsistencyLoss({}, name="nc")(mesh_ctx)["nc"]  # ours: 1 − cos between adjacent faces
    assert face.item() == pytest.approx(1 - (face_n[0] @ face_n[1]).item(), rel=1e-6)


def test_umbrella_laplacian_norm_by_hand():
    ctx = _ctx(RenderOutput(rgb=None, opacity=None, depth=None, extras={"mesh": Mesh(V, F)}))
    value = LaplacianSmoothnessLoss({"form": "umbrella_norm"}, name="lap")(ctx)["lap"]
    # corner 0: neighbours 1, 3, 4 → 3·v0 − (v1 + v3 + v4) = −(1.5, 1.5, 0.5); by symmetry all corners
    # alike; apex: 4·v4 − Σ corners = (0, 0, 2)
    corner = math.sqrt(1.5**2 + 1.5**2 + 0.5**2)
    assert value.item() == pytest.approx((4 * corner + 2.0) / 5, rel=1e-6)
    # ours: mean ‖v − mean(neighbours)‖², neighbours counted per face (interior edges twice):
    # corner 0 → v0 − (v1 + v3 + 2·v4)/4 = −(0.5, 0.5, 0.25); apex → (0, 0, 0.5)
    ours = LaplacianSmoothnessLoss({}, name="lap")(ctx)["lap"]
    assert ours.item() == pytest.approx((4 * 0.5625 + 0.25) / 5, rel=1e-6)


def test_orientation_loss_normalizations():
    w = torch.tensor([[0.5], [0.25], [1.0]])
    n = torch.tensor([[0.0, 0, 1], [0.0, 0, -1], [0.6, 0, 0.8]])
    d = torch.tensor([[0.0, 0, 1], [0.0, 0, 1], [0.0, 0, 1]])
    opacity = torch.tensor([0.0, 0.3, 0.0, 1.0]).view(1, 2, 2, 1)  # 2 of 4 rays with any opacity
    render = RenderOutput(rgb=None, opacity=opacity, depth=None, extras={"weights": w, "normal_points": n, "dirs": d})
    total = 0.5 * 1.0 + 1.0 * 0.8**2  # Σ w·max(n·d, 0)²
    assert OrientationLoss({}, name="o")(_ctx(render))["o"].item() == pytest.approx(total / 4)
    visible = OrientationLoss({"normalize_by": "visible"}, name="o")(_ctx(render))["o"]
    assert visible.item() == pytest.approx(total / 2)


def test_normal_smoothness_of_the_normal_image():
    normal = torch.zeros(1, 3, 3, 3)
    normal[..., 2] = 2.0  # Σw·n need not be unit: normalised first
    normal[:, 2, :, :] = torch.tensor([0.0, 3.0, 0.0])  # bottom row faces +Y
    opacity = torch.ones(1, 3, 3, 1)
    opacity[:, :, 0] = 0.5  # left column half-transparent: blended towards black
    out = NormalSmoothnessLoss({}, name="ns")(_ctx(RenderOutput(rgb=None, opacity=opacity, depth=None, normal=normal)))
    m = torch.tensor([0.5, 0.5, 1.0]).expand(3, 3, 3).clone()
    m[2] = torch.tensor([0.5, 1.0, 0.5])
    m[:, 0] *= 0.5
    dy = ((m[1:] - m[:-1]) ** 2).mean()
    dx = ((m[:, 1:] - m[:, :-1]) ** 2).mean()
    assert out["ns"].item() == pytest.approx((dy + dx).item(), rel=1e-6)


def test_normal_perturbation_loss_against_its_formula():
    class Radial:  # normals of spheres about the origin
        def __call__(self, points, output_normal=False):
            return GeometryOutput(features=points, normal=torch.nn.functional.normalize(points, dim=-1))

    rays_o = torch.tensor([[0.0, 0, 2], [0.0, 2, 0]]).view(2, 1, 1, 3)
    idx, t_mid = torch.tensor([0, 0, 1]), torch.tensor([[1.0], [1.5], [1.2]])
    dirs = torch.tensor([[0.0, 0, -1], [0.0, 0, -1], [0.0, -1, 0]])
    points = rays_o.reshape(-1, 3)[idx] + t_mid * dirs
    extras = {"ray_indices": idx, "t_mid": t_mid, "dirs": dirs, "normal_points": Radial()(points).normal}
    ctx = _ctx(
        RenderOutput(rgb=None, opacity=None, depth=None, extras=extras),
        cameras=SimpleNamespace(rays_o=rays_o),
        system=SimpleNamespace(geometry=Radial()),
    )
    torch.manual_seed(0)
    value = NormalPerturbationLoss({"std": 0.05}, name="np")(ctx)["np"]
    torch.manual_seed(0)
    moved = torch.nn.functional.normalize(points + 0.05 * torch.randn(3, 3), dim=-1)
    assert value.item() == pytest.approx((extras["normal_points"] - moved).abs().mean().item(), rel=1e-6)
    assert value.item() > 0
