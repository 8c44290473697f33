"""Density volumes (hash grid, triplane) and the isosurface level, against closed-form fields."""

import math

import pytest
import torch
import torch.nn.functional as F

from threestudio_like.core.errors import UserError
from threestudio_like.export.mesh_ops import remove_small_components
from threestudio_like.geometry.implicit_volume import ImplicitVolume
from threestudio_like.geometry.isosurface import auto_threshold, otsu_threshold
from threestudio_like.ops.marching_cubes import marching_cubes
from threestudio_like.ops.triplane import TriplaneEncoding, sample_plane

SMALL_GRID = {
    "otype": "HashGrid",
    "n_levels": 4,
    "n_features_per_level": 2,
    "log2_hashmap_size": 12,
    "base_resolution": 4,
    "per_level_scale": 2.0,
}
SMOOTH = {"otype": "Frequency", "n_frequencies": 2, "include_input": True}


def _triplane(resolution, channels):
    """The ``pos_encoding_config`` of a triplane encoding."""
    return {"otype": "Triplane", "resolution": resolution, "n_channels": channels}


def _zero_density_head(geometry):
    """Make the density MLP output 0 so that density = activation(bias(p)) exactly."""
    last = geometry.density_network.net[-2]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    return geometry


def _points(n=64, seed=0, scale=0.9):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g) * 2 - 1) * scale


@pytest.mark.parametrize("bias,act", [("blob_magic3d", "softplus"), ("blob_dreamfusion", "exp"), (-2.0, "trunc_exp")])
def test_density_is_activation_of_blob_bias(bias, act):
    g = _zero_density_head(
        ImplicitVolume(
            {
                "pos_encoding_config": SMALL_GRID,
                "density_bias": bias,
                "density_activation": act,
                "density_blob_scale": 7.0,
                "density_blob_std": 0.4,
            }
        )
    )
    p = torch.cat([torch.zeros(1, 3), _points()])
    r = p.norm(dim=-1, keepdim=True)
    if bias == "blob_magic3d":
        expected = F.softplus(7.0 * (1 - r / 0.4))
    elif bias == "blob_dreamfusion":
        expected = torch.exp(7.0 * torch.exp(-(r**2) / (2 * 0.4**2)))
    else:
        expected = torch.full_like(r, math.exp(-2.0))
    out = g(p)
    assert torch.allclose(out.density, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(g.forward_density(p), expected, rtol=1e-5, atol=1e-6)
    assert out.features.shape == (p.shape[0], 3) and out.normal is None
    if bias == "blob_magic3d":
        assert float(out.density[0].detach()) == pytest.approx(math.log1p(math.exp(7.0)), rel=1e-6)


@pytest.mark.parametrize("normal_type", ["finite_difference", "analytic"])
def test_normals_of_blob_point_away_from_centre(normal_type):
    g = _zero_density_head(
        ImplicitVolume(
            {
                "pos_encoding_config": SMALL_GRID,
                "density_bias": "blob_dreamfusion",
                "normal_type": normal_type,
                "finite_difference_eps": 1e-3,
            }
        )
    )
    p = _points(seed=1, scale=0.8)
    p = p[p.norm(dim=-1) > 0.1]
    normal = g(p, output_normal=True).normal  # -grad of a radially decreasing density = p / |p|
    assert torch.allclose(normal, F.normalize(p, dim=-1), atol=2e-3)


def test_analytic_and_finite_difference_normals_agree_and_analytic_ones_train():
    cfg = {"pos_encoding_config": SMOOTH, "density_bias": "blob_dreamfusion", "finite_difference_eps": 1e-3}
    fd = ImplicitVolume({**cfg, "normal_type": "finite_difference"})
    an = ImplicitVolume({**cfg, "normal_type": "analytic"})
    an.load_state_dict(fd.state_dict())
    p = _points(seed=2, scale=0.7).double()
    fd.double(), an.double()
    n_fd = fd(p, output_normal=True).normal
    n_an = an(p, output_normal=True).normal
    assert float((n_fd * n_an).sum(-1).min().detach()) > 0.9999
    an(p, output_normal=True).normal.sum().backward()  # create_graph: the normal depends on the weights
    assert an.density_network.net[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        out = an(p, output_normal=True)
    assert not out.normal.requires_grad and torch.allclose(out.normal, n_an)


def test_analytic_normals_through_hash_grid_follow_autograd_of_density():
    g = ImplicitVolume({"pos_encoding_config": SMALL_GRID, "normal_type": "analytic"})
    p = _points(16, seed=3).requires_grad_(True)
    (grad,) = torch.autograd.grad(g.forward_density(p).sum(), p)
    assert grad.abs().sum() > 0  # input gradient flows through the hash grid (input_grad switched on)
    assert torch.allclose(g(p.detach(), output_normal=True).normal, F.normalize(-grad, dim=-1), atol=1e-5)


def test_auto_isosurface_of_blob_sits_at_the_resolved_level():
    g = _zero_density_head(ImplicitVolume({"pos_encoding_config": SMALL_GRID, "isosurface_resolution": 40}))
    level = g.isosurface_threshold_value()
    radius = 0.5 * (1 - math.log(math.expm1(level)) / 10)  # softplus(10 (1 - r / 0.5)) = level
    mesh = g.isosurface()
    assert mesh.num_faces > 0
    assert torch.allclose(mesh.v_pos.norm(dim=-1), torch.full((mesh.num_vertices,), radius), atol=0.01)


def test_auto_threshold_raises_on_empty_field():
    flat = _zero_density_head(
        ImplicitVolume({"pos_encoding_config": SMALL_GRID, "density_bias": -20.0, "isosurface_resolution": 8})
    )
    with pytest.raises(UserError, match="threshold .*constant"):
        flat.isosurface()
    noisy = ImplicitVolume({"pos_encoding_config": SMALL_GRID, "density_bias": -30.0, "isosurface_resolution": 8})
    with pytest.raises(UserError, match="empty"):
        noisy.isosurface()


def test_numeric_threshold_outside_the_density_range_raises_with_a_suggestion():
    g = _zero_density_head(
        ImplicitVolume({"pos_encoding_config": SMALL_GRID, "isosurface_resolution": 16, "isosurface_threshold": 1000.0})
    )
    with pytest.raises(UserError, match=r"threshold 1000 is empty.*densities range over.*e\.g\."):
        g.isosurface()
    g.cfg.isosurface_threshold = -1.0  # densities are >= 0
    with pytest.raises(UserError, match="completely filled"):
        g.isosurface()
    g.cfg.isosurface_threshold = "half"
    with pytest.raises(UserError, match="number or 'auto'"):
        g.isosurface()


def test_otsu_splits_two_modes_and_auto_respects_fill_bound():
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.rand(9000, generator=g), 10 + torch.rand(1000, generator=g)])
    assert 1.0 <= otsu_threshold(values) <= 10.0
    # a grid that is 90% "object" by Otsu is capped to fill at most 60%
    dens = torch.cat([torch.full((100,), 0.0), torch.linspace(50, 60, 900)])
    level = auto_threshold(dens, max_fill=0.6, min_threshold=1.0)
    assert float((dens > level).float().mean()) <= 0.6 + 1e-3
    assert auto_threshold(torch.full((10,), 0.2), min_threshold=1.0) == 1.0


def test_remove_small_components_drops_the_floater():
    axis = torch.linspace(-1, 1, 40)
    p = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
    big = 0.5 - (p - torch.tensor([-0.3, 0, 0])).norm(dim=-1)
    small = 0.12 - (p - torch.tensor([0.7, 0.6, 0.6])).norm(dim=-1)
    mesh = marching_cubes(torch.maximum(big, small), 0.0, [-1] * 3, [1] * 3)
    kept, _ = remove_small_components(mesh, min_face_fraction=0.1)
    assert 0 < kept.num_faces < mesh.num_faces
    assert float(kept.v_pos[:, 0].max()) < 0.3  # only the big sphere (x ≤ 0.2) is left
    assert int(kept.t_pos_idx.max()) == kept.num_vertices - 1


def test_create_from_same_class_copies_state_and_refuses_other_kinds():
    a = ImplicitVolume({"pos_encoding_config": SMALL_GRID})
    b = ImplicitVolume.create_from(a, {"pos_encoding_config": SMALL_GRID, "isosurface_threshold": 5.0})
    p = _points()
    assert torch.equal(a(p).density, b(p).density) and torch.equal(a(p).features, b(p).features)
    with pytest.raises(UserError, match="different architecture"):
        ImplicitVolume.create_from(a, {"pos_encoding_config": {**SMALL_GRID, "n_levels": 3}})
    with pytest.raises(UserError, match="cannot build"):
        ImplicitVolume.create_from(ImplicitVolume({"pos_encoding_config": _triplane(4, 2)}), {})


def test_unknown_config_key_and_bad_choices_raise():
    with pytest.raises(UserError, match="unknown config key 'geometry.radiuss'"):
        ImplicitVolume({"radiuss": 1.0}, where="geometry")
    with pytest.raises(UserError, match="density_bias"):
        ImplicitVolume({"pos_encoding_config": SMALL_GRID, "density_bias": "blob"})
    with pytest.raises(UserError, match="normal_type"):
        ImplicitVolume({"pos_encoding_config": SMALL_GRID, "normal_type": "sobel"})


# ---- triplane --------------------------------------------------------------------------------
def test_plane_sampling_matches_grid_sample():
    g = torch.Generator().manual_seed(0)
    plane = torch.randn(7, 7, 5, generator=g)
    uv = torch.cat([torch.rand(50, 2, generator=g), torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])])
    ref = F.grid_sample(plane.permute(2, 0, 1)[None], (uv * 2 - 1)[None, None], align_corners=True)
    assert torch.allclose(sample_plane(plane, uv), ref[0, :, 0].t(), atol=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "concat"])
def test_triplane_encoding_combines_the_three_projections(reduction):
    enc = TriplaneEncoding({"resolution": 5, "n_channels": 3, "reduction": reduction})
    x = _points(20, seed=4, scale=1.0) * 0.5 + 0.5
    parts = [
        sample_plane(enc.planes[0], x[:, [0, 1]]),
        sample_plane(enc.planes[1], x[:, [0, 2]]),
        sample_plane(enc.planes[2], x[:, [1, 2]]),
    ]
    expected = torch.cat(parts, -1) if reduction == "concat" else sum(parts)
    out = enc(x)
    assert out.shape[-1] == enc.n_output_dims and torch.allclose(out, expected)


def test_triplane_volume_shares_the_volume_interface():
    tv = _zero_density_head(
        ImplicitVolume(
            {
                "pos_encoding_config": _triplane(8, 4),
                "normal_type": "analytic",
                "density_bias": "blob_dreamfusion",
                "isosurface_resolution": 24,
            }
        )
    )
    p = _points(32, seed=5, scale=0.8)
    out = tv(p, output_normal=True)
    expected = F.softplus(10 * torch.exp(-(p.norm(dim=-1, keepdim=True) ** 2) / (2 * 0.5**2)))
    assert torch.allclose(out.density, expected, rtol=1e-5)
    assert torch.allclose(out.normal, F.normalize(p, dim=-1), atol=1e-4)
    out.features.sum().backward()
    assert tv.encoding.planes.grad.abs().sum() > 0
    assert tv.isosurface().num_faces > 0


@pytest.mark.parametrize(
    "encoding",
    [SMALL_GRID, {"otype": "DenseGrid", "resolution": 8, "n_channels": 4}, _triplane(8, 4), SMOOTH],
    ids=["hash", "dense", "triplane", "frequency"],
)
@pytest.mark.parametrize("normal_type", ["analytic", "finite_difference"])
def test_no_points_give_empty_outputs_and_gradients(encoding, normal_type):
    """A renderer chunk whose rays all miss the occupancy grid asks the field about 0 points
    (it did at MVDream's real size: the hash grid's reshape of 0 elements failed)."""
    g = ImplicitVolume({"pos_encoding_config": encoding, "normal_type": normal_type})
    p = torch.zeros(0, 3, requires_grad=True)
    out = g(p, output_normal=True)
    assert out.density.shape == (0, 1) and out.features.shape == (0, 3) and out.normal.shape == (0, 3)
    (out.density.sum() + out.features.sum()).backward()
    grads = [q.grad for q in g.parameters() if q.grad is not None]
    assert grads and all(float(q.abs().sum()) == 0 for q in grads)
