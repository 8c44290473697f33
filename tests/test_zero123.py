"""Zero123 pipeline (pose conditioning, layouts, sampling, round trip) and guidance (SDS gradient)."""

import math

import pytest
import torch
from tiny_zero123 import make_tiny_zero123

from threestudio_like.core.errors import UserError
from threestudio_like.data.cameras import make_cameras
from threestudio_like.guidance.zero123_pipeline import CCProjection, Zero123Pipeline, relative_pose

OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def pixel_dir(tmp_path_factory):
    return make_tiny_zero123(str(tmp_path_factory.mktemp("z123px")), pixel_space=True)


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory):
    return make_tiny_zero123(str(tmp_path_factory.mktemp("z123vae")), pixel_space=False)


def test_relative_pose_hand_values():
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    pose = relative_pose(t(30.0, -20.0), t(90.0, -45.0), t(2.5, 2.0), 0.0, 0.0, 2.0)
    # camera moves up 30° → polar decreases: Δpolar = −30°
    assert torch.allclose(pose[0], t(-math.pi / 6, 1.0, 0.0, 0.5), atol=1e-12)
    d = math.radians(-45.0)
    assert torch.allclose(pose[1], t(math.radians(20.0), math.sin(d), math.cos(d), 0.0), atol=1e-12)
    pose = relative_pose(t(-20.0), t(10.0), t(9.0), 10.0, 30.0, 2.0, kind="stable_zero123")
    d = math.radians(-20.0)
    assert torch.allclose(pose[0], t(math.radians(30.0), math.sin(d), math.cos(d), math.radians(80.0)), atol=1e-12)
    # a reference per target (training pairs): each row is that pair's pose
    targets, references = (t(-20.0, 40.0), t(10.0, 0.0), t(9.0, 2.0)), (t(10.0, 25.0), t(30.0, 90.0), t(2.0, 2.0))
    pose = relative_pose(*targets, *references, "stable_zero123")
    assert torch.allclose(pose[0], t(math.radians(30.0), math.sin(d), math.cos(d), math.radians(80.0)), atol=1e-12)
    assert torch.allclose(pose[1], t(math.radians(-15.0), -1.0, 0.0, math.radians(65.0)), atol=1e-12)
    with pytest.raises(UserError):
        relative_pose(t(0.0), t(0.0), t(1.0), 0.0, 0.0, 1.0, kind="zero124")


@pytest.mark.parametrize("layout", ["kxic", "ashawkey"])
def test_third_party_projection_layouts_load(tmp_path, layout, pixel_dir):
    reference = Zero123Pipeline.from_pretrained(pixel_dir).cc_projection
    path = make_tiny_zero123(str(tmp_path / layout), pixel_space=True, layout=layout)
    loaded = Zero123Pipeline.from_pretrained(path).cc_projection
    assert isinstance(loaded, CCProjection)
    assert loaded.config.embedding_dim == 16 and loaded.config.additional_embeddings == 4
    assert torch.equal(loaded.proj.weight, reference.proj.weight)
    assert torch.equal(loaded.proj.bias, reference.proj.bias)


def test_loading_does_not_warn_about_torchvision(monkeypatch, pixel_dir):
    """The feature extractor is made with the PIL CLIP processor where transformers has one, without
    naming the torchvision one (naming it warns that it falls back, once per process)."""
    import transformers
    from transformers.utils import import_utils

    warnings = []
    monkeypatch.setattr(import_utils.logger, "warning_once", lambda message, *a, **k: warnings.append(message))
    pipe = Zero123Pipeline.from_pretrained(pixel_dir)
    assert not warnings, warnings
    pil = getattr(transformers, "CLIPImageProcessorPil", None)
    assert pil is None or type(pipe.feature_extractor) is pil


def test_missing_checkpoint_pieces_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="model_index.json"):
        Zero123Pipeline.from_pretrained(str(tmp_path))
    with pytest.raises(UserError, match="no weights"):
        CCProjection.load_checkpoint(str(tmp_path))


@pytest.mark.parametrize("which", ["pixel", "latent"])
def test_save_pretrained_round_trip_identical(tmp_path, which, pixel_dir, latent_dir):
    pipe = Zero123Pipeline.from_pretrained(pixel_dir if which == "pixel" else latent_dir)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(str(tmp_path / "again"))
    again = Zero123Pipeline.from_pretrained(str(tmp_path / "again"))
    again.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    kw = dict(elevation=torch.tensor([15.0, -10.0]), azimuth=40.0, radius=0.1, num_inference_steps=2)
    a = pipe(image, generator=torch.Generator().manual_seed(0), **kw).images
    b = again(image, generator=torch.Generator().manual_seed(0), **kw).images
    assert a.shape == (2, 3, pipe.image_size, pipe.image_size)
    assert torch.equal(a, b)
    assert (again.vae is None) == (which == "pixel")


def test_a_float16_checkpoint_loads_in_float32_or_as_asked(tmp_path, pixel_dir):
    """Checkpoints stored in float16 (as hub copies often are) load every part in float32 by
    default — not the image encoder in float16 beside a float32 UNet — with the same weights, and
    in the dtype asked for."""
    pipe = Zero123Pipeline.from_pretrained(pixel_dir)
    pipe.to(torch.float16).save_pretrained(str(tmp_path / "half"))
    for dtype in (None, torch.float32, torch.float16):
        loaded = Zero123Pipeline.from_pretrained(str(tmp_path / "half"), torch_dtype=dtype)
        for name in ("unet", "image_encoder", "cc_projection"):
            params = dict(getattr(loaded, name).named_parameters())
            assert {p.dtype for p in params.values()} == {dtype or torch.float32}, name
            for key, value in getattr(pipe, name).named_parameters():
                assert torch.equal(params[key].half(), value.detach().half()), (name, key)


def test_sampling_matches_hand_written_ddim_loop(pixel_dir):
    pipe = Zero123Pipeline.from_pretrained(pixel_dir)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 16, 16, generator=g)
    start = torch.randn(1, 3, 8, 8, generator=g)
    scale, steps = 2.5, 3
    out = pipe(
        image,
        elevation=20.0,
        azimuth=-60.0,
        radius=0.0,
        num_inference_steps=steps,
        guidance_scale=scale,
        latents=start.clone(),
    ).images

    # independent: CLIP embedding, pose, projection, concat conditioning, CFG, DDIM (eta 0)
    with torch.no_grad():
        emb = pipe.image_encoder(pixel_values=(image - OPENAI_MEAN) / OPENAI_STD).image_embeds
        pose = torch.tensor([[math.radians(-20.0), math.sin(math.radians(-60.0)), math.cos(math.radians(-60.0)), 0.0]])
        ctx = pipe.cc_projection.proj(torch.cat([emb, pose], -1))[:, None]
        ref = torch.nn.functional.interpolate(image, size=(8, 8), mode="bilinear", antialias=True) * 2 - 1
        acp = pipe.scheduler.alphas_cumprod
        n = pipe.scheduler.config.num_train_timesteps
        ts = [i * (n // steps) for i in range(steps)][::-1]  # DDIM 'leading' spacing
        x = start.clone()
        for i, t in enumerate(ts):
            tt = torch.tensor([t])
            c = pipe.unet(torch.cat([x, ref], 1), tt, encoder_hidden_states=ctx).sample
            u = pipe.unet(
                torch.cat([x, torch.zeros_like(ref)], 1), tt, encoder_hidden_states=torch.zeros_like(ctx)
            ).sample
            eps = u + scale * (c - u)
            a_t = acp[t]
            a_prev = acp[ts[i + 1]] if i + 1 < len(ts) else pipe.scheduler.final_alpha_cumprod
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        expected = (x * 0.5 + 0.5).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-5)


# ---- guidance ------------------------------------------------------------------------------


def _cameras(elev, azim, dist, size=8):
    t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return make_cameras(t(elev), t(azim), t(dist), torch.full((len(elev),), 40.0), size, size)


def test_guidance_gradient_matches_formula(pixel_dir):
    pytest.importorskip("threestudio_like.guidance.diffusion", reason="guidance/diffusion.py not written yet")
    from threestudio_like.guidance.zero123 import Zero123Guidance

    guidance = Zero123Guidance(
        {
            "pretrained_model_name_or_path": pixel_dir,
            "guidance_scale": 3.0,
            "weighting": "sds",
            "pose_embedding": "auto",
        }
    )
    assert guidance.pose_kind == "zero123"
    assert list(guidance.state_dict()) == [] and list(guidance.parameters()) == []
    g = torch.Generator().manual_seed(5)
    ref_rgb = torch.rand(1, 16, 16, 3, generator=g)
    guidance.set_reference(ref_rgb, elevation_deg=10.0, azimuth_deg=20.0, distance=2.0)
    cams = _cameras([25.0, -5.0], [80.0, 200.0], [2.0, 2.5])
    rgb = torch.rand(2, 8, 8, 3, generator=g, requires_grad=True)
    noise = torch.randn(2, 3, 8, 8, generator=g)
    t = torch.tensor([300, 720])
    out = guidance(rgb, cams, noise=noise, timesteps=t)
    out.loss.backward()
    assert torch.equal(out.timesteps, t)

    pipe = guidance.pipe
    with torch.no_grad():
        z = rgb.detach().permute(0, 3, 1, 2) * 2 - 1  # pixel space, already 8×8
        acp = pipe.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        zt = acp.sqrt() * z + (1 - acp).sqrt() * noise
        emb = pipe.image_encoder(pixel_values=(ref_rgb.permute(0, 3, 1, 2) - OPENAI_MEAN) / OPENAI_STD).image_embeds
        poses = torch.tensor(
            [
                [math.radians(10 - 25), math.sin(math.radians(60)), math.cos(math.radians(60)), 0.0],
                [math.radians(10 + 5), math.sin(math.radians(180)), math.cos(math.radians(180)), 0.5],
            ]
        )
        ctx = pipe.cc_projection.proj(torch.cat([emb.expand(2, -1), poses], -1))[:, None]
        ref = (
            torch.nn.functional.interpolate(ref_rgb.permute(0, 3, 1, 2), size=(8, 8), mode="bilinear", antialias=True)
            * 2
            - 1
        )
        ref = ref.expand(2, -1, -1, -1)
        c = pipe.unet(torch.cat([zt, ref], 1), t, encoder_hidden_states=ctx).sample
        u = pipe.unet(torch.cat([zt, torch.zeros_like(ref)], 1), t, encoder_hidden_states=torch.zeros_like(ctx)).sample
        grad_z = (1 - acp) * (u + 3.0 * (c - u) - noise)
    # loss = ½‖z − (z − grad).detach()‖² / B → ∂/∂z = grad / B, and z = 2·rgb − 1
    expected = (2.0 * grad_z / 2).permute(0, 2, 3, 1)
    assert torch.allclose(rgb.grad, expected, atol=1e-5, rtol=1e-4)
    assert out.grad_norm.item() == pytest.approx(grad_z.norm().item(), rel=1e-5)


def test_guidance_latent_space_and_schedules(latent_dir):
    pytest.importorskip("threestudio_like.guidance.diffusion", reason="guidance/diffusion.py not written yet")
    from threestudio_like.guidance.zero123 import Zero123Guidance

    guidance = Zero123Guidance(
        {
            "pretrained_model_name_or_path": latent_dir,
            "min_step_percent": 0.02,
            "max_step_percent": [0, 0.98, 0.5, 100],
            "grad_clip": 0.01,
        }
    )
    with pytest.raises(UserError, match="reference"):
        guidance(torch.rand(1, 8, 8, 3), _cameras([0.0], [0.0], [2.0]))
    ref = torch.rand(1, 16, 16, 3)
    guidance.set_reference(ref, 0.0, 0.0, 2.0)
    pipe = guidance.pipe
    with torch.no_grad():
        expected = pipe.vae.encode(ref.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mode()  # unscaled
    assert torch.allclose(guidance._reference["latent"], expected, atol=1e-6)
    assert guidance.step_range() == (20, 980)
    guidance.update_step(0, 50)
    assert guidance.step_range() == (20, 740)
    rgb = torch.rand(2, 12, 12, 3, requires_grad=True)
    out = guidance(rgb, _cameras([10.0, 20.0], [30.0, 90.0], [2.0, 2.0]))
    out.loss.backward()
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert ((out.timesteps >= 20) & (out.timesteps <= 740)).all()
    # clipped gradient: |grad| ≤ 0.01 element-wise → ‖grad‖ ≤ 0.01·√numel
    assert out.grad_norm.item() <= 0.01 * math.sqrt(2 * 4 * 8 * 8) + 1e-6


def test_guidance_config_errors(pixel_dir):
    pytest.importorskip("threestudio_like.guidance.diffusion", reason="guidance/diffusion.py not written yet")
    from threestudio_like.guidance.zero123 import Zero123Guidance

    with pytest.raises(UserError):
        Zero123Guidance({"pretrained_model_name_or_path": pixel_dir, "pose_embedding": "zero1234"})
    with pytest.raises(UserError):
        Zero123Guidance({"pretrained_model_name_or_path": pixel_dir, "guidance_scal": 3})
    g = Zero123Guidance({"pretrained_model_name_or_path": pixel_dir, "pose_embedding": "stable_zero123"})
    with pytest.raises(UserError, match=r"\(1,H,W,3\)"):
        g.set_reference(torch.rand(2, 8, 8, 3), 0.0, 0.0, 1.0)
