"""Hash-grid encoding: tcnn's layout and indexing, interpolation, gradients vs a naive reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from threestudio_like.core.errors import UserError
from threestudio_like.ops import hash_encoding
from threestudio_like.ops.encodings import ProgressiveBandHashGrid
from threestudio_like.ops.hash_encoding import HashGridEncoding, level_corners

PRIMES = (1, 2654435761, 805459861)


def f32_scale(level: int, base: int, per_level_scale: float) -> np.float32:
    return np.exp2(np.float32(level) * np.log2(np.float32(per_level_scale))) * np.float32(base) - np.float32(1)


def naive_encode(x: torch.Tensor, params: torch.Tensor, enc: HashGridEncoding) -> torch.Tensor:
    """Independent reference: tcnn's formulas written out per corner, autograd for gradients."""
    c = enc.cfg
    f = c.n_features_per_level
    table = params.view(-1, f)
    outs, offset = [], 0
    for level in range(c.n_levels):
        scale = float(f32_scale(level, c.base_resolution, c.per_level_scale))
        res = int(np.ceil(scale)) + 1
        size = min(-(-(res**3) // 8) * 8, 2**c.log2_hashmap_size)
        pos = x * scale + 0.5
        cell = torch.floor(pos).detach()
        frac = pos - cell
        if c.interpolation == "smoothstep":
            frac = frac * frac * (3 - 2 * frac)
        cell = cell.long()
        idxs, ws = [], []
        for corner in range(8):
            bits = [(corner >> d) & 1 for d in range(3)]
            v = [cell[:, d] + bits[d] for d in range(3)]
            if res**3 <= size:
                idx = (v[0] + v[1] * res + v[2] * res * res) & 0xFFFFFFFF
            else:
                idx = ((v[0] * PRIMES[0]) ^ (v[1] * PRIMES[1]) ^ (v[2] * PRIMES[2])) & 0xFFFFFFFF
            idxs.append(offset + idx % size)
            w = 1
            for d in range(3):
                w = w * (frac[:, d] if bits[d] else 1 - frac[:, d])
            ws.append(w)
        feats = table.index_select(0, torch.stack(idxs, 1).view(-1)).view(-1, 8, f)
        value = (torch.stack(ws, 1)[..., None] * feats).sum(1)
        outs.append(value)
        offset += size
    return torch.cat(outs, 1)


def test_default_layout_matches_tcnn_formula():
    enc = HashGridEncoding({"implementation": "torch"})
    # resolution = ceil(16 * 1.4473^l - 1) + 1; dense while res^3 <= 2^19, sizes rounded to 8
    assert [lv.resolution for lv in enc.levels[:6]] == [16, 24, 34, 49, 71, 102]
    assert [lv.size for lv in enc.levels[:6]] == [4096, 13824, 39304, 117656, 357912, 524288]
    assert [lv.dense for lv in enc.levels] == [True] * 5 + [False] * 11
    offsets = np.cumsum([0] + [lv.size for lv in enc.levels])
    assert [lv.offset for lv in enc.levels] == offsets[:-1].tolist()
    assert enc.params.numel() == 2 * (532792 + 11 * 2**19) == 12599920
    assert enc.n_output_dims == 32
    assert enc.params.abs().max() <= 1e-4


def test_dense_and_hashed_indices_on_hand_picked_points():
    enc = HashGridEncoding({"implementation": "torch"})
    # dense level 0: scale 15 -> pos = 15 x + 0.5; x = (0.5, 0.25, 1.0) -> cell (8, 4, 15)
    x = torch.tensor([[0.5, 0.25, 1.0]])
    for inside in (True, False):
        idx, w = level_corners(x.t().contiguous(), enc.levels[0], False, inside)
        assert idx[0, 0].item() == 8 + 4 * 16 + 15 * 256
        assert idx[7, 0].item() == (9 + 5 * 16 + 16 * 256) % 4096  # wraps around, as in tcnn
        assert idx[1, 0].item() == 9 + 4 * 16 + 15 * 256  # bit 0 = upper neighbour along x
        assert torch.allclose(w[:, 0].sum(), torch.tensor(1.0))
    # hashed level 8
    lv = enc.levels[8]
    assert not lv.dense
    x = torch.tensor([[0.3, 0.6, 0.9], [0.0, 0.999, 0.5]])
    idx, _ = level_corners(x.t().contiguous(), lv, False, True)
    for p in range(2):
        pos = x[p].numpy().astype(np.float32) * np.float32(lv.scale) + np.float32(0.5)
        cell = np.floor(pos).astype(np.int64)
        for corner in (0, 3, 5, 7):
            v = [int(cell[d]) + ((corner >> d) & 1) for d in range(3)]
            h = ((v[0] * PRIMES[0]) ^ (v[1] * PRIMES[1]) ^ (v[2] * PRIMES[2])) & 0xFFFFFFFF
            assert idx[corner, p].item() == h % 2**19


def test_out_of_range_points_use_uint32_wrap():
    enc = HashGridEncoding({"implementation": "torch"})
    x = torch.tensor([[-0.2, 0.5, 1.3]])
    lv = enc.levels[1]  # dense, res 24
    idx, _ = level_corners(x.t().contiguous(), lv, False, False)
    pos = x[0].numpy() * np.float32(lv.scale) + np.float32(0.5)
    cell = np.floor(pos).astype(np.int64)
    expected = ((cell[0] + cell[1] * 24 + cell[2] * 576) & 0xFFFFFFFF) % lv.size
    assert cell[0] < 0 and idx[0, 0].item() == expected


@pytest.mark.parametrize("base,scale", [(16, 1.447269237440378), (7, 1.3), (10, 1.5)])
def test_unit_cube_fast_indices_equal_exact_modulo(base, scale):
    # the inside path skips or simplifies the modulo; the int64 path is tcnn's uint32 wrap + modulo
    enc = HashGridEncoding({"implementation": "torch", "base_resolution": base, "per_level_scale": scale})
    corners = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], dtype=torch.float32)
    x = torch.cat([corners, torch.rand(500, 3), 1 - 1e-7 * torch.rand(20, 3)]).t().contiguous()
    for lv in enc.levels:
        fast, frac = hash_encoding.level_cells(x, lv, False, True)
        exact, _ = hash_encoding.level_cells(x, lv, False, False)
        assert torch.equal(fast.long(), exact) and (fast >= 0).all() and (fast < lv.size).all()
        assert torch.allclose(frac, x * lv.scale + 0.5 - torch.floor(x * lv.scale + 0.5))


@pytest.mark.parametrize("log2_size", [19, 10])  # dense level, then the same level hashed
def test_point_on_vertex_returns_that_vertex_feature(log2_size):
    # base 17 -> scale 16 exactly; x = (v - 0.5) / 16 lands exactly on vertex v
    enc = HashGridEncoding(
        {"n_levels": 1, "base_resolution": 17, "log2_hashmap_size": log2_size, "implementation": "torch"}
    )
    lv = enc.levels[0]
    assert lv.scale == 16.0 and lv.dense == (log2_size == 19)
    with torch.no_grad():
        enc.params.copy_(torch.randn_like(enc.params))
    v = [(3, 7, 11), (16, 0, 5)]
    out = enc((torch.tensor(v, dtype=torch.float32) - 0.5) / 16)
    for row, (a, b, c) in enumerate(v):
        if lv.dense:
            i = a + b * 17 + c * 289
        else:
            i = ((a * PRIMES[0]) ^ (b * PRIMES[1]) ^ (c * PRIMES[2])) % 2**log2_size
        assert torch.equal(out[row], enc.params.view(-1, 2)[i])


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"interpolation": "smoothstep", "log2_hashmap_size": 14},
        {"n_features_per_level": 1, "log2_hashmap_size": 14},
        {"n_features_per_level": 4, "log2_hashmap_size": 12, "n_levels": 6},
    ],
)
@pytest.mark.parametrize("cache_bytes", [None, 0])  # corners kept for backward / recomputed
def test_twin_output_and_param_gradient_match_naive_reference(cfg, cache_bytes, monkeypatch):
    if cache_bytes is not None:
        monkeypatch.setattr(hash_encoding, "CORNER_CACHE_BYTES", cache_bytes)
    torch.manual_seed(0)
    enc = HashGridEncoding({"implementation": "torch", **cfg})
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    for x in (torch.rand(300, 3), torch.rand(300, 3) * 1.4 - 0.2):  # unit cube, then outside too
        g = torch.randn(300, enc.n_output_dims)
        enc.params.grad = None
        out = enc(x)
        out.backward(g)
        p = enc.params.detach().clone().requires_grad_()
        ref = naive_encode(x, p, enc)
        ref.backward(g)
        assert out.dtype == torch.float32
        assert torch.allclose(out, ref, atol=2e-6)
        assert torch.allclose(enc.params.grad, p.grad, atol=2e-5)


def test_input_grad_matches_naive_reference_and_supports_double_backward():
    torch.manual_seed(1)
    enc = HashGridEncoding({"implementation": "torch", "input_grad": True, "n_levels": 8})
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    x = torch.rand(200, 3, requires_grad=True)
    out = enc(x)
    (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    x2 = x.detach().clone().requires_grad_()
    (gx_ref,) = torch.autograd.grad(naive_encode(x2, enc.params, enc).square().sum(), x2)
    assert torch.allclose(gx, gx_ref, rtol=1e-4, atol=1e-4)
    gx.square().sum().backward()  # normals in a loss: gradient of dL/dx w.r.t. the parameters
    assert enc.params.grad is not None and enc.params.grad.abs().sum() > 0


def test_input_grad_encoding_takes_the_fast_path_where_no_input_gradient_is_wanted(monkeypatch):
    """Density queries (no grad, or points that need no gradient) skip the slow differentiable
    path and still equal the naive encoding, with the parameters' gradient where it is enabled."""
    import threestudio_like.ops.hash_encoding as module

    torch.manual_seed(2)
    enc = HashGridEncoding({"implementation": "torch", "input_grad": True, "n_levels": 6})
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    x = torch.rand(300, 3)
    ref = naive_encode(x, enc.params.detach(), enc)

    def slow(*args):
        raise AssertionError("the differentiable path was taken")

    monkeypatch.setattr(module, "hash_grid_reference", slow)
    with torch.no_grad():
        assert torch.allclose(enc(x.requires_grad_()), ref, atol=2e-6)
    x = x.detach()
    enc(x).square().sum().backward()
    p = enc.params.detach().clone().requires_grad_()
    naive_encode(x, p, enc).square().sum().backward()
    assert torch.allclose(enc.params.grad, p.grad, atol=2e-5)
    with pytest.raises(AssertionError, match="differentiable path"):
        enc(x.requires_grad_())


def test_default_twin_gives_no_input_gradient():
    enc = HashGridEncoding({"implementation": "torch", "n_levels": 2})
    x = torch.rand(10, 3, requires_grad=True)
    enc(x).sum().backward()
    assert x.grad is None and enc.params.grad is not None


def test_leading_dims_and_n_active_levels():
    enc = HashGridEncoding({"implementation": "torch", "n_levels": 4})
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    x = torch.rand(2, 5, 3)
    full = enc(x)
    assert full.shape == (2, 5, 8)
    part = enc(x, n_active_levels=2)
    assert torch.equal(part[..., :4], full[..., :4]) and (part[..., 4:] == 0).all()


def test_progressive_band_mask_follows_threestudio_schedule():
    cfg = {"implementation": "torch", "n_levels": 6, "start_level": 2, "start_step": 100, "update_steps": 50}
    enc = ProgressiveBandHashGrid(cfg)
    grid = HashGridEncoding({"implementation": "torch", "n_levels": 6})
    grid.load_state_dict(enc.state_dict())  # same parameter layout and keys
    x = torch.rand(64, 3)
    full = grid(x)
    for step, level in [(0, 2), (120, 2), (150, 3), (260, 5), (10_000, 6)]:
        enc.update_step(0, step)
        assert enc.current_level == level
        enc.params.grad = None
        out = enc(x)
        assert torch.equal(out[:, : 2 * level], full[:, : 2 * level])
        assert (out[:, 2 * level :] == 0).all()
        out.sum().backward()
        off = enc.levels[level].offset * 2 if level < 6 else enc.params.numel()
        assert (enc.params.grad[off:] == 0).all() and enc.params.grad[:off].abs().sum() > 0


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="interpolation"):
        HashGridEncoding({"interpolation": "cubic"})
    with pytest.raises(UserError, match="n_level"):
        HashGridEncoding({"n_level": 3})
    with pytest.raises(UserError, match="n_features_per_level"):
        HashGridEncoding({"n_features_per_level": 3})


def test_missing_tcnn_names_the_install_extra():
    from threestudio_like.ops.hash_encoding_tcnn import tcnn_available

    if tcnn_available():
        pytest.skip("tinycudann is installed here")
    with pytest.raises(UserError, match=r"pip install -e \.\[cuda\]"):
        HashGridEncoding({"implementation": "tcnn"})
    enc = HashGridEncoding({"implementation": "auto", "n_levels": 2})  # auto falls back to torch
    assert enc(torch.rand(4, 3)).shape == (4, 4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="tcnn parity needs a CUDA GPU")
@pytest.mark.parametrize("cfg", [{}, {"interpolation": "smoothstep", "n_features_per_level": 4}])
def test_tcnn_matches_torch_twin(cfg):
    pytest.importorskip("tinycudann", reason="tcnn parity needs tinycudann (pip install -e .[cuda])")
    torch.manual_seed(0)
    tc = HashGridEncoding({"implementation": "tcnn", **cfg}).cuda()
    tw = HashGridEncoding({"implementation": "torch", **cfg}).cuda()
    with torch.no_grad():
        tc.params.uniform_(-1, 1)
        tw.params.copy_(tc.params)
    x = torch.rand(10_000, 3, device="cuda")
    g = torch.randn(10_000, tc.n_output_dims, device="cuda")
    out_tc, out_tw = tc(x), tw(x)
    out_tc.backward(g)
    out_tw.backward(g)
    assert out_tc.dtype == torch.float32

    def rel(a, b):  # tcnn keeps fp16 parameters on most GPUs: compare relative errors
        return ((a - b).norm() / b.norm()).item()

    assert rel(out_tc, out_tw) < 1e-2
    assert rel(tc.params.grad, tw.params.grad) < 1e-2


def test_float64_module_passes_gradcheck():
    enc = HashGridEncoding({"implementation": "torch", "n_levels": 3, "log2_hashmap_size": 8}).double()
    x = torch.rand(20, 3, dtype=torch.float64)
    assert enc(x).dtype == torch.float64
    params = enc.params.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: torch.func.functional_call(enc, {"params": p}, (x,)), (params,))
