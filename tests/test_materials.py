"""Materials: shading augmentation draws and Magic3D's soft shading, against formulas."""

import pytest
import torch

from threestudio_like.materials.base import DiffuseWithPointLight

N = torch.nn.functional.normalize


def _points():
    torch.manual_seed(0)
    feats, normal = torch.randn(6, 3), N(torch.randn(6, 3), dim=-1)
    pos, light = torch.randn(6, 3) * 0.1, torch.randn(6, 3) * 3
    return feats, normal, pos, light


def _lit(feats, normal, pos, light, ambient, diffuse, textureless=False):
    """albedo·(ambient + diffuse·max(n·l, 0)), clamped to [0, 1] (white albedo when textureless)."""
    albedo = torch.ones(6, 3) if textureless else torch.sigmoid(feats)
    lambert = (normal * N(light - pos, dim=-1)).sum(-1, keepdim=True).clamp(min=0)
    return (albedo * (ambient + diffuse * lambert)).clamp(0, 1)


def test_soft_shading_draws_the_light_mix_once_per_lit_step():
    feats, normal, pos, light = _points()
    m = DiffuseWithPointLight({"ambient_only_steps": 0, "textureless_prob": 0.5, "soft_shading": True}).train()
    g, shadow = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for step in range(20):
        shading = m.training_shading(step, g)
        r = torch.rand((), generator=shadow).item()  # the shading draw…
        assert shading == ("textureless" if r < 0.5 else "diffuse")
        d = torch.rand((), generator=shadow).item()  # …then the diffuse intensity d ~ U[0, 1]
        out = m(feats, -pos, normal, light, pos, shading)
        expected = _lit(feats, normal, pos, light, 1 - d, d, textureless=shading == "textureless")
        assert torch.allclose(out, expected, atol=1e-6)
    m.eval()  # evaluation keeps the configured colours
    assert torch.allclose(m(feats, -pos, normal, light, pos, "diffuse"), _lit(feats, normal, pos, light, 0.1, 0.9))


def test_without_soft_shading_the_draws_and_colours_are_unchanged():
    feats, normal, pos, light = _points()
    m = DiffuseWithPointLight({"ambient_only_steps": 2, "textureless_prob": 0.0, "albedo_prob": 0.0}).train()
    g, shadow = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert m.training_shading(0, g) == "albedo"  # albedo-only steps draw nothing
    assert m.training_shading(2, g) == "diffuse"
    torch.rand((), generator=shadow)
    assert torch.rand((), generator=g).item() == torch.rand((), generator=shadow).item()  # one draw per step
    assert torch.allclose(m(feats, -pos, normal, light, pos, "diffuse"), _lit(feats, normal, pos, light, 0.1, 0.9))


def test_shading_probabilities():
    m = DiffuseWithPointLight({"ambient_only_steps": 0, "textureless_prob": 0.375, "albedo_prob": 0.25})
    g = torch.Generator().manual_seed(0)
    draws = [m.training_shading(1, g) for _ in range(8000)]
    for shading, p in (("albedo", 0.25), ("textureless", 0.375), ("diffuse", 0.375)):
        assert draws.count(shading) / len(draws) == pytest.approx(p, abs=0.02)
