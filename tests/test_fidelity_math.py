"""The guidance math against formulas written here in threestudio's conventions (its
stable-diffusion, stable-diffusion-vsd and zero123 guidances, read 2026-12-04 at commit 28d9d80),
on the tiny models with fixed noise and timesteps, equal to 1e-5 relative.

What test_sds.py, test_vsd.py and test_zero123.py do not already hold: threestudio's CFG form
(ε_c + s(ε_c − ε_u)) and its equality with ours at s + 1, SDS through a VAE, the VSD gradient
with threestudio's LoRA/camera-embedding init and a LoRA CFG over a zeroed camera, the LoRA
loss for ε and v targets, and Zero123's pose formula and gradient through a VAE.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from test_vsd import independent_lora_unet
from tiny_models import make_tiny_sd
from tiny_zero123 import make_tiny_zero123

from threestudio_like.data.cameras import make_cameras
from threestudio_like.guidance.sds import ScoreDistillationGuidance
from threestudio_like.guidance.vsd import VariationalScoreDistillation
from threestudio_like.guidance.zero123 import Zero123Guidance
from threestudio_like.guidance.zero123_pipeline import relative_pose
from threestudio_like.prompt.processor import PromptProcessor

RTOL = 1e-5
"""Largest element-wise difference allowed, relative to the largest magnitude of the formula's
tensor (float32 UNet calls batched differently differ by ~1e-6 of it)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity")
    return {
        "pixel": make_tiny_sd(str(root / "pixel"), pixel_space=True),
        "pixel_v": make_tiny_sd(str(root / "pixel_v"), pixel_space=True, prediction_type="v_prediction"),
        "latent": make_tiny_sd(str(root / "latent")),
        "zero123": make_tiny_zero123(str(root / "zero123"), pixel_space=False),
    }


def prompt_for(model_dir, tmp_path):
    return PromptProcessor(
        dict(pretrained_model_name_or_path=model_dir, prompt="a red cube", cache_dir=str(tmp_path / "cache"))
    )()


def cameras(elev, azim, dist=None, size=16):
    n = len(elev)
    d = torch.full((n,), 2.0) if dist is None else torch.tensor(dist)
    return make_cameras(torch.tensor(elev), torch.tensor(azim), d, torch.full((n,), 40.0), size, size)


def alphas_cumprod(t):
    """ᾱ_t of SD's scaled-linear schedule (β from 0.00085 to 0.012 over 1000 steps), by formula."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)[t].float().view(-1, 1, 1, 1)


def unet_of(model_dir):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet")).eval()


def threestudio_sds_grad(unet, z, noise, t, cond, uncond, scale):
    """stable_diffusion_guidance.compute_grad_sds: ε̂ = ε_text + s(ε_text − ε_uncond), w = 1 − ᾱ."""
    a = alphas_cumprod(t)
    zt = a.sqrt() * z + (1 - a).sqrt() * noise
    with torch.no_grad():
        e_text = unet(zt, t, encoder_hidden_states=cond).sample
        e_uncond = unet(zt, t, encoder_hidden_states=uncond).sample
    return (1 - a) * (e_text + scale * (e_text - e_uncond) - noise)


def close(actual, expected):
    scale = expected.abs().max().item()
    assert scale > 0 and (actual - expected).abs().max().item() <= RTOL * scale


# ---- SDS ---------------------------------------------------------------------------------------
def test_sds_threestudio_cfg_form_and_its_equivalence_at_scale_plus_one(models, tmp_path):
    model_dir, b = models["pixel"], 3
    prompt = prompt_for(model_dir, tmp_path)
    cams = cameras([10.0, 30.0, 0.0], [0.0, 100.0, 180.0])
    torch.manual_seed(0)
    rgb0 = torch.rand(b, 16, 16, 3)
    noise, t = torch.randn(b, 3, 16, 16), torch.tensor([50, 400, 900])
    grads, losses = {}, {}
    for form, scale in (("cond", 100.0), ("uncond", 101.0)):
        g = ScoreDistillationGuidance(
            dict(pretrained_model_name_or_path=model_dir, guidance_scale=scale, cfg_form=form)
        ).place("cpu")
        rgb = rgb0.clone().requires_grad_(True)
        out = g(rgb=rgb, prompt=prompt, cameras=cams, noise=noise, timesteps=t)
        out.loss.backward()
        grads[form], losses[form] = rgb.grad, out.loss.detach()
    z = (2 * rgb0 - 1).permute(0, 3, 1, 2)
    cond = torch.cat([prompt.views[v] for v in ("front", "side", "back")])
    grad = threestudio_sds_grad(unet_of(model_dir), z, noise, t, cond, prompt.uncond.expand(b, -1, -1), 100.0)
    # loss_sds = ½ Σ (z − (z − grad))² / B: value ½‖grad‖²/B, ∂/∂z = grad/B, z = 2·rgb − 1
    close(grads["cond"].permute(0, 3, 1, 2), 2 * grad / b)
    close(losses["cond"], 0.5 * grad.pow(2).sum() / b)
    close(grads["uncond"], grads["cond"])


def test_sds_through_the_vae_in_threestudio_conventions(models, tmp_path):
    """Renders resized bilinearly to the VAE's input size, latents = posterior sample × scaling
    factor (the one random draw of the call when noise and t are given: same seed, same sample)."""
    from diffusers import AutoencoderKL

    model_dir, b = models["latent"], 2
    prompt = prompt_for(model_dir, tmp_path)
    cams = cameras([20.0, 5.0], [-30.0, 170.0])
    g = ScoreDistillationGuidance(
        dict(pretrained_model_name_or_path=model_dir, guidance_scale=100.0, cfg_form="cond")
    ).place("cpu")
    torch.manual_seed(1)
    rgb = torch.rand(b, 12, 12, 3, requires_grad=True)
    noise, t = torch.randn(b, 4, 8, 8), torch.tensor([120, 870])
    torch.manual_seed(7)
    out = g(rgb=rgb, prompt=prompt, cameras=cams, noise=noise, timesteps=t)
    out.loss.backward()

    vae = AutoencoderKL.from_pretrained(os.path.join(model_dir, "vae")).eval()
    x = rgb.detach().permute(0, 3, 1, 2).requires_grad_(True)
    x16 = torch.nn.functional.interpolate(x, (16, 16), mode="bilinear", align_corners=False)
    torch.manual_seed(7)
    z = vae.encode(x16 * 2 - 1).latent_dist.sample() * vae.config.scaling_factor
    cond = torch.cat([prompt.views["front"], prompt.views["back"]])
    grad = threestudio_sds_grad(unet_of(model_dir), z.detach(), noise, t, cond, prompt.uncond.expand(b, -1, -1), 100.0)
    (0.5 * (z - (z - grad).detach()).pow(2).sum() / b).backward()
    close(rgb.grad.permute(0, 3, 1, 2), x.grad)
    close(out.grad_norm, grad.norm())


# ---- VSD ---------------------------------------------------------------------------------------
def vsd(model_dir, **kw):
    """VSD with threestudio's LoRA and camera-embedding init (``kw`` overrides)."""
    cfg = dict(pretrained_model_name_or_path=model_dir, lora_init="gaussian", camera_embedding_init="default")
    return VariationalScoreDistillation({**cfg, **kw}).place("cpu")


def test_vsd_lora_init_and_optimizer_are_threestudios(models):
    g = vsd(models["pixel"], lora_lr=1e-4, lora_betas=[0.9, 0.99], lora_eps=1e-15, lora_weight_decay=0.01)
    a = torch.cat([p.detach().flatten() for n, p in g.lora_layers.named_parameters() if ".A." in n])
    b = torch.cat([p.detach().flatten() for n, p in g.lora_layers.named_parameters() if ".B." in n])
    # diffusers' LoRALinearLayer: down ~ N(0, (1/rank)²), up = 0 (rank 4: std 0.25)
    assert b.abs().max() == 0 and abs(a.mean().item()) < 0.03 and a.std().item() == pytest.approx(0.25, rel=0.1)
    assert g.camera_embedding.linear_2.weight.abs().max() > 0  # torch's Linear init, not zeros
    group = g.lora_optimizer.param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["eps"], group["weight_decay"]) == (1e-4, (0.9, 0.99), 1e-15, 0.01)
    ours = vsd(models["pixel"], camera_embedding_init="zero")
    assert ours.camera_embedding.linear_2.weight.abs().max() == 0


def test_vsd_particle_gradient_with_lora_cfg_over_a_zeroed_camera(models, tmp_path):
    """stable_diffusion_vsd_guidance.compute_grad_vsd: ε_pretrain = CFG 7.5 (uncond form) with the
    view-dependent prompt; ε_est = LoRA UNet with the view-independent prompt on [camera; zeros],
    ε_u + s_lora(ε_camera − ε_u); grad = (1 − ᾱ)(ε_pretrain − ε_est)."""
    model_dir, b, s_lora = models["pixel"], 2, 2.0
    prompt = prompt_for(model_dir, tmp_path)
    cams = cameras([10.0, 20.0], [0.0, 150.0])
    g = vsd(model_dir, lora_lr=1e-2, guidance_scale=7.5, guidance_scale_lora=s_lora)
    torch.manual_seed(0)
    z_train = torch.rand(b, 3, 16, 16) * 2 - 1
    for _ in range(3):  # move the LoRA's B off zero
        g.train_lora(z_train, prompt, cams)
    g.eval()
    torch.manual_seed(2)
    rgb = torch.rand(b, 16, 16, 3, requires_grad=True)
    noise, t = torch.randn(b, 3, 16, 16), torch.tensor([200, 800])
    out = g(rgb=rgb, prompt=prompt, cameras=cams, noise=noise, timesteps=t)
    out.loss.backward()

    a = alphas_cumprod(t)
    zt = a.sqrt() * (2 * rgb.detach() - 1).permute(0, 3, 1, 2) + (1 - a).sqrt() * noise
    base = unet_of(model_dir)
    lora_unet, cam = independent_lora_unet(model_dir, g)
    lora_unet.class_embedding = cam
    c2w = cams.c2w.reshape(b, 16)
    with torch.no_grad():
        vd = torch.cat([prompt.views["front"], prompt.views["back"]])
        e_text = base(zt, t, encoder_hidden_states=vd).sample
        e_unc = base(zt, t, encoder_hidden_states=prompt.uncond.expand(b, -1, -1)).sample
        eps_pretrain = e_unc + 7.5 * (e_text - e_unc)
        plain = prompt.cond.expand(b, -1, -1)
        e_cam = lora_unet(zt, t, encoder_hidden_states=plain, class_labels=c2w).sample
        e_nocam = lora_unet(zt, t, encoder_hidden_states=plain, class_labels=torch.zeros_like(c2w)).sample
        eps_est = e_nocam + s_lora * (e_cam - e_nocam)
    assert (e_cam - e_nocam).abs().max() > 1e-4  # the camera matters: the CFG is exercised
    grad = (1 - a) * (eps_pretrain - eps_est)
    close(rgb.grad.permute(0, 3, 1, 2), 2 * grad / b)


@pytest.mark.parametrize("kind", ["pixel", "pixel_v"])
def test_vsd_lora_loss_matches_threestudio(models, tmp_path, kind):
    """train_lora: noisy = scheduler_lora.add_noise(z, ε, t); target ε (epsilon) or the velocity
    √ᾱ ε − √(1−ᾱ) z (v_prediction); mean squared error of the LoRA UNet's output."""
    model_dir, b = models[kind], 2
    prompt = prompt_for(model_dir, tmp_path)
    cams = cameras([0.0, 40.0], [60.0, -120.0])
    g = vsd(model_dir, lora_lr=1e-2)
    torch.manual_seed(3)
    for _ in range(2):
        g.train_lora(torch.rand(b, 3, 16, 16) * 2 - 1, prompt, cams)
    z, noise, t = torch.rand(b, 3, 16, 16) * 2 - 1, torch.randn(b, 3, 16, 16), torch.tensor([5, 640])
    text = prompt.cond.expand(b, -1, -1)
    labels = g.camera_labels(cams.c2w)
    loss = g.lora_loss(z, text, labels, t, noise)

    lora_unet, cam = independent_lora_unet(model_dir, g)
    lora_unet.class_embedding = cam
    a = alphas_cumprod(t)
    with torch.no_grad():
        pred = lora_unet(a.sqrt() * z + (1 - a).sqrt() * noise, t, encoder_hidden_states=text, class_labels=labels)
    target = noise if kind == "pixel" else a.sqrt() * noise - (1 - a).sqrt() * z
    close(loss.detach(), (pred.sample - target).pow(2).mean())


# ---- Zero123 -----------------------------------------------------------------------------------
def threestudio_zero123_pose(elevation, azimuth, distance, ref_elevation, ref_azimuth, ref_distance):
    """zero123_guidance.get_cond: [deg2rad((90 − e) − (90 − e_ref)), sin Δa, cos Δa, d − d_ref]."""
    d_azimuth = torch.deg2rad(azimuth - ref_azimuth)
    polar = torch.deg2rad((90 - elevation) - (90 - ref_elevation))
    return torch.stack([polar, torch.sin(d_azimuth), torch.cos(d_azimuth), distance - ref_distance], -1)


def test_zero123_pose_is_threestudios_formula():
    g = torch.Generator().manual_seed(0)
    e, a = torch.rand(64, generator=g) * 100 - 10, torch.rand(64, generator=g) * 360 - 180
    d = 3.0 + torch.rand(64, generator=g)
    for ref in ((5.0, 0.0, 3.8), (-12.0, 37.0, 3.2)):
        close(relative_pose(e, a, d, *ref), threestudio_zero123_pose(e, a, d, *ref))


def test_zero123_gradient_through_the_vae_in_threestudio_conventions(models):
    """Renders resized to the model's image size, latents = VAE sample × scaling factor; the
    reference's concat latent = VAE mode (unscaled), its CLIP embedding projected with the pose;
    unconditional = zero projected context and zero concat latent; ε_u + s(ε_c − ε_u);
    grad = (1 − ᾱ)(ε̂ − ε)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    model_dir, b, scale = models["zero123"], 2, 3.0
    guidance = Zero123Guidance(dict(pretrained_model_name_or_path=model_dir, guidance_scale=scale)).place("cpu")
    gen = torch.Generator().manual_seed(4)
    ref_rgb = torch.rand(1, 16, 16, 3, generator=gen)
    guidance.set_reference(ref_rgb, elevation_deg=5.0, azimuth_deg=0.0, distance=3.8)
    cams = cameras([25.0, -5.0], [80.0, 200.0], [3.8, 3.8], size=12)
    rgb = torch.rand(b, 12, 12, 3, generator=gen, requires_grad=True)
    noise, t = torch.randn(b, 4, 8, 8, generator=gen), torch.tensor([300, 720])
    torch.manual_seed(11)
    out = guidance(rgb, cams, noise=noise, timesteps=t)
    out.loss.backward()

    pipe = guidance.pipe
    vae = AutoencoderKL.from_pretrained(os.path.join(model_dir, "vae")).eval()
    unet = UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet")).eval()
    x = rgb.detach().permute(0, 3, 1, 2).requires_grad_(True)
    x16 = torch.nn.functional.interpolate(x, (16, 16), mode="bilinear", align_corners=False)
    torch.manual_seed(11)
    z = vae.encode(x16 * 2 - 1).latent_dist.sample() * vae.config.scaling_factor
    with torch.no_grad():
        c_concat = vae.encode(ref_rgb.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mode().expand(b, -1, -1, -1)
        clip_emb = guidance._reference["embedding"].expand(b, -1, -1)  # CLIP image encoder: tested in test_zero123
        pose = threestudio_zero123_pose(cams.elevation, cams.azimuth, cams.distance, 5.0, 0.0, 3.8)
        c_cross = pipe.cc_projection.proj(torch.cat([clip_emb, pose[:, None]], -1))
        a = pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z + (1 - a).sqrt() * noise
        e_u = unet(torch.cat([zt, torch.zeros_like(c_concat)], 1), t, encoder_hidden_states=torch.zeros_like(c_cross))
        e_c = unet(torch.cat([zt, c_concat], 1), t, encoder_hidden_states=c_cross)
        grad = (1 - a) * (e_u.sample + scale * (e_c.sample - e_u.sample) - noise)
    (0.5 * (z - (z - grad).detach()).pow(2).sum() / b).backward()
    close(rgb.grad.permute(0, 3, 1, 2), x.grad)
    close(out.grad_norm, grad.norm())
    assert math.isclose(out.loss.item(), 0.5 * grad.pow(2).sum().item() / b, rel_tol=RTOL)
