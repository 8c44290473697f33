"""ISM (Interval Score Matching): the DDIM inversion stride by formula, and the guidance's gradient
vs an independent per-view recomputation with the UNet loaded on its own."""

from __future__ import annotations

import os

import pytest
import torch
from test_sds import cameras, prompt_for, scaled_linear_alphas_cumprod
from tiny_models import make_tiny_sd

from threestudio_like.core.errors import UserError
from threestudio_like.guidance.ism import IntervalScoreGuidance, ddim_invert


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny pixel-space, camera-conditioned SD (like the toy prior) on disk."""
    return make_tiny_sd(str(tmp_path_factory.mktemp("sd")), pixel_space=True, camera_conditioned=True)


def test_ddim_invert_stride_formulas():
    acp = scaled_linear_alphas_cumprod(torch.arange(1000))
    torch.manual_seed(0)
    z, eps = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    a, b = torch.tensor([-1, 100, 500]), torch.tensor([199, 300, 500])
    z_b = ddim_invert(z, a, b, eps, acp)
    # from the clean start (ᾱ = 1) x̂₀ is z itself; a == b leaves z as it is
    torch.testing.assert_close(z_b[0], acp[199].sqrt() * z[0] + (1 - acp[199]).sqrt() * eps[0])
    torch.testing.assert_close(z_b[2], z[2])
    # by hand: view 1 from 100 to 300
    a1, b1 = acp[100], acp[300]
    x0_1 = (z[1] - (1 - a1).sqrt() * eps[1]) / a1.sqrt()
    torch.testing.assert_close(z_b[1], b1.sqrt() * x0_1 + (1 - b1).sqrt() * eps[1])
    # a DDIM denoising stride back along the same ε returns the start
    back = ddim_invert(z_b, b, a, eps, acp)
    torch.testing.assert_close(back, z, rtol=1e-4, atol=1e-4)


def independent_ism_grad(model_dir, z, t, cond, uncond, labels, scale, interval, stride, subtract):
    """Per view: strides −1 → stride−1 → 2·stride−1 … → s = t − interval with ε_∅, then s → t,
    CFG at t; w(t) = 1 − ᾱ_t; minus ε_∅ at s (``interval``) or the noise taking z to z_t
    (``render``). A loop over Python ints, one UNet call per branch."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet")).eval()
    acp = scaled_linear_alphas_cumprod(torch.arange(1000))

    def abar(k):
        return torch.tensor(1.0) if k < 0 else acp[k]

    def eps_at(x, k, text, i):
        with torch.no_grad():
            return unet(
                x, torch.tensor([max(k, 0)]), encoder_hidden_states=text[i : i + 1], class_labels=labels[i : i + 1]
            ).sample

    grads = []
    for i, ti in enumerate(t.tolist()):
        s = max(ti - interval, 0)
        stops = [-1] + list(range(stride - 1, s, stride)) + [s, ti]
        x = z[i : i + 1]
        for ka, kb in zip(stops[:-1], stops[1:]):
            e = eps_at(x, ka, uncond, i)
            x = abar(kb).sqrt() * (x - (1 - abar(ka)).sqrt() * e) / abar(ka).sqrt() + (1 - abar(kb)).sqrt() * e
        e_u, e_c = eps_at(x, ti, uncond, i), eps_at(x, ti, cond, i)
        if subtract == "render":
            e = (x - acp[ti].sqrt() * z[i : i + 1]) / (1 - acp[ti]).sqrt()
        grads.append((1 - acp[ti]) * (e_u + scale * (e_c - e_u) - e))  # e: ε_∅ at s for ISM
    return torch.cat(grads)


@pytest.mark.parametrize("subtract", ["interval", "render"])
def test_ism_gradient_matches_independent_computation(model_dir, tmp_path, subtract):
    prompt = prompt_for(model_dir, tmp_path)
    scale, b, interval, stride = 7.5, 3, 50, 200
    g = IntervalScoreGuidance(
        dict(
            pretrained_model_name_or_path=model_dir,
            guidance_scale=scale,
            weighting="sds",
            interval=interval,
            inversion_stride=stride,
            subtract=subtract,
        )
    ).place("cpu")
    cams = cameras()
    torch.manual_seed(0)
    rgb = torch.rand(b, 16, 16, 3, requires_grad=True)
    t = torch.tensor([30, 420, 900])  # s = 0 (one stride), 370 (two), 850 (five)
    out = g(rgb=rgb, prompt=prompt, cameras=cams, timesteps=t)
    out.loss.backward()
    z = (2 * rgb.detach() - 1).permute(0, 3, 1, 2)
    cond = torch.cat([prompt.views[v] for v in ("front", "side", "back")])
    grad = independent_ism_grad(
        model_dir,
        z,
        t,
        cond,
        prompt.uncond.expand(b, -1, -1),
        cams.c2w.reshape(b, 16),
        scale,
        interval,
        stride,
        subtract,
    )
    torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), 2 * grad / b, rtol=1e-3, atol=1e-5)
    assert out.timesteps.tolist() == t.tolist()
    # deterministic: no random noise on the path, the same render gives the same gradient
    rgb2 = rgb.detach().clone().requires_grad_(True)
    g(rgb=rgb2, prompt=prompt, cameras=cams, timesteps=t).loss.backward()
    torch.testing.assert_close(rgb2.grad, rgb.grad)


def test_ism_config_errors(model_dir):
    with pytest.raises(UserError, match="interval"):
        IntervalScoreGuidance(dict(pretrained_model_name_or_path=model_dir, interval=0))
    with pytest.raises(UserError, match="subtract"):
        IntervalScoreGuidance(dict(pretrained_model_name_or_path=model_dir, subtract="noise"))
