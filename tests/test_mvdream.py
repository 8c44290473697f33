"""MVDream's multi-view prior (``guidance=mvdream``): the cross-view self-attention against plain
softmax attention over the joined views, the camera input against MVDream's ``camera_utils``
formulas, the LDM checkpoint conversion against a key mapping written here, the SDS step over
groups of 4 views (one t per group, CFG, the x̂₀ std rescale, the x₀-reconstruction gradient)
against threestudio-mvdream's formulas with a fake UNet, and the camera sampler's view groups."""

from __future__ import annotations

import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from test_experiments import run_cli
from tiny_models import make_tiny_sd
from tiny_mvdream import (
    SAMPLE_SIZE,
    diffusers_to_ldm_prefixes,
    ldm_key,
    ldm_state_dict,
    make_tiny_multiview_unet,
    make_tiny_mvdream,
    tiny_multiview_config,
)

from threestudio_like.core.errors import UserError, exit_status
from threestudio_like.data.cameras import RandomCameraSampler, make_cameras, spherical_to_position
from threestudio_like.guidance import mvdream_unet
from threestudio_like.guidance.mvdream import MultiViewDiffusionGuidance
from threestudio_like.guidance.mvdream_unet import (
    CHECKPOINT_NAME,
    MVDREAM_UNET_CONFIG,
    CrossViewAttnProcessor,
    camera_condition,
    convert_ldm_checkpoint,
    load_ldm_checkpoint,
    load_multiview_unet,
    make_multiview,
)
from threestudio_like.prompt.processor import PromptEmbeddings, PromptProcessor

PROMPT = "a red cube"
V = 4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvdream")
    return SimpleNamespace(
        sd=make_tiny_sd(str(root / "sd"), pixel_space=True), unet=make_tiny_mvdream(str(root / "mvdream"))
    )


def group_cameras(elevations, distance=2.0, size=16, azimuth0=10.0):
    """4 views 90° apart per elevation (one group each), fovy 40°."""
    g = len(elevations)
    elev = torch.tensor(elevations, dtype=torch.float32).repeat_interleave(V)
    azim = azimuth0 + torch.arange(V, dtype=torch.float32).repeat(g) * 90.0
    n = g * V
    return make_cameras(elev, azim, torch.full((n,), distance), torch.full((n,), 40.0), size, size)


def unet_eps(unet, x, t, text, cameras):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=text, class_labels=cameras).sample


# ---- the multi-view UNet ---------------------------------------------------------------------
def joint_attention(attn, x, views):
    """Softmax attention written out: the tokens of each group of ``views`` rows joined, q/k/v by
    the module's weights, heads split, softmax(q kᵀ/√d) v, heads merged, output projection."""
    rows, n, c = x.shape
    heads = attn.heads
    out = []
    for g in range(rows // views):
        tokens = x[g * views : (g + 1) * views].reshape(views * n, c)
        q, k, v = (tokens @ w.weight.T for w in (attn.to_q, attn.to_k, attn.to_v))
        d = q.shape[-1] // heads
        q, k, v = (m.reshape(views * n, heads, d).transpose(0, 1) for m in (q, k, v))
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1)
        merged = (weights @ v).transpose(0, 1).reshape(views * n, heads * d)
        out.append((merged @ attn.to_out[0].weight.T + attn.to_out[0].bias).reshape(views, n, -1))
    return torch.cat(out)


def test_cross_view_attention_is_attention_over_the_joined_views():
    from diffusers.models.attention_processor import Attention, AttnProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=12, heads=3, dim_head=4, out_bias=True).eval()
    x = torch.randn(2 * V, 5, 12)
    with torch.no_grad():
        joint = CrossViewAttnProcessor(V)(attn, x)
        single = CrossViewAttnProcessor(1)(attn, x)
        plain = AttnProcessor()(attn, x)
        torch.testing.assert_close(joint, joint_attention(attn, x, V), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(single, joint_attention(attn, x, 1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(single, plain, rtol=1e-5, atol=1e-6)  # V = 1: ordinary self-attention
    assert (joint - single).abs().max() > 1e-3  # the views do see each other
    with pytest.raises(UserError, match="groups of 4 views"):
        CrossViewAttnProcessor(V)(attn, x[:6])


def test_views_interact_through_self_attention_and_the_camera_enters():
    unet = make_multiview(make_tiny_multiview_unet(), V)
    single = make_multiview(make_tiny_multiview_unet(), 1)  # the same weights (same seed), views apart
    torch.manual_seed(1)
    x, text = torch.randn(V, 3, SAMPLE_SIZE, SAMPLE_SIZE), torch.randn(V, 7, 32)
    t, cams = torch.full((V,), 500), camera_condition(group_cameras([20.0]).c2w)
    base = unet_eps(unet, x, t, text, cams)
    torch.testing.assert_close(
        unet_eps(single, x, t, text, cams)[:1], unet_eps(single, x[:1], t[:1], text[:1], cams[:1])
    )

    x2 = x.clone()
    x2[0] += 0.5  # one view's input: every view's output moves (joint self-attention)...
    moved = (unet_eps(unet, x2, t, text, cams) - base).abs().flatten(1).amax(1)
    assert (moved[1:] > 1e-4).all()
    apart = (unet_eps(single, x2, t, text, cams) - unet_eps(single, x, t, text, cams)).abs().flatten(1).amax(1)
    assert (apart[1:] < 1e-6).all() and apart[0] > 1e-4  # ...and none without it

    cams2 = cams.clone()
    cams2[2] = camera_condition(group_cameras([60.0]).c2w)[2]  # one view's camera
    assert (unet_eps(unet, x, t, text, cams2) - base).abs().amax() > 1e-4
    with torch.no_grad():  # through the camera MLP only: zero its output layer and cameras change nothing
        unet.class_embedding.linear_2.weight.zero_()
        unet.class_embedding.linear_2.bias.zero_()
    torch.testing.assert_close(unet_eps(unet, x, t, text, cams2), unet_eps(unet, x, t, text, cams))


# ---- the checkpoint --------------------------------------------------------------------------
def test_ldm_checkpoint_converts_to_the_same_unet(tmp_path, monkeypatch):
    unet = make_multiview(make_tiny_multiview_unet(seed=3), V)
    path = tmp_path / CHECKPOINT_NAME
    torch.save(ldm_state_dict(unet), path)
    loaded = load_ldm_checkpoint(str(path), tiny_multiview_config())
    make_multiview(loaded, V)
    torch.manual_seed(2)
    x, text = torch.randn(2 * V, 3, SAMPLE_SIZE, SAMPLE_SIZE), torch.randn(2 * V, 7, 32)
    t = torch.tensor([100] * V + [700] * V)
    cams = camera_condition(group_cameras([10.0, 40.0]).c2w)
    want = unet_eps(unet, x, t, text, cams)
    assert torch.equal(unet_eps(loaded, x, t, text, cams), want)

    # as the released one is read: a directory holding the file, and its conversion saved once
    monkeypatch.setattr(mvdream_unet, "MVDREAM_UNET_CONFIG", tiny_multiview_config())
    torch.testing.assert_close(unet_eps(load_multiview_unet(str(tmp_path), V), x, t, text, cams), want)
    out = tmp_path / "converted"
    assert exit_status(mvdream_unet.convert, [str(path), str(out)]) == 0
    converted = load_multiview_unet(str(out), V)
    assert isinstance(
        converted.attn_processors["mid_block.attentions.0.transformer_blocks.0.attn1.processor"], CrossViewAttnProcessor
    )
    torch.testing.assert_close(unet_eps(converted, x, t, text, cams), want, rtol=0, atol=5e-3)  # fp16 weights


def test_released_architecture_keys_convert_one_to_one():
    """MVDream's sd-v2-base.yaml UNet (0.87 B parameters, on the meta device): every key of its
    checkpoint layout lands on a parameter of ours with the same shape."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(MVDREAM_UNET_CONFIG)
    ours = unet.state_dict()
    prefixes = diffusers_to_ldm_prefixes(dict(unet.config))
    theirs = {ldm_key(k, prefixes): v for k, v in ours.items()}
    assert "model.diffusion_model.camera_embed.0.weight" in theirs
    assert theirs["model.diffusion_model.camera_embed.0.weight"].shape == (1280, 16)
    assert "model.diffusion_model.input_blocks.11.0.in_layers.0.weight" in theirs  # 4 levels × 2 resnets
    converted = convert_ldm_checkpoint(theirs, unet.config)
    assert converted.keys() == ours.keys()
    assert all(converted[k].shape == v.shape for k, v in ours.items())
    assert 0.86e9 < sum(v.numel() for v in ours.values()) < 0.87e9


class NotATensor:
    pass


def test_unreadable_or_foreign_checkpoints_are_user_errors(tmp_path, models):
    with pytest.raises(UserError, match="huggingface-cli download MVDream/MVDream sd-v2.1-base-4view.pt"):
        load_multiview_unet(str(tmp_path / "nowhere"), V)
    with pytest.raises(UserError, match="holds neither"):
        load_multiview_unet(str(tmp_path), V)
    torch.save({"model.diffusion_model.x": NotATensor()}, tmp_path / "pickled.pt")
    with pytest.raises(UserError, match="cannot read the MVDream checkpoint"):
        load_multiview_unet(str(tmp_path / "pickled.pt"), V)
    sd = ldm_state_dict(make_tiny_multiview_unet())
    del sd["model.diffusion_model.camera_embed.2.bias"]
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(UserError, match="no camera embedding"):
        load_ldm_checkpoint(str(tmp_path / "partial.pt"), tiny_multiview_config())
    torch.save(ldm_state_dict(make_tiny_multiview_unet(in_channels=4)), tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not fit MVDream's UNet"):
        load_ldm_checkpoint(str(tmp_path / "other.pt"), tiny_multiview_config())
    with pytest.raises(UserError, match="takes no camera"):
        load_multiview_unet(os.path.join(models.sd, "unet"), V)
    latent_sd = make_tiny_sd(str(tmp_path / "latent-sd"))  # a VAE: 4-channel latents for a 3-channel UNet
    with pytest.raises(UserError, match="takes 3-channel inputs"):
        MultiViewDiffusionGuidance(dict(pretrained_model_name_or_path=latent_sd, multiview_unet=models.unet))


# ---- cameras ---------------------------------------------------------------------------------
def mvdream_get_camera(elevation, azimuth):
    """MVDream's camera_utils, re-written: create_camera_to_world_matrix (unit distance, +Y-up
    world, OpenGL camera) then convert_opengl_to_blender (flip_yz on the left)."""
    e, a = np.radians(elevation), np.radians(azimuth)
    pos = np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])
    forward = -pos / np.linalg.norm(pos)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    m = np.eye(4)
    m[:3, :3] = np.stack([right, up, -forward], axis=1)
    m[:3, 3] = pos
    flip_yz = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    return (flip_yz @ m).reshape(16)


def test_camera_condition_is_mvdreams_camera():
    elevations = [0.0, 15.0, 30.0, -10.0, 60.0]
    azimuths = [0.0, 90.0, 135.0, 200.0, 315.0]
    want = torch.tensor(np.stack([mvdream_get_camera(e, a) for e, a in zip(elevations, azimuths)]), dtype=torch.float32)
    n = len(elevations)
    ours = make_cameras(  # MVDream's azimuth a is ours a − 90°; any distance is normalised away
        torch.tensor(elevations),
        torch.tensor(azimuths) - 90.0,
        torch.linspace(0.5, 4.0, n),
        torch.full((n,), 40.0),
        4,
        4,
    )
    torch.testing.assert_close(camera_condition(ours.c2w), want, rtol=0, atol=1e-5)


def test_sampler_groups_views_90_degrees_apart():
    sampler = RandomCameraSampler(
        dict(batch_size=12, n_views=V, camera_perturb=0.1, center_perturb=0.0, up_perturb=0.0, fovy_range=[20, 60])
    )
    cams = sampler.sample(torch.Generator().manual_seed(0))
    groups = lambda x: x.reshape(3, V, *x.shape[1:])  # noqa: E731
    steps = (groups(cams.azimuth).diff(dim=1) % 360.0).flatten()
    torch.testing.assert_close(steps, torch.full_like(steps, 90.0), rtol=0, atol=1e-4)
    for field in (cams.elevation, cams.distance, cams.fovy):
        g = groups(field)
        assert torch.equal(g, g[:, :1].expand_as(g)) and g[:, 0].unique().numel() == 3
    jitter = groups(cams.position - spherical_to_position(cams.elevation, cams.azimuth, cams.distance))
    torch.testing.assert_close(jitter, jitter[:, :1].expand_as(jitter))  # one camera jitter per group
    light = groups(cams.light_position.norm(dim=-1))
    torch.testing.assert_close(light, light[:, :1].expand_as(light))

    relative = RandomCameraSampler(dict(batch_size=8, n_views=V, relative_distance=True, distance_range=[0.8, 1.0]))
    cams = relative.sample(torch.Generator().manual_seed(1))
    half_height = cams.distance * torch.tan(cams.fovy / 2)  # the view's half-height at the origin
    assert ((half_height >= 0.8 - 1e-6) & (half_height <= 1.0 + 1e-6)).all()

    with pytest.raises(UserError, match="batch_size 6 is not a multiple of n_views 4"):
        RandomCameraSampler(dict(batch_size=6, n_views=V))
    with pytest.raises(UserError, match="not a multiple of n_views"):
        RandomCameraSampler(dict(n_views=V, resolution_schedule=[[0, 64, 64, 8], [10, 128, 128, 2]]))


# ---- score distillation over groups of views --------------------------------------------------
class FakeMultiViewUNet(torch.nn.Module):
    """ε = 0.3 x_t + (mean of the group's x_t) + mean(text) + camera·W + 10⁻³ t: uses every input
    the real one does, and crosses views, with a formula the test can evaluate."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.weight = torch.nn.Parameter(torch.randn(16, 3, generator=torch.Generator().manual_seed(5)))
        self.calls = []

    @property
    def dtype(self):
        return self.weight.dtype

    def forward(self, sample, timestep, encoder_hidden_states, class_labels):
        self.calls.append((sample, timestep, encoder_hidden_states, class_labels))
        return SimpleNamespace(sample=fake_eps(sample, timestep, encoder_hidden_states, class_labels, self.weight))


def fake_eps(x, t, text, camera, weight):
    group_mean = x.reshape(-1, V, *x.shape[1:]).mean(1, keepdim=True).expand(-1, V, *x.shape[1:]).reshape(x.shape)
    return (
        0.3 * x
        + group_mean
        + text.mean((1, 2)).view(-1, 1, 1, 1)
        + (camera @ weight).view(-1, 3, 1, 1)
        + 1e-3 * t.view(-1, 1, 1, 1)
    )


def sd_alphas(t):
    """ᾱ_t of SD's scaled-linear betas (LDM's "linear": √β linear from √0.00085 to √0.012)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)[t].float()


@pytest.mark.parametrize("weighting,rescale", [("sigma", 0.5), ("sds", 0.0), ("sds", 0.7)])
def test_sds_over_four_views_matches_threestudio_mvdream(models, weighting, rescale):
    scale, size = 50.0, 24
    guidance = MultiViewDiffusionGuidance(
        dict(
            pretrained_model_name_or_path=models.sd,
            multiview_unet=models.unet,
            guidance_scale=scale,
            guidance_rescale=rescale,
            weighting=weighting,
        )
    ).place("cpu")
    fake = FakeMultiViewUNet(guidance.prior.unet.config)
    guidance.prior.unet = fake
    prompt = PromptProcessor(
        dict(pretrained_model_name_or_path=models.sd, prompt=PROMPT, negative_prompt="blurry", cache_dir="")
    )()
    cameras = group_cameras([5.0, 25.0], distance=1.7, size=size)
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2 * V, size, size, 3, generator=g).requires_grad_(True)
    noise = torch.randn(2 * V, 3, SAMPLE_SIZE, SAMPLE_SIZE, generator=g)
    t = torch.tensor([150] * V + [800] * V)
    out = guidance(rgb, cameras, prompt, noise=noise, timesteps=t)
    out.loss.backward()

    # threestudio-mvdream's step, written out: renders → [-1, 1] at the UNet's size, z_t
    x = rgb.detach().clone().requires_grad_(True)
    z = F.interpolate(x.permute(0, 3, 1, 2), (SAMPLE_SIZE, SAMPLE_SIZE), mode="bilinear", align_corners=False) * 2 - 1
    a = sd_alphas(t).view(-1, 1, 1, 1)
    z_t = a.sqrt() * z.detach() + (1 - a).sqrt() * noise
    # [cond; uncond] rows, the prompt's embedding for every view, cameras with unit-length positions
    c2w = cameras.c2w.clone()
    c2w[:, :3, 3] /= c2w[:, :3, 3].norm(dim=-1, keepdim=True) + 1e-8
    camera = c2w.reshape(-1, 16)
    text = torch.cat([prompt.cond.expand(2 * V, -1, -1), prompt.uncond.expand(2 * V, -1, -1)])
    raw = fake_eps(torch.cat([z_t, z_t]), torch.cat([t, t]), text, torch.cat([camera, camera]), fake.weight.detach())
    eps_c, eps_u = raw[: 2 * V], raw[2 * V :]
    eps = eps_u + scale * (eps_c - eps_u)
    x0 = (z_t - (1 - a).sqrt() * eps) / a.sqrt()  # predict_start_from_noise
    x0_c = (z_t - (1 - a).sqrt() * eps_c) / a.sqrt()
    factor = (x0_c.reshape(2, V, -1).std(dim=(1, 2)) + 1e-8) / (x0.reshape(2, V, -1).std(dim=(1, 2)) + 1e-8)
    x0 = rescale * x0 * factor.repeat_interleave(V).view(-1, 1, 1, 1) + (1 - rescale) * x0
    if weighting == "sigma":  # recon_loss: ½‖z − x̂₀‖² / B
        grad_z = z.detach() - x0
    else:  # SDS: w(t)(ε̂ − ε), ε̂ the noise of the rescaled x̂₀
        grad_z = (1 - a) * ((z_t - a.sqrt() * x0) / (1 - a).sqrt() - noise)
    (z * grad_z).sum().div(2 * V).backward()

    torch.testing.assert_close(out.grad_norm, grad_z.norm(), rtol=1e-4, atol=0)
    torch.testing.assert_close(out.loss, 0.5 * grad_z.pow(2).sum() / (2 * V), rtol=1e-4, atol=0)
    # float32 rounding at the gradient's scale: guidance 50 sums terms up to ~50× the result
    torch.testing.assert_close(rgb.grad, x.grad, rtol=1e-4, atol=1e-6 * float(x.grad.abs().max()))
    assert torch.equal(out.timesteps, t)
    (sample, timestep, hidden, labels) = fake.calls[-1]
    assert torch.equal(timestep, torch.cat([t, t])) and torch.allclose(labels, torch.cat([camera, camera]))


def test_one_timestep_per_group_and_checked_batches(models):
    guidance = MultiViewDiffusionGuidance(dict(pretrained_model_name_or_path=models.sd, multiview_unet=models.unet))
    torch.manual_seed(0)
    ts = torch.stack(
        [guidance.noisy_point(torch.zeros(3 * V, 3, 4, 4), None, None, None, None).timesteps for _ in range(20)]
    )
    groups = ts.view(20, 3, V)
    assert torch.equal(groups, groups[..., :1].expand_as(groups))  # one t per group of views
    assert (groups[:, :, 0] != groups[:, :1, 0]).any()  # drawn per group

    prompt = PromptProcessor(dict(pretrained_model_name_or_path=models.sd, prompt=PROMPT, cache_dir=""))()
    rgb = torch.rand(2 * V, 16, 16, 3)
    with pytest.raises(UserError, match="groups of 4 views; the batch has 6"):
        guidance(rgb[:6], group_cameras([5.0, 25.0]).index(slice(0, 6)), prompt)
    mixed = make_cameras(torch.arange(8.0), torch.zeros(8), torch.full((8,), 2.0), torch.full((8,), 40.0), 16, 16)
    with pytest.raises(UserError, match="data.n_views=4"):
        guidance(rgb, mixed, prompt)
    narrow = PromptEmbeddings(PROMPT, torch.zeros(1, 5, 16), torch.zeros(1, 5, 16), {})
    with pytest.raises(UserError, match="32-wide text embeddings"):
        guidance(rgb, group_cameras([5.0, 25.0]), narrow)
    with pytest.raises(UserError, match="Perp-Neg"):
        MultiViewDiffusionGuidance(
            dict(pretrained_model_name_or_path=models.sd, multiview_unet=models.unet, use_perp_neg=True)
        )(rgb, group_cameras([5.0, 25.0]), prompt)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["dreamfusion", "magic3d"])
def test_guidance_mvdream_runs_the_text_experiments(experiment, tmp_path):
    """``guidance=mvdream`` in another text experiment, every stage, with the views it needs."""
    p = run_cli(
        f"experiment={experiment}",
        "guidance=mvdream",
        "data.n_views=4",
        "data.batch_size=4",
        f"prompt={PROMPT}",
        "debug=smoke",
        "export.enabled=false",
        "video.enabled=false",
        "output_dir=run",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["guidance"]["_target_"].endswith(".MultiViewDiffusionGuidance")
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert list(dict.fromkeys(r["stage"] for r in records)) == cfg["stages"]
    assert all(r["loss_guidance"] > 0 for r in records)
