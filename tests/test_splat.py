"""Gaussian splatting: the pure-torch twin against an independent dense implementation written
here, finite differences, closed-form cases, culling; the renderer's camera convention, background
and shading; parity with gsplat where CUDA and gsplat are present."""

from __future__ import annotations

import math

import pytest
import torch

from threestudio_like.background.base import SolidBackground
from threestudio_like.core.errors import UserError
from threestudio_like.data.cameras import make_cameras
from threestudio_like.materials.base import DiffuseWithPointLight
from threestudio_like.ops.splat import rasterize_gaussians, splat_backend
from threestudio_like.ops.splat_gsplat import gsplat_available
from threestudio_like.renderers.splat import SplatRenderer

F64 = torch.float64


# --------------------------------------------------------------------------- independent reference


def rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate v (...,3) by unit quaternions q (...,4) = (w, x, y, z): the vector part of q v q*."""
    w, u = q[..., :1], q[..., 1:]
    return v + 2 * w * torch.linalg.cross(u, v, dim=-1) + 2 * torch.linalg.cross(u, torch.linalg.cross(u, v, dim=-1))


def dense_splat(means, quats, scales, opacities, colors, viewmats, ks, width, height, near=0.01, eps2d=0.3):
    """Every Gaussian at every pixel: Σ = R S² Rᵀ, Σ₂ = J W Σ Wᵀ Jᵀ + eps2d·I (J at the mean, its
    x/z, y/z clamped to 1.3 × the half field of view), α = min(.99, o·exp(−½ dᵀΣ₂⁻¹d)), zeroed
    below 1/255 and behind the near plane; sort by camera z, T = cumprod(1 − α), a pixel keeps the
    Gaussians while T after them stays above 1e-4. Returns (colours, alpha, depth) (B,H,W,·)."""
    q = torch.nn.functional.normalize(quats, dim=-1)
    rot = torch.stack([rotate(q, torch.eye(3, dtype=means.dtype)[i].expand_as(means)) for i in range(3)], dim=-1)
    cov = rot @ torch.diag_embed(scales**2) @ rot.transpose(-1, -2)
    cols, rows = torch.arange(width, dtype=means.dtype), torch.arange(height, dtype=means.dtype)
    jj, ii = torch.meshgrid(cols, rows, indexing="xy")
    pixels = torch.stack([jj + 0.5, ii + 0.5], dim=-1).reshape(-1, 2)  # (P,2) (x, y), row-major
    outs = []
    for b in range(viewmats.shape[0]):
        w_rot, t = viewmats[b, :3, :3], viewmats[b, :3, 3]
        p = means @ w_rot.T + t
        fx, fy, cx, cy = ks[b, 0, 0], ks[b, 1, 1], ks[b, 0, 2], ks[b, 1, 2]
        z = p[:, 2]
        lim_x, lim_y = 1.3 * 0.5 * width / fx, 1.3 * 0.5 * height / fy
        tx = z * (p[:, 0] / z).clamp(-lim_x, lim_x)
        ty = z * (p[:, 1] / z).clamp(-lim_y, lim_y)
        zero = torch.zeros_like(z)
        jac = torch.stack([fx / z, zero, -fx * tx / z**2, zero, fy / z, -fy * ty / z**2], -1).reshape(-1, 2, 3)
        cov2 = jac @ w_rot @ cov @ w_rot.T @ jac.transpose(-1, -2) + eps2d * torch.eye(2, dtype=means.dtype)
        mean2 = torch.stack([fx * p[:, 0] / z + cx, fy * p[:, 1] / z + cy], -1)
        d = pixels[:, None, :] - mean2[None]  # (P,N,2)
        maha = torch.einsum("pni,nij,pnj->pn", d, torch.linalg.inv(cov2), d)
        alpha = (opacities * torch.exp(-0.5 * maha)).clamp(max=0.99)
        alpha = alpha * (alpha >= 1 / 255) * (z >= near)
        order = torch.argsort(z, stable=True)
        alpha, col = alpha[:, order], colors[b][order]
        t_after = torch.cumprod(1 - alpha, dim=1)
        weight = alpha * (t_after / (1 - alpha)) * (t_after > 1e-4)
        rgb = weight @ col
        outs.append(torch.cat([rgb, weight.sum(1, keepdim=True), weight @ z[order, None]], -1))
    out = torch.stack(outs).reshape(viewmats.shape[0], height, width, -1)
    return out[..., :-2], out[..., -2:-1], out[..., -1:]


def look_at_cv(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)):
    """World → OpenCV camera (x right, y down, z toward target) for a camera at ``eye``."""
    eye, target, up = (torch.tensor(v, dtype=F64) for v in (eye, target, up))
    fwd = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(fwd, up, dim=0), dim=0)
    down = torch.linalg.cross(fwd, right, dim=0)
    rot = torch.stack([right, down, fwd])
    view = torch.eye(4, dtype=F64)
    view[:3, :3], view[:3, 3] = rot, -rot @ eye
    return view


def intrinsics(width, height, fovy_deg=50.0):
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    return torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=F64)


def random_scene(n, seed, width=20, height=16, views=2):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=F64) - 0.5) * 0.8
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=F64), dim=-1)
    scales = 0.03 + 0.08 * torch.rand(n, 3, generator=g, dtype=F64)
    opac = 0.2 + 0.75 * torch.rand(n, generator=g, dtype=F64)
    colors = torch.rand(views, n, 3, generator=g, dtype=F64)
    eyes = [(2.0, 0.3, 0.5), (-0.4, 1.8, -0.9), (0.2, -1.5, 1.4)][:views]
    viewmats = torch.stack([look_at_cv(e) for e in eyes])
    ks = intrinsics(width, height)[None].repeat(views, 1, 1)
    return [means, quats, scales, opac, colors, viewmats, ks]


# --------------------------------------------------------------------------- (a) against the dense reference


@pytest.mark.parametrize("seed,n,chunk_pairs", [(0, 40, 1 << 18), (1, 120, 200), (2, 300, 1 << 18)])
def test_twin_matches_dense_reference_forward_and_gradients(seed, n, chunk_pairs):
    width, height = 20, 16
    scene = random_scene(n, seed, width, height)
    inputs = [t.clone().requires_grad_(True) for t in scene[:5]]
    out = rasterize_gaussians(*inputs, *scene[5:], width, height, implementation="torch", chunk_pairs=chunk_pairs)
    ref_inputs = [t.clone().requires_grad_(True) for t in scene[:5]]
    ref = dense_splat(*ref_inputs, *scene[5:], width, height)
    assert out.alpha.max() > 0.9 and out.alpha.min() < 0.05  # covered and empty pixels both occur
    for mine, theirs in zip((out.colors, out.alpha, out.depth), ref):
        torch.testing.assert_close(mine, theirs, atol=1e-10, rtol=1e-9)
    g = torch.Generator().manual_seed(seed + 100)
    w_col, w_a, w_d = (torch.randn(t.shape, generator=g, dtype=F64) for t in ref)
    loss = (out.colors * w_col).sum() + (out.alpha * w_a).sum() + (out.depth * w_d).sum()
    ref_loss = (ref[0] * w_col).sum() + (ref[1] * w_a).sum() + (ref[2] * w_d).sum()
    grads = torch.autograd.grad(loss, inputs)
    ref_grads = torch.autograd.grad(ref_loss, ref_inputs)
    for name, mine, theirs in zip(("means", "quats", "scales", "opacities", "colors"), grads, ref_grads):
        assert theirs.abs().max() > 0, name
        torch.testing.assert_close(mine, theirs, atol=1e-9, rtol=1e-7, msg=name)


def test_transmittance_stop_matches_dense_reference():
    """Many opaque layers: pixels reach T ≤ 1e-4 and stop (the chunks carry T across)."""
    width, height = 12, 10
    g = torch.Generator().manual_seed(5)
    n = 60
    means = torch.zeros(n, 3, dtype=F64)
    means[:, 2] = torch.linspace(-0.5, 0.5, n, dtype=F64)
    means[:, :2] = 0.05 * torch.randn(n, 2, generator=g, dtype=F64)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=F64).repeat(n, 1)
    scales = torch.full((n, 3), 0.3, dtype=F64)
    opac = 0.5 + 0.5 * torch.rand(n, generator=g, dtype=F64)
    colors = torch.rand(1, n, 3, generator=g, dtype=F64)
    view, ks = look_at_cv((0.0, 0.0, 3.0), up=(0.0, 1.0, 0.0))[None], intrinsics(width, height)[None]
    out = rasterize_gaussians(means, quats, scales, opac, colors, view, ks, width, height, chunk_pairs=50)
    ref = dense_splat(means, quats, scales, opac, colors, view, ks, width, height)
    assert (1 - out.alpha).min() < 1e-3  # the stop rule is reached
    for mine, theirs in zip((out.colors, out.alpha, out.depth), ref):
        torch.testing.assert_close(mine, theirs, atol=1e-10, rtol=1e-9)


def test_gaussians_beside_the_view_use_the_clamped_jacobian():
    """Large Gaussians whose centres lie beyond 1.3 × the half field of view reach into the image;
    their Jacobian is taken at the clamped direction (gsplat), as the reference does."""
    width, height = 16, 12
    ks, view = intrinsics(width, height)[None], torch.eye(4, dtype=F64)[None]
    half = 0.5 * width / float(ks[0, 0, 0])  # tan of the half field of view along x
    centers = [(1.5 * half, 0.1, 1.0), (-1.6 * half, -0.2, 1.0), (0.3, 1.45 * 0.5 * height / float(ks[0, 1, 1]), 1.0)]
    parts = [one_gaussian(c, 0.35, 0.9, (0.2 * k, 1.0, 0.5)) for k, c in enumerate(centers)]
    inputs = [torch.cat(p) for p in zip(*parts)]
    out = rasterize_gaussians(*inputs, view, ks, width, height)
    ref = dense_splat(*inputs[:4], inputs[4][None], view, ks, width, height)
    assert (out.radii[0] > 0).all() and out.alpha.max() > 0.3
    for mine, theirs in zip((out.colors, out.alpha, out.depth), ref):
        torch.testing.assert_close(mine, theirs)


# --------------------------------------------------------------------------- (b) finite differences


def test_twin_gradients_match_finite_differences():
    width, height = 10, 8
    means, quats, scales, opac, colors, view, ks = random_scene(4, 7, width, height, views=1)
    scales = scales + 0.05  # wide footprints; nothing near the 0.99 clamp or the stop rule
    opac = 0.3 + 0.5 * opac / opac.max()

    def render(*args):
        out = rasterize_gaussians(*args, view, ks, width, height, implementation="torch")
        return out.colors, out.alpha, out.depth

    inputs = tuple(t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors))
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- (c) closed-form cases


def one_gaussian(center, scale, opacity=0.8, color=(1.0, 0.0, 0.0)):
    return (
        torch.tensor([center], dtype=F64),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=F64),
        torch.full((1, 3), scale, dtype=F64),
        torch.tensor([opacity], dtype=F64),
        torch.tensor([color], dtype=F64),
    )


@pytest.mark.parametrize("center", [(0.0, 0.0, 2.0), (0.3, -0.2, 2.5)])
def test_isotropic_gaussian_footprint_is_closed_form(center):
    """An isotropic Gaussian (σ = s) at camera point (x, y, z): centre (f x/z + c_x, f y/z + c_y),
    2-D covariance s² (f/z)² [[1 + x²/z², xy/z²], [xy/z², 1 + y²/z²]] + 0.3 I."""
    width, height, s, o = 40, 30, 0.05, 0.8
    ks = intrinsics(width, height)[None]
    view = torch.eye(4, dtype=F64)[None]  # the camera frame is the world frame
    out = rasterize_gaussians(*one_gaussian(center, s, o), view, ks, width, height)
    x, y, z = center
    f = float(ks[0, 0, 0])
    mean = torch.tensor([f * x / z + width / 2, f * y / z + height / 2], dtype=F64)
    shape = torch.tensor([[1 + x * x / z**2, x * y / z**2], [x * y / z**2, 1 + y * y / z**2]], dtype=F64)
    cov = (s * f / z) ** 2 * shape + 0.3 * torch.eye(2, dtype=F64)
    torch.testing.assert_close(out.means2d[0, 0], mean)
    jj, ii = torch.meshgrid(torch.arange(width, dtype=F64), torch.arange(height, dtype=F64), indexing="xy")
    d = torch.stack([jj + 0.5, ii + 0.5], -1) - mean
    alpha = o * torch.exp(-0.5 * torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov), d))
    alpha = alpha * (alpha >= 1 / 255)
    torch.testing.assert_close(out.alpha[0, ..., 0], alpha)
    torch.testing.assert_close(out.colors[0, ..., 0], alpha)  # red
    torch.testing.assert_close(out.depth[0, ..., 0], alpha * z)
    # the footprint half-size: ceil(√(2 ln(255 o)) σ) along each axis
    k = math.sqrt(2 * math.log(255 * o))
    assert int(out.radii[0, 0]) == math.ceil(k * math.sqrt(max(cov[0, 0], cov[1, 1])))


def test_two_gaussians_blend_front_to_back_whatever_their_order():
    width, height = 9, 9
    ks, view = intrinsics(width, height)[None], torch.eye(4, dtype=F64)[None]
    front = one_gaussian((0.0, 0.0, 2.0), 0.2, 0.6, (1.0, 0.0, 0.0))
    back = one_gaussian((0.0, 0.0, 3.0), 0.2, 0.7, (0.0, 0.0, 1.0))
    both = [torch.cat([a, b]) for a, b in zip(back, front)]  # listed back first
    out = rasterize_gaussians(*both, view, ks, width, height)
    # the centre pixel's centre is both means: α = the opacities there
    a1, a2 = 0.6, 0.7
    torch.testing.assert_close(out.colors[0, 4, 4], torch.tensor([a1, 0.0, (1 - a1) * a2], dtype=F64))
    torch.testing.assert_close(out.alpha[0, 4, 4, 0], torch.tensor(a1 + (1 - a1) * a2, dtype=F64))
    torch.testing.assert_close(out.depth[0, 4, 4, 0], torch.tensor(2.0 * a1 + 3.0 * (1 - a1) * a2, dtype=F64))
    swapped = [torch.cat([b, a]) for a, b in zip(back, front)]
    torch.testing.assert_close(rasterize_gaussians(*swapped, view, ks, width, height).colors, out.colors)


def test_alpha_clamp_and_stop_rule_on_stacked_layers():
    """At the centre pixel (every mean's pixel centre) α = opacity, clamped to 0.99: layer 1
    (opacity 0.995 → α 0.99) leaves T = 0.01, layer 2 (α 0.9) T = 1e-3; layer 3 (α 0.95) would bring
    T to 5e-5 ≤ 1e-4, so it is excluded and the pixel stops — layer 4 (α 0.05, which alone would
    keep T above 1e-4) is excluded too."""
    width, height = 5, 5
    ks, view = intrinsics(width, height)[None], torch.eye(4, dtype=F64)[None]
    spec = ((2.0, 0.995, (1, 0, 0)), (2.5, 0.9, (0, 1, 0)), (3.0, 0.95, (0, 0, 1)), (3.5, 0.05, (1, 1, 1)))
    layers = [one_gaussian((0.0, 0.0, z), 0.5, o, c) for z, o, c in spec]
    stack = [torch.cat(parts) for parts in zip(*layers)]
    out = rasterize_gaussians(*stack, view, ks, width, height)
    torch.testing.assert_close(out.colors[0, 2, 2], torch.tensor([0.99, 0.01 * 0.9, 0.0], dtype=F64))
    torch.testing.assert_close(out.alpha[0, 2, 2, 0], torch.tensor(0.99 + 0.009, dtype=F64))


# --------------------------------------------------------------------------- (d) culling


def test_culling_behind_camera_near_plane_and_outside_image():
    width, height = 16, 12
    ks, view = intrinsics(width, height)[None], torch.eye(4, dtype=F64)[None]
    # behind the camera, inside the near plane, off screen; centre beyond the right edge but the
    # footprint reaching in (x = 17.5 px of 16); in front
    centers = [(0.0, 0.0, -1.0), (0.0, 0.0, 0.005), (5.0, 0.0, 1.0), (0.738, 0.0, 1.0), (0.0, 0.0, 2.0)]
    parts = [one_gaussian(c, 0.05) for c in centers]
    inputs = [torch.cat(p).requires_grad_(True) for p in zip(*parts)]
    out = rasterize_gaussians(*inputs, view, ks, width, height)
    assert out.radii[0].tolist()[:3] == [0, 0, 0] and min(out.radii[0].tolist()[3:]) > 0
    (out.colors.sum() + out.alpha.sum() + out.depth.sum()).backward()
    for t in inputs:
        assert torch.isfinite(t.grad).all()
    assert inputs[0].grad[:3].abs().max() == 0 and inputs[0].grad[3:].abs().min(dim=1).values.max() > 0
    alone = rasterize_gaussians(*[p[3:] for p in (t.detach() for t in inputs)], view, ks, width, height)
    torch.testing.assert_close(alone.colors, out.colors)
    culled = [p[:3].detach().requires_grad_(True) for p in inputs]
    none = rasterize_gaussians(*culled, view, ks, width, height)  # nothing visible: zeros, backward works
    assert none.alpha.abs().max() == 0
    none.colors.sum().backward()
    assert culled[0].grad.abs().max() == 0


def test_means2d_gradient_is_retained_for_densification():
    width, height = 20, 16
    scene = random_scene(30, 3, width, height, views=1)
    means = scene[0].clone().requires_grad_(True)
    out = rasterize_gaussians(means, *scene[1:], width, height)
    out.colors.sum().backward()
    grad = out.means2d.grad
    assert grad is not None and grad.shape == (1, 30, 2)
    assert (grad[0][out.radii[0] == 0] == 0).all() and grad[0][out.radii[0] > 0].abs().sum() > 0


def test_backend_choice_and_input_errors():
    assert splat_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(UserError, match=r"auto\|torch\|gsplat"):
        splat_backend("cuda", None)
    with pytest.raises(UserError, match="CUDA" if gsplat_available() else r"pip install -e \.\[cuda\]"):
        splat_backend("gsplat", torch.device("cpu"))
    scene = random_scene(5, 0, views=1)
    with pytest.raises(ValueError, match="quats"):
        rasterize_gaussians(scene[0], scene[1][:, :3], *scene[2:], 20, 16)


# --------------------------------------------------------------------------- (e) the renderer


class Blobs:
    """The renderer's view of a Gaussian geometry: activated tensors and normals()."""

    def __init__(self, means, scales, opacity=0.9, logits=(2.0, -2.0, -2.0), quats=None):
        n = means.shape[0]
        self.means = means
        self.quats = quats if quats is not None else torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)
        self.scales = scales
        self.opacities = torch.full((n, 1), opacity)
        self.features = torch.tensor([logits]).repeat(n, 1)

    def normals(self):
        return rotate(self.quats, torch.eye(3)[self.scales.argmin(dim=-1)])


def one_view(elevation=20.0, azimuth=35.0, distance=2.0, height=24, width=32, fovy=50.0):
    t = lambda v: torch.tensor([v])  # noqa: E731
    return make_cameras(t(elevation), t(azimuth), t(distance), t(fovy), height, width)


def test_renderer_places_gaussians_where_the_camera_projects_them():
    cams = one_view()
    points = torch.tensor([[0.1, -0.2, 0.15], [-0.25, 0.1, -0.1], [0.0, 0.3, 0.2]])
    geo = Blobs(points, torch.full((3, 3), 0.03))
    out = SplatRenderer({"implementation": "torch"})(cams, geo, DiffuseWithPointLight(), SolidBackground(), "albedo")
    clip = torch.cat([points, torch.ones(3, 1)], -1) @ cams.mvp[0].T
    ndc = clip[:, :2] / clip[:, 3:]
    # mvp's pixel (row i, col j) samples NDC (2(j + .5)/W − 1, 2(i + .5)/H − 1)
    expected = torch.stack([(ndc[:, 0] + 1) * cams.width / 2, (ndc[:, 1] + 1) * cams.height / 2], -1)
    torch.testing.assert_close(out.extras["means2d"][0], expected, atol=1e-3, rtol=0)
    # the brightest pixel of each blob's alpha is the pixel containing its projected centre
    for k in range(3):
        alone = Blobs(points[k : k + 1], torch.full((1, 3), 0.03))
        a = SplatRenderer()(cams, alone, DiffuseWithPointLight(), SolidBackground(), "albedo").opacity[0, ..., 0]
        row, col = divmod(int(a.argmax()), cams.width)
        assert (col, row) == (int(expected[k, 0]), int(expected[k, 1]))


def test_renderer_composites_over_background_and_reports_depth_and_normal():
    cams = one_view(elevation=90.0, azimuth=0.0, distance=2.0, height=17, width=17)  # straight down
    scales = torch.tensor([[0.3, 0.3, 0.001]])  # a flat disc, normal ±z
    flipped = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # 180° about x: the normal points to −z
    geo = Blobs(torch.zeros(1, 3), scales, opacity=0.7, quats=flipped)
    bg = SolidBackground({"color": (0.2, 0.4, 0.6)})
    material = DiffuseWithPointLight({"ambient_light_color": 0.25, "diffuse_light_color": 0.75})
    renderer = SplatRenderer()
    albedo = torch.sigmoid(torch.tensor([2.0, -2.0, -2.0]))
    for shading, color in (("albedo", albedo), ("diffuse", albedo * 1.0), ("textureless", torch.ones(3))):
        out = renderer(cams, geo, material, bg, shading)
        a = out.opacity[0, 8, 8, 0]
        assert 0.69 < float(a) < 0.7
        # light at the camera, straight above: n·l = 1 at the centre, ambient + diffuse = 1
        expected = a * color + (1 - a) * torch.tensor(bg.cfg.color)
        torch.testing.assert_close(out.rgb[0, 8, 8], expected, atol=2e-3, rtol=0)
    assert out.opacity[0, 0, 0, 0] == 0 and out.depth[0, 0, 0, 0] == 0 and out.normal[0, 0, 0].abs().max() == 0
    torch.testing.assert_close(out.rgb[0, 0, 0], torch.tensor(bg.cfg.color))  # empty: the background
    up = torch.tensor([0.0, 0.0, 1.0])
    torch.testing.assert_close(out.normal[0, 8, 8], up, atol=1e-5, rtol=0)  # turned to face the camera
    # depth: distance along each pixel's ray to the disc's plane, 2 / cos θ (times opacity)
    cos = -cams.rays_d[0, :, :, 2]
    covered = out.opacity[0, ..., 0] > 0.05
    assert covered.sum() > 20 and cos[covered].min() < 0.97
    torch.testing.assert_close((out.depth[0, ..., 0] / out.opacity[0, ..., 0])[covered], 2.0 / cos[covered])


def test_renderer_refuses_other_geometries_and_unknown_backends():
    with pytest.raises(UserError, match="implementation"):
        SplatRenderer({"implementation": "cuda"})
    with pytest.raises(UserError, match="geometry=gaussians"):
        SplatRenderer()(one_view(), torch.nn.Linear(1, 1), DiffuseWithPointLight(), SolidBackground())


# --------------------------------------------------------------------------- (f) parity with gsplat


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_parity_with_gsplat():
    pytest.importorskip("gsplat", reason="gsplat not installed (pip install -e .[cuda])")
    width, height = 64, 48
    scene = [t.float() for t in random_scene(400, 11, width, height, views=3)]
    results = {}
    for impl, dev in (("gsplat", "cuda"), ("torch", "cpu")):
        inputs = [t.to(dev).requires_grad_(True) for t in scene[:5]]
        out = rasterize_gaussians(*inputs, *(t.to(dev) for t in scene[5:]), width, height, implementation=impl)
        loss = out.colors.square().sum() + out.alpha.sum() + 0.1 * out.depth.sum()
        loss.backward()
        results[impl] = [t.detach().cpu() for t in (out.colors, out.alpha, out.depth, out.radii, out.means2d.grad)]
        results[impl] += [t.grad.cpu() for t in inputs]
    fast, twin = results["gsplat"], results["torch"]
    for k, name in enumerate(("colors", "alpha", "depth")):
        assert (fast[k] - twin[k]).abs().mean() < 1e-4 and (fast[k] - twin[k]).abs().max() < 2e-2, name
    assert (fast[3] == twin[3]).float().mean() > 0.99  # radii
    names = ("means2d", "means", "quats", "scales", "opacities", "colors")
    for name, g_f, g_t in zip(names, fast[4:], twin[4:]):
        assert (g_f - g_t).norm() < 0.02 * g_f.norm(), name
