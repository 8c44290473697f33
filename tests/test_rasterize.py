"""Rasterizer ops (torch twin) against hand-computed cases, a dense reference and finite differences;
parity with nvdiffrast where it is installed with a GPU."""

import math

import pytest
import torch
import trimesh

from threestudio_like.core.errors import UserError
from threestudio_like.data.cameras import make_cameras
from threestudio_like.ops.rasterize import Rasterizer
from threestudio_like.ops.rasterize_nvdiffrast import nvdiffrast_available
from threestudio_like.ops.rasterize_torch import edge_topology, rasterize_torch

R = Rasterizer("torch")


def ndc_to_px(p, size):
    """NDC → continuous pixel coordinate whose integer k is the centre of pixel k."""
    return (p + 1.0) * size / 2 - 0.5


def dense_reference(pos, tri, height, width):
    """Independent brute force (float64): every pixel against every triangle, nearest z/w wins.

    Returns ids (B,H,W) (−1 empty) and perspective-correct (u, v) (B,H,W,2).
    """
    pos = pos.double()
    b = pos.shape[0]
    j = torch.arange(width, dtype=torch.float64)
    i = torch.arange(height, dtype=torch.float64)
    fy, fx = torch.meshgrid((2 * i + 1) / height - 1, (2 * j + 1) / width - 1, indexing="ij")
    fx, fy = fx.reshape(-1, 1, 1), fy.reshape(-1, 1, 1)  # (P,1,1)
    ids = torch.full((b, height * width), -1, dtype=torch.long)
    uv = torch.zeros(b, height * width, 2, dtype=torch.float64)
    for k in range(b):
        v = pos[k][tri.long()]  # (F,3,4)
        qx = v[None, :, :, 0] - fx * v[None, :, :, 3]
        qy = v[None, :, :, 1] - fy * v[None, :, :, 3]
        a = torch.stack(
            [
                qx[..., 1] * qy[..., 2] - qy[..., 1] * qx[..., 2],
                qx[..., 2] * qy[..., 0] - qy[..., 2] * qx[..., 0],
                qx[..., 0] * qy[..., 1] - qy[..., 0] * qx[..., 1],
            ],
            -1,
        )  # (P,F,3)
        total = a.sum(-1)
        bary = a / total[..., None]
        inside = (bary >= 0).all(-1) & (total != 0) & (v[None, :, :, 3] > 0).all(-1)
        z = (bary * v[None, :, :, 2]).sum(-1) / (bary * v[None, :, :, 3]).sum(-1)
        inside &= (z >= -1) & (z <= 1)
        z = torch.where(inside, z, torch.inf)
        zmin, arg = z.min(-1)
        hit = torch.isfinite(zmin)
        ids[k, hit] = arg[hit]
        uv[k, hit] = bary[hit, arg[hit], :2]
    return ids.view(b, height, width), uv.view(b, height, width, 2)


def icosphere_clip(subdivisions, res, elevation=20.0, azimuth=30.0, distance=3.0):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.int64)
    one = lambda x: torch.tensor([float(x)])  # noqa: E731
    cam = make_cameras(one(elevation), one(azimuth), one(distance), one(45), res, res)
    v_hom = torch.cat([verts, torch.ones_like(verts[:, :1])], dim=1)
    return (v_hom @ cam.mvp[0].T)[None].contiguous(), faces


# --------------------------------------------------------------------------- rasterize


def test_known_triangle_coverage_and_barycentrics():
    # screen-space triangle (w = 1) on an 8x8 image; pixel centres at NDC (2k+1)/8 − 1
    pos = torch.tensor([[[-0.8, -0.8, 0.5, 1.0], [0.8, -0.8, 0.5, 1.0], [0.0, 0.8, 0.5, 1.0]]])
    rast, db = R.rasterize(pos, torch.tensor([[0, 1, 2]], dtype=torch.int32), (8, 8))
    assert db is None and rast.shape == (1, 8, 8, 4)
    # hand-computed coverage: half-width of the triangle at height y is 0.8·(0.8 − y)/1.6
    expected = torch.zeros(8, 8, dtype=torch.bool)
    for i in range(8):
        y = (2 * i + 1) / 8 - 1
        for j in range(8):
            x = (2 * j + 1) / 8 - 1
            expected[i, j] = -0.8 <= y <= 0.8 and abs(x) <= 0.5 * (0.8 - y)
    assert torch.equal(rast[0, ..., 3] > 0, expected)
    assert torch.all(rast[0, ..., 3][expected] == 1.0)
    # barycentrics at pixel (row 1, col 1): NDC (−0.625, −0.625) → solve p = u·p0 + v·p1 + (1−u−v)·p2
    u, v = rast[0, 1, 1, 0].item(), rast[0, 1, 1, 1].item()
    w2 = (-0.625 + 0.8) / 1.6  # y only depends on the third weight
    x_weights = -0.625 - 0.0 * w2  # x = −0.8u + 0.8v
    v_exp = ((1 - w2) + x_weights / 0.8) / 2
    assert u == pytest.approx(1 - w2 - v_exp, abs=1e-6) and v == pytest.approx(v_exp, abs=1e-6)
    assert rast[0, 1, 1, 2].item() == pytest.approx(0.5, abs=1e-6)
    assert torch.all(rast[0][~expected] == 0)


def test_perspective_correct_barycentrics_with_different_w():
    ndc = torch.tensor([[-0.9, -0.7, 0.1], [0.8, -0.9, 0.3], [0.1, 0.9, -0.2]], dtype=torch.float64)
    w = torch.tensor([1.0, 2.5, 4.0], dtype=torch.float64)
    pos = torch.cat([ndc * w[:, None], w[:, None]], 1)[None]  # clip = (ndc·w, w)
    rast, _ = R.rasterize(pos, torch.tensor([[0, 1, 2]]), (16, 16))
    covered = (rast[0, ..., 3] > 0).nonzero()
    assert len(covered) > 40
    for i, j in covered.tolist():
        x, y = (2 * j + 1) / 16 - 1, (2 * i + 1) / 16 - 1
        # screen-space barycentrics λ, then perspective correction b_k ∝ λ_k / w_k
        m = torch.stack([ndc[:, 0], ndc[:, 1], torch.ones(3, dtype=torch.float64)])
        lam = torch.linalg.solve(m, torch.tensor([x, y, 1.0], dtype=torch.float64))
        b = (lam / w) / (lam / w).sum()
        assert rast[0, i, j, 0].item() == pytest.approx(b[0].item(), abs=1e-9)
        assert rast[0, i, j, 1].item() == pytest.approx(b[1].item(), abs=1e-9)
        assert rast[0, i, j, 2].item() == pytest.approx((lam * ndc[:, 2]).sum().item(), abs=1e-6)


def test_depth_test_two_overlapping_triangles_either_order():
    near = [[-0.9, -0.9, -0.5, 1], [0.5, -0.9, -0.5, 1], [-0.9, 0.5, -0.5, 1]]
    far = [[-0.5, -0.5, 0.5, 1], [0.9, -0.5, 0.5, 1], [0.9, 0.9, 0.5, 1]]
    for order in ([near, far], [far, near]):
        pos = torch.tensor([order[0] + order[1]])
        tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
        rast, _ = R.rasterize(pos, tri, (32, 32))
        ids, _ = dense_reference(pos, tri, 32, 32)
        assert torch.equal(rast[..., 3].long() - 1, ids)
        near_id = 0 if order[0] is near else 1
        # overlap region exists and belongs to the near triangle
        assert (ids == near_id).sum() > 50 and (ids == 1 - near_id).sum() > 50
        assert torch.all(rast[..., 2][ids == near_id] == -0.5)


def test_interpenetrating_triangles_per_pixel_depth():
    # two triangles crossing in depth: the winner switches along the image
    pos = torch.tensor(
        [
            [
                [-0.9, -0.9, -0.8, 1],
                [0.9, -0.9, 0.8, 1],
                [0.0, 0.9, 0.0, 1],
                [-0.9, 0.9, 0.7, 1],
                [0.9, 0.9, -0.7, 1],
                [0.0, -0.9, 0.0, 1],
            ]
        ]
    )
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    rast, _ = R.rasterize(pos, tri, (40, 40))
    ids, uv = dense_reference(pos, tri, 40, 40)
    got = rast[..., 3].long() - 1
    assert (got == ids).float().mean() > 0.995  # ties where both depths are equal
    both = (got == ids) & (ids >= 0)
    assert torch.allclose(rast[..., :2][both].double(), uv[both], atol=1e-5)
    assert set(ids.unique().tolist()) == {-1, 0, 1}


@pytest.mark.parametrize("subdivisions,res", [(2, 48), (3, 64)])
def test_mesh_matches_dense_reference_and_has_no_holes(subdivisions, res):
    pos, tri = icosphere_clip(subdivisions, res)
    pos = torch.cat([pos, icosphere_clip(subdivisions, res, elevation=-40, azimuth=200, distance=2.2)[0]])
    rast, _ = R.rasterize(pos, tri.int(), (res, res))
    ids, uv = dense_reference(pos, tri, res, res)
    got = rast[..., 3].long() - 1
    assert torch.equal(got >= 0, ids >= 0)  # same silhouette, no holes on shared edges
    assert (got == ids).float().mean() > 0.995
    same = (got == ids) & (ids >= 0)
    assert (rast[..., :2][same].double() - uv[same]).abs().max() < 2e-3
    # closed sphere: every pixel inside the silhouette's convex outline is covered
    rows_covered = (got[0] >= 0).sum(1)
    assert rows_covered.max() > res // 3


def test_camera_convention_pixel_matches_its_ray():
    # a tiny triangle around a world point above and left of centre lands on the pixel whose
    # camera ray passes through that point, in the upper half of the image (row 0 = top)
    one = lambda x: torch.tensor([float(x)])  # noqa: E731
    cam = make_cameras(one(10), one(25), one(3), one(50), 40, 48)
    point = torch.tensor([0.1, -0.35, 0.55])
    right, up = cam.c2w[0, :3, 0], cam.c2w[0, :3, 1]
    verts = torch.stack([point - 0.06 * right - 0.05 * up, point + 0.06 * right - 0.05 * up, point + 0.07 * up])
    clip = torch.cat([verts, torch.ones(3, 1)], 1) @ cam.mvp[0].T
    rast, _ = R.rasterize(clip[None], torch.tensor([[0, 1, 2]]), (40, 48))
    covered = (rast[0, ..., 3] > 0).nonzero().tolist()
    assert 1 <= len(covered) <= 12
    to_point = torch.nn.functional.normalize(point - cam.position[0], dim=0)
    focal = 20 / math.tan(math.radians(25))
    for i, j in covered:
        assert i < 20  # above the centre → upper half
        assert torch.acos((cam.rays_d[0, i, j] @ to_point).clamp(max=1)) * focal < 2.5  # pixels


def test_chunked_enumeration_matches_single_pass():
    pos, tri = icosphere_clip(2, 40)
    big = torch.tensor([[[-3.0, -3.0, 0.9, 1], [3.0, -3.0, 0.9, 1], [0.0, 3.0, 0.9, 1]]])
    pos = torch.cat([pos, big.expand(1, -1, -1)], 1)
    tri = torch.cat([tri, torch.tensor([[pos.shape[1] - 3, pos.shape[1] - 2, pos.shape[1] - 1]])])
    full = rasterize_torch(pos, tri, (40, 40))
    for chunk in (7, 333):
        assert torch.equal(rasterize_torch(pos, tri, (40, 40), max_candidates=chunk), full)
    assert torch.all(full[..., 3] > 0)  # the screen-filling triangle behind the sphere


def test_skips_behind_camera_beyond_far_and_degenerate():
    pos = torch.tensor(
        [
            [
                [-0.5, -0.5, 0.0, 1],
                [0.5, -0.5, 0.0, -1],
                [0.0, 0.5, 0.0, 1],  # w < 0
                [-0.5, -0.5, 1.5, 1],
                [0.5, -0.5, 1.5, 1],
                [0.0, 0.5, 1.5, 1],  # z/w > 1
                [-0.5, -0.5, 0.0, 1],
                [0.0, 0.0, 0.0, 1],
                [0.5, 0.5, 0.0, 1],
            ]
        ]
    )  # collinear
    rast, _ = R.rasterize(pos, torch.arange(9).view(3, 3), (16, 16))
    assert torch.all(rast == 0)


def test_empty_mesh_and_empty_image():
    pos = torch.zeros(2, 0, 4, requires_grad=True)
    tri = torch.zeros(0, 3, dtype=torch.int32)
    rast, _ = R.rasterize(pos, tri, (8, 6))
    assert rast.shape == (2, 8, 6, 4) and torch.all(rast == 0)
    out, _ = R.interpolate(torch.zeros(0, 3), rast, tri)
    color = torch.rand(2, 8, 6, 3)
    assert torch.all(out == 0) and torch.equal(R.antialias(color, rast, pos, tri), color)


def test_rast_uv_gradient_matches_finite_differences():
    ndc = torch.tensor([[-0.83, -0.71, 0.1], [0.77, -0.88, 0.3], [0.09, 0.86, -0.2]], dtype=torch.float64)
    w = torch.tensor([1.3, 2.1, 3.2], dtype=torch.float64)
    pos = torch.cat([ndc * w[:, None], w[:, None]], 1)[None].requires_grad_(True)
    tri = torch.tensor([[0, 1, 2]])
    assert torch.autograd.gradcheck(lambda p: R.rasterize(p, tri, (12, 12))[0][..., :2], (pos,), eps=1e-7, atol=1e-6)
    # z/w and the id carry no gradient (nvdiffrast semantics)
    (g,) = torch.autograd.grad(R.rasterize(pos, tri, (12, 12))[0][..., 2:].sum(), pos, allow_unused=True)
    assert g is None or torch.all(g == 0)


# --------------------------------------------------------------------------- interpolate


@pytest.mark.parametrize("batched_attr", [False, True])
def test_interpolate_matches_formula_and_gradients(batched_attr):
    torch.manual_seed(0)
    pos, tri = icosphere_clip(1, 20)
    pos = torch.cat([pos, pos * torch.tensor([1.1, 0.9, 1.0, 1.0])]).double()
    rast, _ = R.rasterize(pos, tri, (20, 20))
    attr = torch.randn(2 if batched_attr else 1, pos.shape[1], 3, dtype=torch.float64)
    if not batched_attr:
        attr = attr[0]
    out, da = R.interpolate(attr, rast, tri)
    assert da is None and out.shape == (2, 20, 20, 3)
    tid = rast[..., 3].long() - 1
    for b, i, j in [(0, 10, 10), (1, 9, 11), (0, 7, 12)]:
        assert tid[b, i, j] >= 0
        a = (attr[b] if batched_attr else attr)[tri[tid[b, i, j]]]
        u, v = rast[b, i, j, 0], rast[b, i, j, 1]
        assert torch.allclose(out[b, i, j], u * a[0] + v * a[1] + (1 - u - v) * a[2])
    assert torch.all(out[tid < 0] == 0)
    uv = rast[..., :2].clone().requires_grad_(True)
    rest = rast[..., 2:]
    attr.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, t: R.interpolate(a, torch.cat([t, rest], -1), tri)[0], (attr, uv), fast_mode=True
    )


def test_gradient_flows_from_interpolated_attribute_to_positions():
    pos, tri = icosphere_clip(1, 24)
    pos = pos.double().requires_grad_(True)
    attr = torch.randn(pos.shape[1], 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda p: R.interpolate(attr, R.rasterize(p, tri, (24, 24))[0], tri)[0],
        (pos,),
        eps=1e-7,
        atol=1e-5,
        fast_mode=True,
    )


# --------------------------------------------------------------------------- texture


def manual_bilinear(tex, u, v, boundary):
    th, tw = tex.shape[:2]
    if boundary == "wrap":
        u, v = u - math.floor(u), v - math.floor(v)
    x, y = u * tw - 0.5, v * th - 0.5
    if boundary == "clamp":
        x, y = min(max(x, 0.0), tw - 1.0), min(max(y, 0.0), th - 1.0)
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0

    def texel(c, r):
        if boundary == "wrap":
            return tex[r % th, c % tw]
        if boundary == "clamp":
            return tex[min(max(r, 0), th - 1), min(max(c, 0), tw - 1)]
        inside = 0 <= r < th and 0 <= c < tw
        return tex[r, c] if inside else torch.zeros_like(tex[0, 0])

    return (1 - fy) * ((1 - fx) * texel(x0, y0) + fx * texel(x0 + 1, y0)) + fy * (
        (1 - fx) * texel(x0, y0 + 1) + fx * texel(x0 + 1, y0 + 1)
    )


@pytest.mark.parametrize("boundary", ["wrap", "clamp", "zero"])
def test_texture_bilinear_matches_manual(boundary):
    torch.manual_seed(1)
    tex = torch.randn(1, 3, 5, 2, dtype=torch.float64)
    uv = torch.tensor([[[[0.13, 0.41], [0.97, 0.02], [-0.21, 1.33], [0.52, 0.47], [0.05, 0.93]]]], dtype=torch.float64)
    out = R.texture(tex, uv, filter_mode="linear", boundary_mode=boundary)
    for k in range(uv.shape[2]):
        u, v = uv[0, 0, k].tolist()
        assert torch.allclose(out[0, 0, k], manual_bilinear(tex[0], u, v, boundary), atol=1e-12)
    tex.requires_grad_(True)
    uv_in = uv.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t, c: R.texture(t, c, boundary_mode=boundary), (tex, uv_in))


def test_texture_nearest_and_batch_broadcast():
    tex = torch.arange(12, dtype=torch.float32).view(1, 3, 4, 1)
    uv = torch.tensor([[[[0.1, 0.1], [0.99, 0.99], [0.3, 0.7]]], [[[1.25, 0.5], [0.0, 0.0], [0.6, 0.2]]]])
    out = R.texture(tex, uv, filter_mode="nearest")
    # texel (row ⌊v·3⌋, col ⌊u·4⌋), wrap → fractional part first
    assert out[..., 0].tolist() == [[[0.0, 11.0, 9.0]], [[5.0, 0.0, 2.0]]]


# --------------------------------------------------------------------------- antialias


def test_edge_topology_opposite_vertices():
    tri = torch.tensor([[0, 1, 2], [2, 1, 3], [3, 4, 4]])
    opp = edge_topology(tri)
    # face 0: edge (1,2) opposite vertex 0 is shared with face 1 whose third vertex is 3
    assert opp[0].tolist() == [3, -1, -1]
    assert opp[1].tolist() == [-1, -1, 0]  # face 1 edge (2,1) (opposite its vertex 3) ↔ vertex 0
    assert opp[2].tolist() == [-1, -1, -1]  # degenerate face


def _area_px(p, height, width):
    sx = ndc_to_px(p[:, 0] / p[:, 3], width)
    sy = ndc_to_px(p[:, 1] / p[:, 3], height)
    return 0.5 * ((sx[1] - sx[0]) * (sy[2] - sy[0]) - (sx[2] - sx[0]) * (sy[1] - sy[0])).abs()


def test_antialias_position_gradient_matches_coverage_derivative():
    """d Σ antialiased(mask) / d vertex ≈ d (exact covered area) / d vertex, sign and size."""
    h = w = 48
    p = torch.tensor([[-0.61, -0.52, 0.2, 1], [0.73, -0.33, 0.2, 1], [-0.12, 0.67, 0.2, 1]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2]])
    pos = p[None].clone().requires_grad_(True)
    rast, _ = R.rasterize(pos, tri, (h, w))
    mask = (rast[..., 3:] > 0).double()
    out = R.antialias(mask, rast, pos, tri)
    (g,) = torch.autograd.grad(out.sum(), pos)
    pa = p.clone().requires_grad_(True)
    (g_area,) = torch.autograd.grad(_area_px(pa, h, w), pa)
    g, g_area = g[0, :, :2], g_area[:, :2]
    assert torch.all(torch.sign(g) == torch.sign(g_area))
    assert (g - g_area).norm() < 0.15 * g_area.norm()
    # and the antialiased coverage moves as the exact area does under a half-pixel shift
    step = torch.zeros_like(p)
    step[1, 0] = 1.0 / w  # vertex 1 by half a pixel in x
    moved = (p + step)[None]
    rast2, _ = R.rasterize(moved, tri, (h, w))
    out2 = R.antialias((rast2[..., 3:] > 0).double(), rast2, moved, tri)
    fd = (out2.sum() - out.sum()).item()
    exact = (_area_px(p + step, h, w) - _area_px(p, h, w)).item()
    assert fd == pytest.approx(exact, rel=0.3)


def test_antialias_gradcheck_with_fixed_rasterization():
    h = w = 16
    pos = torch.tensor(
        [[[-0.61, -0.52, 0.2, 1], [0.73, -0.33, 0.2, 1.3], [-0.12, 0.67, 0.2, 0.9]]],
        dtype=torch.float64,
        requires_grad=True,
    )
    tri = torch.tensor([[0, 1, 2]])
    rast, _ = R.rasterize(pos.detach(), tri, (h, w))
    color = torch.rand(1, h, w, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, p: R.antialias(c, rast, p, tri), (color, pos))


def test_antialias_leaves_interior_edges_alone():
    # a quad of two triangles sharing its diagonal: only the outer silhouette gets blended
    h = w = 24
    pos = torch.tensor([[[-0.7, -0.6, 0, 1], [0.65, -0.7, 0, 1], [0.7, 0.6, 0, 1], [-0.6, 0.7, 0, 1]]])
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast, _ = R.rasterize(pos, tri, (h, w))
    color = torch.stack([(rast[..., 3] == 1).float(), (rast[..., 3] == 2).float()], -1)
    out = R.antialias(color, rast, pos, tri)
    covered = rast[0, ..., 3] > 0
    interior = covered.clone()
    interior[1:] &= covered[:-1]
    interior[:-1] &= covered[1:]
    interior[:, 1:] &= covered[:, :-1]
    interior[:, :-1] &= covered[:, 1:]
    interior[0] = interior[-1] = interior[:, 0] = interior[:, -1] = False
    assert torch.equal(out[0][interior], color[0][interior])
    assert not torch.equal(out, color)  # the silhouette did change


# --------------------------------------------------------------------------- dispatch


def test_implementation_choice_and_errors():
    assert Rasterizer("auto").backend_for(torch.device("cpu")) == "torch"
    with pytest.raises(UserError, match="auto\\|torch\\|nvdiffrast"):
        Rasterizer("opengl")
    if not nvdiffrast_available():
        with pytest.raises(UserError, match=r"pip install -e \.\[cuda\]"):
            Rasterizer("nvdiffrast")
    with pytest.raises(UserError, match="filter_mode"):
        R.texture(torch.zeros(1, 2, 2, 1), torch.zeros(1, 1, 1, 2), filter_mode="linear-mipmap-linear")


# --------------------------------------------------------------------------- parity with nvdiffrast


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_parity_with_nvdiffrast():
    pytest.importorskip("nvdiffrast", reason="nvdiffrast not installed (pip install -e .[cuda])")
    fast, twin = Rasterizer("nvdiffrast"), Rasterizer("torch")
    pos, tri = icosphere_clip(3, 128)
    pos = torch.cat([pos, icosphere_clip(3, 128, elevation=-30, azimuth=120)[0]])
    tri = tri.int()
    attr = torch.rand(pos.shape[1], 3)
    tex = torch.rand(1, 16, 16, 3)
    results = {}
    for name, r, dev in (("fast", fast, "cuda"), ("twin", twin, "cpu")):
        p = pos.to(dev).requires_grad_(True)
        a = attr.to(dev).requires_grad_(True)
        t = tex.to(dev).requires_grad_(True)
        rast, _ = r.rasterize(p, tri.to(dev), (128, 128))
        col, _ = r.interpolate(a, rast, tri.to(dev))
        col = col + r.texture(t, col[..., :2].clamp(0, 1))
        out = r.antialias(col, rast, p, tri.to(dev))
        out.square().sum().backward()
        results[name] = [x.detach().cpu() for x in (rast, out, p.grad, a.grad, t.grad)]
    (r_f, o_f, gp_f, ga_f, gt_f), (r_t, o_t, gp_t, ga_t, gt_t) = results["fast"], results["twin"]
    same = r_f[..., 3] == r_t[..., 3]
    assert same.float().mean() > 0.995
    assert torch.allclose(r_f[..., :3][same], r_t[..., :3][same], atol=2e-3)
    assert (o_f - o_t).abs()[same].mean() < 1e-3
    for g_f, g_t in ((gp_f, gp_t), (ga_f, ga_t), (gt_f, gt_t)):
        assert (g_f - g_t).norm() < 0.02 * g_f.norm()


@pytest.mark.parametrize("perspective", [False, True])
def test_grid_with_vertices_on_pixel_centres_is_watertight(perspective):
    """A triangulated grid whose vertices sit on pixel centres (every edge passes through pixel
    centres, rows meet vertices exactly): no pixel inside the grid is left uncovered. With w = 1
    the coverage equals the dense reference's; with random w (perspective division rounds the
    vertices off the centres by an ulp) the grid's outer border is ambiguous, its inside not."""
    size, step = 24, 3
    ticks = torch.arange(2, 22, step, dtype=torch.float32)  # pixel-centre coordinates
    gy, gx = torch.meshgrid(ticks, ticks, indexing="ij")
    n = ticks.numel()
    ndc = lambda p: (2 * p + 1) / size - 1  # noqa: E731
    w = 1.0 + 0.1 * torch.rand(n * n, generator=torch.Generator().manual_seed(0)) if perspective else torch.ones(n * n)
    xyzw = torch.stack([ndc(gx).flatten() * w, ndc(gy).flatten() * w, 0.5 * w, w], 1)
    idx = torch.arange(n * n).view(n, n)
    a, b, c, d = idx[:-1, :-1].flatten(), idx[:-1, 1:].flatten(), idx[1:, :-1].flatten(), idx[1:, 1:].flatten()
    tri = torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)])
    rast, _ = R.rasterize(xyzw[None], tri.int(), (size, size))
    covered = rast[0, ..., 3] > 0
    lo, hi = int(ticks[0]), int(ticks[-1])
    assert covered[lo + 1 : hi, lo + 1 : hi].all()
    if not perspective:
        ids, _ = dense_reference(xyzw[None], tri, size, size)
        assert torch.equal(covered, ids[0] >= 0) and covered.sum() == (hi - lo + 1) ** 2


def test_triangles_crossing_and_outside_the_image_borders():
    """Triangles cut by the top/bottom/side borders, or wholly above, below or beside the
    image, against the dense reference."""
    pos = torch.tensor(
        [
            [
                [-0.6, -1.7, 0.2, 1],
                [0.7, -0.2, 0.2, 1],
                [-0.1, 1.6, 0.2, 1],  # spans all rows
                [-1.5, 0.6, 0.1, 1],
                [0.3, 1.4, 0.1, 1],
                [0.9, 0.9, 0.1, 1],  # cut by the bottom
                [-0.5, -3.0, 0.0, 1],
                [0.5, -2.5, 0.0, 1],
                [0.0, -1.2, 0.0, 1],  # wholly above
                [-0.5, 1.2, 0.0, 1],
                [0.5, 2.5, 0.0, 1],
                [0.0, 3.0, 0.0, 1],  # wholly below
                [1.2, -0.5, 0.0, 1],
                [2.0, 0.5, 0.0, 1],
                [1.5, 0.0, 0.0, 1],
            ]
        ]
    )  # beside
    tri = torch.arange(15).view(5, 3)
    rast, _ = R.rasterize(pos, tri.int(), (20, 17))
    ids, uv = dense_reference(pos, tri, 20, 17)
    got = rast[..., 3].long() - 1
    assert torch.equal(got, ids) and set(ids.unique().tolist()) == {-1, 0, 1}
    assert (rast[..., :2][ids >= 0].double() - uv[ids >= 0]).abs().max() < 1e-4


def test_triangles_crossing_the_near_and_far_planes_are_clipped_per_pixel():
    """A triangle whose z/w runs from −1.6 to 1.4 keeps only its pixels with z/w in [−1, 1]; the
    one behind it shows where it is cut (dense reference: per-pixel depth test and clip)."""
    pos = torch.tensor(
        [
            [
                [-0.9, -0.9, -1.6, 1],
                [0.9, -0.9, 1.4, 1],
                [0.0, 0.9, 0.1, 1],  # tilted through both planes
                [-1.0, -1.0, 0.5, 1],
                [1.0, -1.0, 0.5, 1],
                [0.0, 1.0, 0.5, 1],
            ]
        ]
    )  # flat, behind
    tri = torch.arange(6).view(2, 3)
    rast, _ = R.rasterize(pos, tri.int(), (24, 24))
    ids, uv = dense_reference(pos, tri, 24, 24)
    got = rast[..., 3].long() - 1
    depth = rast[..., 2][got == 0]
    assert (got != ids).sum() <= 2  # pixel centres within float32 rounding of z/w = ±1
    assert set(ids.unique().tolist()) == {-1, 0, 1} and depth.min() >= -1 and depth.max() <= 1
    both = (got == ids) & (ids >= 0)
    assert (rast[..., :2][both].double() - uv[both]).abs().max() < 1e-4
