"""SDS: gradient vs an independent recomputation from the UNet, w(t), t schedules, v-prediction,
Perp-Neg, latent/pixel priors, loading errors."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_models import make_tiny_sd

from threestudio_like.core.errors import UserError
from threestudio_like.data.cameras import make_cameras
from threestudio_like.guidance.diffusion import (
    clamp_denoised,
    classifier_free_guidance,
    perp_neg_guidance,
    perpendicular_component,
    sample_timesteps,
    sds_loss,
    timestep_range,
    to_epsilon,
    weighting_factor,
)
from threestudio_like.guidance.sds import ScoreDistillationGuidance
from threestudio_like.prompt.processor import PromptProcessor

PROMPT = "a red cube"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    return {
        "latent": make_tiny_sd(str(root / "latent")),
        "pixel_camera": make_tiny_sd(str(root / "pixel_camera"), pixel_space=True, camera_conditioned=True),
        "pixel_v": make_tiny_sd(str(root / "pixel_v"), pixel_space=True, prediction_type="v_prediction"),
    }


def prompt_for(model_dir, tmp_path, **kw):
    return PromptProcessor(
        dict(pretrained_model_name_or_path=model_dir, prompt=PROMPT, cache_dir=str(tmp_path / "cache"), **kw)
    )()


def cameras(elev=(10.0, 30.0, 0.0), azim=(0.0, 100.0, 180.0), size=16):
    n = len(elev)
    return make_cameras(
        torch.tensor(elev), torch.tensor(azim), torch.full((n,), 2.0), torch.full((n,), 40.0), size, size
    )


def scaled_linear_alphas_cumprod(t: torch.Tensor) -> torch.Tensor:
    """ᾱ_t of SD's scaled-linear schedule (β from 0.00085 to 0.012 over 1000 steps), by formula."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)[t].float()


def independent_eps_hat(model_dir, z, noise, t, cond, uncond, scale, class_labels=None, v_pred=False):
    """ε̂ from a UNet loaded on its own: z_t by formula, one call per branch, CFG by formula."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet")).eval()
    a = scaled_linear_alphas_cumprod(t).view(-1, 1, 1, 1)
    zt = a.sqrt() * z + (1 - a).sqrt() * noise
    with torch.no_grad():
        out_c = unet(zt, t, encoder_hidden_states=cond, class_labels=class_labels).sample
        out_u = unet(zt, t, encoder_hidden_states=uncond, class_labels=class_labels).sample
    if v_pred:  # v = √ᾱ ε − √(1−ᾱ) z  ⇒  ε = √ᾱ v + √(1−ᾱ) z_t
        out_c, out_u = a.sqrt() * out_c + (1 - a).sqrt() * zt, a.sqrt() * out_u + (1 - a).sqrt() * zt
    return out_u + scale * (out_c - out_u)


# ---- shared pieces -----------------------------------------------------------------------------
def test_weighting_formulas():
    a = torch.tensor([0.25, 0.81])
    torch.testing.assert_close(weighting_factor("sds", a), torch.tensor([0.75, 0.19]))
    torch.testing.assert_close(weighting_factor("uniform", a), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(weighting_factor("fantasia3d", a), torch.tensor([0.5 * 0.75, 0.9 * 0.19]))
    torch.testing.assert_close(weighting_factor("sigma2", a), torch.tensor([3.0, 0.19 / 0.81]))
    with pytest.raises(UserError, match="weighting"):
        weighting_factor("linear", a)


def test_timestep_range_and_sampling():
    assert timestep_range(1000, 0.02, 0.98) == (20, 980)
    assert timestep_range(1000, 0.5, 0.2) == (500, 500)  # max below min collapses onto min
    assert timestep_range(1000, 0.0, 1.0) == (0, 999)
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(20000, 20, 25, generator=g)
    assert t.dtype == torch.long and set(t.tolist()) == {20, 21, 22, 23, 24, 25}


def test_v_prediction_to_epsilon_inverts_the_scheduler():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction"
    )
    z, noise, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([5, 500, 990])
    zt = sched.add_noise(z, noise, t)
    v = sched.get_velocity(z, noise, t)
    a = sched.alphas_cumprod[t]
    torch.testing.assert_close(to_epsilon(v, zt, a, "v_prediction"), noise, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(to_epsilon(z, zt, a, "sample"), noise, atol=1e-3, rtol=1e-3)
    assert to_epsilon(noise, zt, a, "epsilon") is noise


def test_clamp_denoised_keeps_the_estimate_in_range_and_the_rest_unchanged():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, generator=g) * 1.5  # about a third outside [-1, 1]
    eps = torch.randn(2, 3, 4, 4, generator=g)
    a = torch.tensor([0.9, 0.05])
    noisy = a.sqrt().view(-1, 1, 1, 1) * x0 + (1 - a).sqrt().view(-1, 1, 1, 1) * eps
    out = clamp_denoised(eps, noisy, a, 1.0)
    # the denoised estimate of the result, by formula, is the clamped original
    x0_out = (noisy - (1 - a).sqrt().view(-1, 1, 1, 1) * out) / a.sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(x0_out, x0.clamp(-1, 1), rtol=1e-5, atol=1e-5)
    inside = x0.abs() <= 1
    torch.testing.assert_close(out[inside], eps[inside], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[~inside], eps[~inside])
    assert clamp_denoised(eps, noisy, a, None) is eps


def test_sds_loss_gradient_is_grad_over_batch():
    z = torch.randn(4, 3, 5, 5, requires_grad=True)
    grad = torch.randn(4, 3, 5, 5)
    loss = sds_loss(z, grad)
    loss.backward()
    torch.testing.assert_close(z.grad, grad / 4)
    torch.testing.assert_close(loss, 0.5 * grad.pow(2).sum() / 4)


def test_perp_neg_guidance_formula():
    u = torch.zeros(1, 2)
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[[2.0, 0.0], [1.0, 3.0]]])  # parallel to e_pos (no effect), then mixed
    w = torch.tensor([[-1.0, -0.5]])
    out = perp_neg_guidance(pos, u, neg, w, scale=10.0)
    torch.testing.assert_close(out, torch.tensor([[10.0, 10.0 * (-0.5 * 3.0)]]))
    torch.testing.assert_close(perpendicular_component(torch.tensor([[1.0, 3.0]]), pos), torch.tensor([[0.0, 3.0]]))
    torch.testing.assert_close(classifier_free_guidance(pos, u, 7.5), 7.5 * pos)


# ---- the guidance ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pixel_camera", "pixel_v"])
def test_sds_gradient_matches_independent_computation(models, tmp_path, kind):
    model_dir = models[kind]
    prompt = prompt_for(model_dir, tmp_path)
    scale, b = 7.5, 3
    g = ScoreDistillationGuidance(
        dict(pretrained_model_name_or_path=model_dir, guidance_scale=scale, weighting="sds")
    ).place("cpu")
    cams = cameras()
    torch.manual_seed(0)
    rgb = torch.rand(b, 16, 16, 3, requires_grad=True)
    noise, t = torch.randn(b, 3, 16, 16), torch.tensor([50, 400, 900])
    out = g(rgb=rgb, prompt=prompt, cameras=cams, noise=noise, timesteps=t)
    out.loss.backward()
    # independent: pixel-space z = 2·rgb − 1 (16² = the UNet size), view-dependent prompts
    z = (2 * rgb.detach() - 1).permute(0, 3, 1, 2)
    views = ["front", "side", "back"]
    cond = torch.cat([prompt.views[v] for v in views])
    uncond = prompt.uncond.expand(b, -1, -1)
    labels = cams.c2w.reshape(b, 16) if kind == "pixel_camera" else None
    eps_hat = independent_eps_hat(model_dir, z, noise, t, cond, uncond, scale, labels, v_pred=kind == "pixel_v")
    w = (1 - scaled_linear_alphas_cumprod(t)).view(-1, 1, 1, 1)
    grad = w * (eps_hat - noise)
    # d loss / d rgb = d loss / d z · dz/drgb = grad / B · 2
    torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), 2 * grad / b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.grad_norm, grad.norm(), rtol=1e-4, atol=1e-5)
    assert out.timesteps.tolist() == t.tolist()


def test_grad_clip_and_latent_input(models, tmp_path):
    model_dir = models["latent"]
    prompt = prompt_for(model_dir, tmp_path, view_dependent_prompting=False)
    clip = 0.01
    g = ScoreDistillationGuidance(
        dict(
            pretrained_model_name_or_path=model_dir,
            guidance_scale=100.0,
            grad_clip=clip,
            weighting="uniform",
            rgb_as_latents=True,
        )
    ).place("cpu")
    b = 2
    x = torch.rand(b, 8, 8, 4, requires_grad=True)  # latents rendered directly at the UNet size
    noise, t = torch.randn(b, 4, 8, 8), torch.tensor([300, 700])
    out = g(rgb=x, prompt=prompt, cameras=cameras((0.0, 0.0), (0.0, 90.0), 8), noise=noise, timesteps=t)
    out.loss.backward()
    z = (2 * x.detach() - 1).permute(0, 3, 1, 2)
    cond, uncond = prompt.cond.expand(b, -1, -1), prompt.uncond.expand(b, -1, -1)
    grad = (independent_eps_hat(model_dir, z, noise, t, cond, uncond, 100.0) - noise).clamp(-clip, clip)
    assert grad.abs().max() == pytest.approx(clip)  # the clip is active
    torch.testing.assert_close(x.grad.permute(0, 3, 1, 2), 2 * grad / b, rtol=1e-4, atol=1e-6)


def test_denoised_clip_pulls_each_pixel_towards_the_clamped_estimate(models, tmp_path):
    """With ``denoised_clip`` the SDS gradient is w(t)·√(ᾱ/(1−ᾱ))·(z − clamp(x̂₀)), x̂₀ from the
    guided ε̂ by formula (ε̂ − ε = √(ᾱ/(1−ᾱ))(z − x̂₀) without the clamp)."""
    model_dir = models["pixel_camera"]
    prompt = prompt_for(model_dir, tmp_path)
    scale, b = 30.0, 3
    g = ScoreDistillationGuidance(
        dict(pretrained_model_name_or_path=model_dir, guidance_scale=scale, weighting="uniform", denoised_clip=1.0)
    ).place("cpu")
    cams = cameras()
    torch.manual_seed(1)
    rgb = torch.rand(b, 16, 16, 3, requires_grad=True)
    noise, t = torch.randn(b, 3, 16, 16), torch.tensor([100, 500, 850])
    g(rgb=rgb, prompt=prompt, cameras=cams, noise=noise, timesteps=t).loss.backward()
    z = (2 * rgb.detach() - 1).permute(0, 3, 1, 2)
    cond = torch.cat([prompt.views[v] for v in ("front", "side", "back")])
    eps_hat = independent_eps_hat(
        model_dir, z, noise, t, cond, prompt.uncond.expand(b, -1, -1), scale, cams.c2w.reshape(b, 16)
    )
    a = scaled_linear_alphas_cumprod(t).view(-1, 1, 1, 1)
    x0 = ((a.sqrt() * z + (1 - a).sqrt() * noise) - (1 - a).sqrt() * eps_hat) / a.sqrt()
    outside = (x0.abs() > 1).float().mean()
    assert 0.05 < outside < 0.95  # the clamp is active on part of the pixels
    grad = (a / (1 - a)).sqrt() * (z - x0.clamp(-1, 1))
    # (x̂₀ divides by √ᾱ: fp32 rounding of ε̂ is amplified ~3× at t = 850)
    torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), 2 * grad / b, rtol=1e-3, atol=5e-5)
    # without the clamp the same formula gives back ε̂ − ε
    torch.testing.assert_close((a / (1 - a)).sqrt() * (z - x0), eps_hat - noise, rtol=1e-3, atol=1e-4)


def test_vae_encoding_matches_the_vae(models):
    from diffusers import AutoencoderKL

    model_dir = models["latent"]
    g = ScoreDistillationGuidance(dict(pretrained_model_name_or_path=model_dir)).place("cpu")
    rgb = torch.rand(2, 32, 32, 3)
    torch.manual_seed(3)
    z = g.prior.encode(rgb)
    vae = AutoencoderKL.from_pretrained(os.path.join(model_dir, "vae")).eval()
    x = torch.nn.functional.interpolate(rgb.permute(0, 3, 1, 2), (16, 16), mode="bilinear", align_corners=False)
    torch.manual_seed(3)
    expected = vae.encode(2 * x - 1).latent_dist.sample() * vae.config.scaling_factor
    torch.testing.assert_close(z, expected)
    assert z.shape == (2, 4, 8, 8)


def test_perp_neg_guidance_matches_independent(models, tmp_path):
    model_dir = models["pixel_v"]
    prompt = prompt_for(model_dir, tmp_path, use_perp_neg=True)
    scale = 5.0
    g = ScoreDistillationGuidance(dict(pretrained_model_name_or_path=model_dir, guidance_scale=scale)).place("cpu")
    cams = cameras((0.0, 80.0), (45.0, 0.0))  # front–side interpolation; overhead (no negatives)
    noise, t = torch.randn(2, 3, 16, 16), torch.tensor([300, 600])
    z = torch.rand(2, 3, 16, 16) * 2 - 1
    noisy = g.prior.scheduler.add_noise(z, noise, t)
    eps_hat = g.guided_noise(noisy, t, prompt, cams)
    # independent, view 0: pos = ½front + ½side; negatives front (w = −f_fs(½)), side (w = −f_sf(½))
    import math

    f = 4.0 * math.exp(-0.25) - 2.426
    front, side, over = prompt.views["front"], prompt.views["side"], prompt.views["overhead"]
    unc = prompt.uncond

    def eps(i, text):
        return independent_eps_hat(
            model_dir, z[i : i + 1], noise[i : i + 1], t[i : i + 1], text, text, 1.0, v_pred=True
        )

    e_u, e_p = eps(0, unc), eps(0, 0.5 * front + 0.5 * side)
    e_pos = e_p - e_u
    expected0 = e_u + scale * (
        e_pos
        - f * perpendicular_component(eps(0, front) - e_u, e_pos)
        - f * perpendicular_component(eps(0, side) - e_u, e_pos)
    )
    torch.testing.assert_close(eps_hat[:1], expected0, rtol=1e-4, atol=1e-5)
    expected1 = eps(1, unc) + scale * (eps(1, over) - eps(1, unc))
    torch.testing.assert_close(eps_hat[1:], expected1, rtol=1e-4, atol=1e-5)


def test_annealed_step_range(models):
    g = ScoreDistillationGuidance(
        dict(
            pretrained_model_name_or_path=models["pixel_v"], max_step_percent=[0, 0.98, 0.5, 100], min_step_percent=0.02
        )
    )
    g.update_step(0, 0)
    assert g.step_range() == (20, 980)
    g.update_step(0, 50)
    assert g.step_range() == (20, 740)
    g.update_step(0, 500)
    assert g.step_range() == (20, 500)


def test_no_trainable_state_and_errors(models, tmp_path):
    g = ScoreDistillationGuidance(dict(pretrained_model_name_or_path=models["pixel_v"]))
    assert list(g.parameters()) == [] and g.state_dict() == {}
    with pytest.raises(UserError, match="nowhere-model"):
        ScoreDistillationGuidance(dict(pretrained_model_name_or_path=str(tmp_path / "nowhere-model")))
    with pytest.raises(UserError, match="weighting"):
        ScoreDistillationGuidance(dict(pretrained_model_name_or_path=models["pixel_v"], weighting="sqrt"))
    with pytest.raises(UserError, match="not a diffusers pipeline"):
        ScoreDistillationGuidance(dict(pretrained_model_name_or_path=str(tmp_path)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (fp16 weights)")
def test_cuda_half_precision_matches_fp32(models, tmp_path):
    model_dir = models["latent"]
    prompt = prompt_for(model_dir, tmp_path)
    cams = cameras().to("cuda")
    x = torch.rand(3, 8, 8, 4, device="cuda")
    noise, t = torch.randn(3, 4, 8, 8, device="cuda"), torch.tensor([100, 500, 900], device="cuda")
    grads = []
    for half in (False, True):
        g = ScoreDistillationGuidance(
            dict(pretrained_model_name_or_path=model_dir, half_precision=half, guidance_scale=7.5, rgb_as_latents=True)
        ).place("cuda")
        assert g.prior.dtype == (torch.float16 if half else torch.float32)
        xi = x.clone().requires_grad_(True)
        g(rgb=xi, prompt=prompt.to("cuda"), cameras=cams, noise=noise, timesteps=t).loss.backward()
        grads.append(xi.grad)
    assert grads[1].dtype == torch.float32
    assert (grads[1] - grads[0]).norm() / grads[0].norm() < 2e-2
