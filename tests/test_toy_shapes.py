"""Toy shapes (analytic SDFs) and the ground-truth metrics, against closed forms."""

import math
from types import SimpleNamespace

import pytest
import torch

from threestudio_like.eval.evaluator import RunInputs
from threestudio_like.eval.shape_metrics import (
    chamfer_distance,
    column_winding,
    grid_axis,
    grid_inside,
    grid_points,
    mesh_inside,
    volumetric_iou,
)
from threestudio_like.eval.toy_shape import ToyShapeEvaluator, score_mesh
from threestudio_like.geometry.base import Mesh
from threestudio_like.toyworld.shapes import SHAPES, parse_prompt


@pytest.mark.parametrize(
    "name,inside,outside",
    [
        ("sphere", [0, 0, 0.44], [0, 0, 0.46]),
        ("cube", [0.34, 0.34, 0.34], [0.36, 0, 0]),
        ("cylinder", [0.29, 0, 0.39], [0, 0, 0.41]),
        ("cone", [0, 0, 0.44], [0.3, 0, 0.2]),  # apex inside; off the slanted side outside
        ("torus", [0.32, 0, 0], [0, 0, 0]),  # the hole is empty
        ("mug", [-0.47, 0, 0], [0.47, 0, 0]),  # handle behind (−X), nothing in front
    ],
)
def test_sdf_signs_on_hand_picked_points(name, inside, outside):
    s = SHAPES[name]
    assert s.inside(torch.tensor([inside])).item() and not s.inside(torch.tensor([outside])).item()


def test_sdf_distances_are_exact_where_known():
    p = torch.tensor([[0.0, 0, 0.0], [0.8, 0, 0], [0, 0, -0.5]])
    assert torch.allclose(SHAPES["sphere"].sdf(p), torch.tensor([-0.45, 0.35, 0.05]), atol=1e-6)
    assert torch.allclose(SHAPES["cube"].sdf(p), torch.tensor([-0.35, 0.45, 0.15]), atol=1e-6)
    # cone: a point straight below the base centre is at distance to the base plane
    assert SHAPES["cone"].sdf(torch.tensor([[0.0, 0, -0.6]])).item() == pytest.approx(0.2, abs=1e-6)


def test_iou_of_sphere_mesh_and_of_two_spheres():
    mesh = SHAPES["sphere"].mesh(resolution=48)
    occupied = grid_inside(mesh, 48, 1.0)
    assert volumetric_iou(lambda p: occupied, SHAPES["sphere"].inside, resolution=48) > 0.97
    big = lambda p: p.norm(dim=-1) < 0.8  # noqa: E731
    small = lambda p: p.norm(dim=-1) < 0.4  # noqa: E731
    assert volumetric_iou(small, big, resolution=48) == pytest.approx((0.4 / 0.8) ** 3, rel=0.05)


@pytest.mark.parametrize("name", ["torus", "mug", "cube"])
def test_grid_inside_equals_winding_numbers(name):
    """Ray crossings per grid column (only the columns in each face's box) against the solid-angle
    winding number at every grid point, on closed meshes in general position (the cube turned)."""
    mesh = SHAPES[name].mesh(resolution=40)
    if name == "cube":
        c, s = math.cos(0.3), math.sin(0.3)
        mesh = Mesh(mesh.v_pos @ torch.tensor([[c, -s, 0.1], [s, c, 0.0], [-0.1, 0.0, 1.0]]).T, mesh.t_pos_idx)
    occupied = grid_inside(mesh, 20, 1.0)
    assert torch.equal(occupied, mesh_inside(mesh)(grid_points(20, 1.0)))
    assert 50 < int(occupied.sum()) < 20**3 // 4


def test_grid_inside_counts_a_box_on_the_grid_half_open():
    """A box whose corners lie on grid points: columns through its edges and points on its faces
    are counted as if moved by +ε, so it holds exactly the points of [x0, x1) × [y0, y1) × [z0, z1)."""
    ax = grid_axis(8, 1.0)
    lo, hi = ax[[2, 1, 3]], ax[[5, 6, 7]]
    corners = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=torch.float32)
    v = lo + corners * (hi - lo)  # vertex 4i + 2j + k
    faces = torch.tensor(
        [
            [0, 1, 3],
            [0, 3, 2],
            [4, 6, 7],
            [4, 7, 5],
            [0, 4, 5],
            [0, 5, 1],
            [2, 3, 7],
            [2, 7, 6],
            [0, 2, 6],
            [0, 6, 4],
            [1, 5, 7],
            [1, 7, 3],
        ]
    )
    box = Mesh(v, faces)
    expected = torch.zeros(8, 8, 8, dtype=torch.bool)
    expected[2:5, 1:6, 3:7] = True
    assert torch.equal(column_winding(box, ax) > 0, expected)
    assert column_winding(box, ax).max() == 1  # outward faces: +1 inside, never 2
    assert torch.equal(grid_inside(box, 8, 1.0), expected.reshape(-1))
    flipped = Mesh(v, faces[:, [0, 2, 1]])
    assert column_winding(flipped, ax).min() == -1 and not grid_inside(flipped, 8, 1.0).any()


def test_grid_cube_volume_converges():
    """The true cube (side 0.7, volume 0.343) on the scoring grid: the cell centres inside it are
    those within ±0.35, 8 a side of 24 (0.296, 14 % short), 22 a side of 64 (0.325, 5 % short) —
    one reason the score uses 64³."""
    for r, side in ((24, 8), (64, 22)):
        assert int((grid_axis(r, 1.0).abs() < 0.35).sum()) == side
        assert int(SHAPES["cube"].inside(grid_points(r, 1.0)).sum()) == side**3


def test_chamfer_of_concentric_spheres_is_their_gap():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(3000, 3, generator=g), dim=-1) * 0.5
    b = torch.nn.functional.normalize(torch.randn(3000, 3, generator=g), dim=-1) * 0.6
    assert chamfer_distance(a, b) == pytest.approx(0.1, abs=0.01)
    mesh = SHAPES["sphere"].mesh(resolution=48)
    pts = mesh.sample_surface(2000, g)
    assert pts.norm(dim=-1).sub(0.45).abs().max() < 0.02
    assert chamfer_distance(pts, mesh.sample_surface(2000, g)) < 0.03


def test_score_prefers_the_prompted_shape_and_reads_colour():
    mesh = SHAPES["cube"].mesh(resolution=40)
    red = torch.tensor([0.85, 0.15, 0.15])
    s = score_mesh(mesh, *parse_prompt("a red cube, side view"), lambda p: red.expand(len(p), 3))
    assert s["toy_shape"] == "cube" and s["iou"] > 0.9 and s["iou_margin"] > 0.1
    assert s["chamfer"] < 0.03 and s["color_error"] == pytest.approx(0.0, abs=1e-6)
    assert s["color_nearest"] == "red"
    dark_blue = torch.tensor([0.05, 0.1, 0.4])  # far from the toy blue, still nearer to it than to any other
    s = score_mesh(mesh, *parse_prompt("a blue cube"), lambda p: dark_blue.expand(len(p), 3))
    assert s["color_error"] == pytest.approx(float((dark_blue - torch.tensor([0.15, 0.3, 0.85])).norm()), rel=1e-5)
    assert s["color_error"] > 0.4 and s["color_nearest"] == "blue"
    assert ToyShapeEvaluator().evaluate(SimpleNamespace(), RunInputs(prompt="a hamburger")) is None  # nothing to score


@pytest.mark.parametrize("name", list(SHAPES))
def test_round_about_z_flag_matches_the_sdf(name):
    """The any-yaw IoU skips turning the shapes flagged round about z: their SDF must be unchanged
    by a turn (and the others' must change)."""
    p = torch.rand(4000, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    c, s = math.cos(0.7), math.sin(0.7)
    turned = torch.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1], p[:, 2]], 1)
    change = (SHAPES[name].sdf(turned) - SHAPES[name].sdf(p)).abs().max().item()
    assert (change < 1e-5) == SHAPES[name].round_about_z, change


def test_any_yaw_iou_finds_a_turned_cube():
    """A cube turned 30° about z: its plain IoU with the true cube is that of two squares 30° apart
    (overlap area by formula), its any-yaw IoU ≈ 1; a sphere is the same at every yaw."""
    mesh = SHAPES["cube"].mesh(resolution=40)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    turn = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    turned = Mesh(mesh.v_pos @ turn.T, mesh.t_pos_idx)
    score = score_mesh(turned, *parse_prompt("a red cube"))
    # two unit squares turned θ about their common centre: each corner of one loses the triangle
    # beyond the other's edge x cos θ + y sin θ = ½, legs ½ − ½ tan(θ/2) and ½ − (1 − sin θ)/(2 cos θ)
    t = math.radians(30)
    legs = (0.5 - 0.5 * math.tan(t / 2)) * (0.5 - (1 - math.sin(t)) / (2 * math.cos(t)))
    overlap = 1 - 2 * legs
    assert score["iou"] == pytest.approx(overlap / (2 - overlap), abs=0.02)
    assert score["iou_any_yaw"] > 0.9 > score["iou"] + 0.1 and score["best_other_any_yaw"] != "cube"
    assert score["iou_margin_any_yaw"] > 0.2 > score["iou_margin"]
    sphere = score_mesh(SHAPES["sphere"].mesh(resolution=40), *parse_prompt("a red sphere"))
    assert sphere["iou_any_yaw"] == pytest.approx(sphere["iou"], abs=0.02)


def test_parse_prompt():
    shape, color = parse_prompt("A Blue Torus, overhead view")
    assert shape.name == "torus" and color == "blue"
    assert parse_prompt("a cat") is None
