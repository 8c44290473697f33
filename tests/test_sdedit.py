"""SDEdit refinement (DreamGaussian's texture stage): the DDIM loop against diffusers'
``DDIMScheduler``, DreamGaussian's start index, the composition with the tiny SD and Zero123
priors against an independent refinement, strength 1, delegation and the config groups."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_models import make_tiny_sd
from tiny_zero123 import make_tiny_zero123

from threestudio_like.core.errors import UserError
from threestudio_like.data.cameras import make_cameras
from threestudio_like.guidance.diffusion import DDIMSchedule, ddim_denoise, ddim_timesteps, to_epsilon
from threestudio_like.guidance.sdedit import SDEditGuidance
from threestudio_like.prompt.processor import PromptProcessor

SDS = "threestudio_like.guidance.sds.ScoreDistillationGuidance"
ZERO123 = "threestudio_like.guidance.zero123.Zero123Guidance"


def ddim_scheduler(**kw):
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, **kw)


def cameras(elev, azim, dist=2.0, size=8):
    n = len(elev)
    return make_cameras(
        torch.tensor(elev), torch.tensor(azim), torch.full((n,), dist), torch.full((n,), 40.0), size, size
    )


# ---- the DDIM loop -------------------------------------------------------------------------------
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
def test_timesteps_match_diffusers_set_timesteps(spacing, offset):
    sched = ddim_scheduler(timestep_spacing=spacing, steps_offset=offset)
    for steps in (1, 3, 7, 20, 50, 999):
        sched.set_timesteps(steps)
        assert torch.equal(ddim_timesteps(1000, steps, spacing, offset), sched.timesteps), (spacing, steps)
    with pytest.raises(UserError, match="num_inference_steps"):
        ddim_timesteps(1000, 1001, spacing, offset)


def test_start_index_is_dreamgaussians():
    # SD 2.1-base's scheduler: leading spacing, steps_offset 1, set_alpha_to_one false
    schedule = DDIMSchedule.from_scheduler(ddim_scheduler(steps_offset=1, set_alpha_to_one=False), 50)
    for strength in (0.0, 0.13, 0.5, 0.8, 0.87, 0.95, 0.999):
        assert schedule.start_index(strength) == int(50 * strength)
    # timesteps[k] = (N − 1 − k)·(T // N) + offset
    assert int(schedule.timesteps[schedule.start_index(0.8)]) == (49 - 40) * 20 + 1 == 181
    assert int(schedule.timesteps[schedule.start_index(0.95)]) == (49 - 47) * 20 + 1 == 41
    assert schedule.start_index(1.0) == 50
    assert schedule.final_alpha_cumprod == schedule.alphas_cumprod[0]


def test_schedule_reads_ddim_defaults_from_any_scheduler_config():
    """A DDPM config (the SD prior's scheduler) gets what ``DDIMScheduler.from_config`` gives it."""
    from diffusers import DDIMScheduler, DDPMScheduler

    for extra in ({}, {"set_alpha_to_one": False, "steps_offset": 1}):
        ddpm = DDPMScheduler.from_config({**DDPMScheduler().config, "beta_schedule": "scaled_linear", **extra})
        ddim = DDIMScheduler.from_config(ddpm.config)
        ddim.set_timesteps(25)
        ours = DDIMSchedule.from_scheduler(ddpm, 25)
        assert torch.equal(ours.timesteps, ddim.timesteps)
        assert float(ours.final_alpha_cumprod) == float(ddim.final_alpha_cumprod)
        assert ours.stride == 40


def linear_model(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """An analytic 'denoiser': linear in z, varying with t."""
    g = torch.Generator().manual_seed(1)
    pattern = torch.randn(z.shape[1:], generator=g)
    t = float(t)
    return 0.7 * torch.cos(torch.tensor(t / 300.0)) * z + 0.3 * torch.sin(torch.tensor(t / 100.0)) * pattern


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(
    "spacing,offset,alpha_to_one",
    [("leading", 1, False), ("leading", 0, True), ("trailing", 0, False), ("linspace", 0, True)],
)
def test_denoising_loop_matches_diffusers_ddim(prediction_type, spacing, offset, alpha_to_one):
    sched = ddim_scheduler(
        prediction_type=prediction_type, timestep_spacing=spacing, steps_offset=offset, set_alpha_to_one=alpha_to_one
    )
    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn(2, 3, 6, 6, generator=g), torch.randn(2, 3, 6, 6, generator=g)
    alphas = sched.alphas_cumprod
    for steps in (50, 7):
        sched.set_timesteps(steps)
        schedule = DDIMSchedule.from_scheduler(sched, steps)
        for strength in (0.0, 0.3, 0.8, 0.95):
            k = int(steps * strength)
            noisy = sched.add_noise(x, noise, sched.timesteps[k])
            expected = noisy
            for t in sched.timesteps[k:]:
                expected = sched.step(linear_model(expected, t), t, expected, eta=0.0).prev_sample
            calls: list[int] = []

            def eps_fn(z, t, calls=calls):
                calls.append(int(t))
                return to_epsilon(linear_model(z, t), z, alphas[t].view(1), prediction_type)

            ours = ddim_denoise(noisy, schedule, schedule.start_index(strength), eps_fn)
            assert calls == sched.timesteps[k:].tolist()
            torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-5)


def test_strength_one_runs_no_step():
    schedule = DDIMSchedule.from_scheduler(ddim_scheduler(), 50)
    z = torch.randn(1, 4, 4, 4)

    def never(z, t):
        raise AssertionError("no step may run at strength 1")

    assert ddim_denoise(z, schedule, schedule.start_index(1.0), never) is z


# ---- the composition ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdedit")
    return {
        "sd_pixel": make_tiny_sd(str(root / "sd_pixel"), pixel_space=True),
        "sd_latent": make_tiny_sd(str(root / "sd_latent")),
        "zero123": make_tiny_zero123(str(root / "zero123"), pixel_space=True),
    }


def prompt_for(model_dir, tmp_path):
    return PromptProcessor(
        dict(pretrained_model_name_or_path=model_dir, prompt="a red cube", cache_dir=str(tmp_path / "cache"))
    )()


def reference_refinement(model_dir, rgb, noise, cond, uncond, scale, strength, steps):
    """DreamGaussian's ``refine()`` for a pixel-space prior: diffusers' ``DDIMScheduler`` from the
    model's scheduler config, the UNet loaded on its own, CFG by formula."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet")).eval()
    sched = DDIMScheduler.from_pretrained(model_dir, subfolder="scheduler")
    sched.set_timesteps(steps)
    k = int(steps * strength)
    z = sched.add_noise(rgb.permute(0, 3, 1, 2) * 2 - 1, noise, sched.timesteps[k])
    with torch.no_grad():
        for t in sched.timesteps[k:]:
            c = unet(z, t, encoder_hidden_states=cond).sample
            u = unet(z, t, encoder_hidden_states=uncond).sample
            z = sched.step(u + scale * (c - u), t, z).prev_sample
    return ((z + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1), sched.timesteps[k], sched.config.steps_offset


def test_sd_refinement_matches_dreamgaussians_and_fits_the_render(models, tmp_path):
    model_dir = models["sd_pixel"]
    guidance = SDEditGuidance(
        {
            "prior": {"_target_": SDS, "pretrained_model_name_or_path": model_dir, "guidance_scale": 7.5},
            "strength": 0.8,
            "num_inference_steps": 20,
        }
    ).place("cpu")
    assert guidance.needs_prompt and not guidance.uses_reference and guidance.pretrained_kind == "stable-diffusion"
    assert list(guidance.parameters()) == [] and list(guidance.state_dict()) == []
    with pytest.raises(UserError, match="prompt_processor"):
        guidance(torch.rand(1, 16, 16, 3), cameras([0.0], [0.0], size=16))
    prompt = prompt_for(model_dir, tmp_path)
    g = torch.Generator().manual_seed(3)
    rgb = torch.rand(2, 16, 16, 3, generator=g, requires_grad=True)  # the prior's 16² pixels: no resize
    noise = torch.randn(2, 3, 16, 16, generator=g)
    cams = cameras([10.0, 30.0], [0.0, 120.0], size=16)
    out = guidance(rgb, cams, prompt, noise=noise)
    out.loss.backward()

    cond, uncond = prompt.get_text_embeddings(cams.elevation, cams.azimuth)
    refined, t, offset = reference_refinement(model_dir, rgb.detach(), noise, cond, uncond, 7.5, 0.8, 20)
    assert int(t) == (19 - 16) * 50 + offset  # leading spacing, T//N = 50
    assert torch.equal(out.timesteps, torch.full((2,), int(t)))
    diff = rgb.detach() - refined
    assert diff.abs().max() > 1e-2  # the refinement changed the render
    torch.testing.assert_close(out.loss.detach(), diff.pow(2).mean(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(rgb.grad, 2 * diff / diff.numel(), atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(out.grad_norm, diff.norm(), atol=1e-6, rtol=1e-4)
    assert out.extras["strength"].item() == pytest.approx(0.8)
    unet = guidance.prior.prior.unet
    assert all(not p.requires_grad and p.grad is None for p in unet.parameters())


def test_latent_prior_decodes_and_resizes_to_the_render(models, tmp_path):
    model_dir = models["sd_latent"]
    guidance = SDEditGuidance(
        {"prior": {"_target_": SDS, "pretrained_model_name_or_path": model_dir}, "num_inference_steps": 10}
    ).place("cpu")
    prior = guidance.prior.prior
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = (prior.vae.decode(z / prior.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(guidance.prior.decode(z), expected.permute(0, 2, 3, 1))  # (B,16,16,3)
    rgb = torch.rand(2, 12, 12, 3, requires_grad=True)
    out = guidance(rgb, cameras([0.0, 20.0], [0.0, 90.0], size=12), prompt_for(model_dir, tmp_path))
    out.loss.backward()
    assert out.loss.ndim == 0 and rgb.grad.shape == rgb.shape and torch.isfinite(rgb.grad).all()
    # default strength: DreamGaussian's ramp [0, 0.8, 0.95, 50] at step 0 → k = int(10·0.8)
    assert out.extras["strength"].item() == pytest.approx(0.8)
    assert torch.equal(out.timesteps, guidance.schedule.timesteps[8].expand(2))


def test_zero123_prior_delegation_schedule_and_strength_one(models):
    model_dir = models["zero123"]
    cfg = {"prior": {"_target_": ZERO123, "pretrained_model_name_or_path": model_dir, "guidance_scale": 5.0}}
    guidance = SDEditGuidance(cfg).place("cpu")
    assert not guidance.needs_prompt and guidance.uses_reference and guidance.pretrained_kind == "zero123"
    cams = cameras([20.0, -10.0], [60.0, 200.0])
    rgb = torch.rand(2, 8, 8, 3, requires_grad=True)
    with pytest.raises(UserError, match="reference"):
        guidance(rgb, cams)
    guidance.set_reference(torch.rand(1, 16, 16, 3), 0.0, 0.0, 2.0)
    assert guidance.prior._reference is not None
    guidance.update_step(0, 25)  # the schedules of both: strength 0.875 → k = 43
    assert guidance.prior._step == 25 and guidance.strength() == pytest.approx(0.875)
    out = guidance(rgb, cams)
    out.loss.backward()
    assert torch.equal(out.timesteps, torch.full((2,), (49 - 43) * 20))  # tiny Zero123: no offset
    assert torch.isfinite(rgb.grad).all() and out.loss > 0

    # strength 1: no noise, no step; the target is the render's round trip (identity in pixel space)
    guidance = SDEditGuidance({**cfg, "strength": 1.0}).place("cpu")
    guidance.set_reference(torch.rand(1, 16, 16, 3), 0.0, 0.0, 2.0)

    def never(*args):
        raise AssertionError("no denoising step at strength 1")

    guidance.prior.guided_noise = never
    rgb = torch.rand(2, 8, 8, 3, requires_grad=True)
    out = guidance(rgb, cams)
    out.loss.backward()
    assert out.loss.item() < 1e-12 and rgb.grad.abs().max() < 1e-7
    assert torch.equal(out.timesteps, torch.zeros(2, dtype=torch.long))


def test_config_groups_instantiate_as_guidances():
    from threestudio_like.cli import compose_config
    from threestudio_like.core.config import instantiate
    from threestudio_like.guidance.base import Guidance
    from threestudio_like.guidance.sds import ScoreDistillationGuidance
    from threestudio_like.guidance.zero123 import Zero123Guidance

    for group, prior_cls, scale in (
        ("sdedit", ScoreDistillationGuidance, 100.0),
        ("sdedit_zero123", Zero123Guidance, 5.0),
    ):
        cfg = compose_config(["experiment=dreamfusion", "prompt=a cube", f"guidance={group}", "debug=smoke"])
        guidance = instantiate(cfg.guidance, where="guidance", expected=Guidance)
        assert isinstance(guidance, SDEditGuidance) and type(guidance.prior) is prior_cls
        assert guidance.prior.guidance_scale() == scale and guidance.cfg.num_inference_steps == 50
        assert guidance.strength() == 0.8
        guidance.update_step(0, 50)
        assert guidance.strength() == pytest.approx(0.95)
    with pytest.raises(UserError, match="not a DistillationGuidance"):
        SDEditGuidance({"prior": {"_target_": "threestudio_like.guidance.clip.ClipGuidance"}})
