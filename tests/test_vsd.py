"""VSD: gradient vs an independently built LoRA UNet, LoRA training, checkpoint round trip."""

from __future__ import annotations

import io
import os

import pytest
import torch
from tiny_models import make_tiny_sd

from threestudio_like.data.cameras import make_cameras
from threestudio_like.guidance.vsd import VariationalScoreDistillation
from threestudio_like.prompt.processor import PromptProcessor

PROMPT = "a red cube"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    return {
        "pixel": make_tiny_sd(str(root / "pixel"), pixel_space=True),
        "pixel_camera": make_tiny_sd(str(root / "pixel_camera"), pixel_space=True, camera_conditioned=True),
    }


@pytest.fixture(scope="module")
def prompt(models, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return PromptProcessor(dict(pretrained_model_name_or_path=models["pixel"], prompt=PROMPT, cache_dir=str(cache)))()


def cameras(elev=(10.0, 20.0), azim=(0.0, 150.0)):
    n = len(elev)
    return make_cameras(torch.tensor(elev), torch.tensor(azim), torch.full((n,), 2.0), torch.full((n,), 40.0), 16, 16)


def make(model_dir, **kw):
    return VariationalScoreDistillation(dict(pretrained_model_name_or_path=model_dir, **kw)).place("cpu")


def train(g, prompt, cams, steps, seed=0):
    torch.manual_seed(seed)
    z = torch.rand(cams.batch_size, 3, 16, 16) * 2 - 1
    for _ in range(steps):
        g.train_lora(z, prompt, cams)
    return z


def independent_lora_unet(model_dir, g):
    """A fresh UNet from disk with peft LoRA and a camera class embedding, weights copied by
    name from the guidance's state_dict (nothing of the guidance's forward logic reused)."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.embeddings import TimestepEmbedding
    from peft import LoraConfig

    unet = UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet")).eval()
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    sd = g.state_dict()
    own = dict(unet.named_parameters())
    n_copied = 0
    for key, value in sd.items():
        if key.startswith("lora_layers."):
            name, ab, rest = key[len("lora_layers.") :].split(".", 2)
            own[f"{name.replace('__', '.')}.lora_{ab}.{rest}"].data.copy_(value)
            n_copied += 1
    assert n_copied == sum(1 for k in own if ".lora_" in k)
    cam = TimestepEmbedding(16, unet.time_embedding.linear_1.out_features)
    cam.load_state_dict({k[len("camera_embedding.") :]: v for k, v in sd.items() if k.startswith("camera_embedding.")})
    return unet, cam


def test_state_dict_holds_only_trainable_weights(models):
    g = make(models["pixel"])
    keys = list(g.state_dict())
    assert keys and all(k.startswith(("lora_layers.", "camera_embedding.")) for k in keys)
    n_lora_in_unet = sum(p.numel() for n, p in g.prior.unet.named_parameters() if ".lora_" in n)
    n_camera = sum(p.numel() for p in g.camera_embedding.parameters())
    assert sum(p.numel() for p in g.parameters()) == n_lora_in_unet + n_camera > n_camera
    assert {id(p) for p in g.lora_optimizer.param_groups[0]["params"]} == {id(p) for p in g.parameters()}


def test_lora_branch_starts_equal_to_prior(models, prompt):
    for kind in ("pixel", "pixel_camera"):
        g = make(models[kind])
        cams = cameras()
        noisy, t = torch.randn(2, 3, 16, 16), torch.tensor([100, 700])
        cond, _ = prompt.get_text_embeddings(cams.elevation, cams.azimuth, view_dependent=False)
        with torch.no_grad():
            lora = g.lora_noise(noisy, t, prompt, cams)
            prior = g.prior.predict_epsilon(noisy, t, cond, g.prior.class_labels(cams.c2w))
        torch.testing.assert_close(lora, prior)


def test_lora_loss_decreases_on_a_fixed_batch(models, prompt):
    g = make(models["pixel"], lora_lr=1e-2)
    cams = cameras()
    torch.manual_seed(1)
    z = torch.rand(2, 3, 16, 16) * 2 - 1
    cond, _ = prompt.get_text_embeddings(cams.elevation, cams.azimuth, view_dependent=False)
    labels = g.camera_labels(cams.c2w)
    t_eval = torch.tensor([100, 300, 500, 700, 900, 200, 400, 600])
    z_eval, cond_eval, labels_eval = z.repeat(4, 1, 1, 1), cond.repeat(4, 1, 1), labels.repeat(4, 1)
    noise_eval = torch.randn_like(z_eval)

    def eval_loss():
        with torch.no_grad():
            return g.lora_loss(z_eval, cond_eval, labels_eval, t_eval, noise_eval).item()

    before = eval_loss()
    losses = [g.train_lora(z, prompt, cams).item() for _ in range(60)]
    after = eval_loss()
    assert after < 0.95 * before, (before, after)  # random-weight prior, rank-4 LoRA: ~7% in 60 steps
    assert sum(losses[-10:]) < sum(losses[:10])


@pytest.mark.parametrize("kind", ["pixel", "pixel_camera"])
def test_vsd_gradient_matches_independent(models, prompt, kind):
    model_dir = models[kind]
    g = make(model_dir, lora_lr=1e-2, guidance_scale=7.5)
    cams = cameras()
    train(g, prompt, cams, steps=5)
    g.eval()  # no LoRA step inside the call: the LoRA used equals the one copied below
    torch.manual_seed(2)
    rgb = torch.rand(2, 16, 16, 3, requires_grad=True)
    noise, t = torch.randn(2, 3, 16, 16), torch.tensor([200, 800])
    out = g(rgb=rgb, prompt=prompt, cameras=cams, noise=noise, timesteps=t)
    out.loss.backward()
    assert "loss_lora" not in out.extras

    from diffusers import UNet2DConditionModel

    z = (2 * rgb.detach() - 1).permute(0, 3, 1, 2)
    a = g.prior.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    zt = a.sqrt() * z + (1 - a).sqrt() * noise
    c2w = cams.c2w.reshape(2, 16)
    base = UNet2DConditionModel.from_pretrained(os.path.join(model_dir, "unet")).eval()
    lora_unet, cam = independent_lora_unet(model_dir, g)
    prior_labels = c2w if kind == "pixel_camera" else None
    cond_vd = torch.cat([prompt.views["front"], prompt.views["back"]])
    unc = prompt.uncond.expand(2, -1, -1)
    plain = prompt.cond.expand(2, -1, -1)
    with torch.no_grad():
        e_c = base(zt, t, encoder_hidden_states=cond_vd, class_labels=prior_labels).sample
        e_u = base(zt, t, encoder_hidden_states=unc, class_labels=prior_labels).sample
        eps_pre = e_u + 7.5 * (e_c - e_u)
        # LoRA branch: time embedding + camera MLP (+ the prior's own camera embedding)
        if kind == "pixel_camera":
            own = lora_unet.class_embedding
            lora_unet.class_embedding = None
            lora_unet.register_module("class_embedding", _Sum(own, cam))
        else:
            lora_unet.class_embedding = cam
        eps_lora = lora_unet(zt, t, encoder_hidden_states=plain, class_labels=c2w).sample
    assert (eps_lora - base(zt, t, encoder_hidden_states=plain, class_labels=prior_labels).sample).abs().max() > 1e-4
    grad = (1 - a) * (eps_pre - eps_lora)
    torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), 2 * grad / 2, rtol=1e-4, atol=1e-5)


class _Sum(torch.nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_checkpoint_round_trip_restores_outputs_and_optimizer(models, prompt):
    model_dir = models["pixel_camera"]
    cams = cameras()
    g1 = make(model_dir, lora_lr=1e-2)
    train(g1, prompt, cams, steps=3)
    buffer = io.BytesIO()  # through bytes, as a checkpoint file: nothing shared with g1
    torch.save({"guidance": g1.state_dict(), "optimizer": g1.optimizer_state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    state, opt_state = ckpt["guidance"], ckpt["optimizer"]
    g2 = make(model_dir, lora_lr=1e-2)
    noisy, t = torch.randn(2, 3, 16, 16), torch.tensor([100, 600])
    with torch.no_grad():
        assert not torch.allclose(g1.lora_noise(noisy, t, prompt, cams), g2.lora_noise(noisy, t, prompt, cams))
    g2.load_state_dict(state)
    g2.load_optimizer_state_dict(opt_state)
    with torch.no_grad():
        torch.testing.assert_close(
            g2.lora_noise(noisy, t, prompt, cams), g1.lora_noise(noisy, t, prompt, cams), rtol=0, atol=0
        )
    # the next optimizer step is identical too (AdamW moments restored)
    train(g1, prompt, cams, steps=1, seed=5)
    train(g2, prompt, cams, steps=1, seed=5)
    for (k, p1), p2 in zip(g1.state_dict().items(), g2.state_dict().values()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=0, msg=k)


def test_training_calls_update_every_trainable_weight(models, prompt):
    g = make(models["pixel"])
    before = {k: v.clone() for k, v in g.state_dict().items()}
    out = g(rgb=torch.rand(2, 16, 16, 3), prompt=prompt, cameras=cameras())
    assert out.extras["loss_lora"].ndim == 0 and not out.extras["loss_lora"].requires_grad
    # zero-initialised LoRA B and camera output layer: only they move on the first step
    changed = {k for k, v in g.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {k for k in before if ".B." in k or k.startswith("camera_embedding.linear_2")}
    g(rgb=torch.rand(2, 16, 16, 3), prompt=prompt, cameras=cameras())
    assert all(not torch.equal(before[k], v) for k, v in g.state_dict().items())
    assert g.prior.unet.class_embedding is None  # the LoRA branch left the prior as it was


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (fp16 prior with fp32 LoRA weights)")
def test_cuda_half_precision_keeps_trainable_weights_fp32(models, prompt):
    g = make(models["pixel_camera"], half_precision=True).place("cuda")
    assert g.prior.unet.conv_in.weight.dtype == torch.float16
    assert all(p.dtype == torch.float32 and p.is_cuda for p in g.parameters())
    out = g(rgb=torch.rand(2, 16, 16, 3, device="cuda"), prompt=prompt.to("cuda"), cameras=cameras().to("cuda"))
    assert torch.isfinite(out.loss) and torch.isfinite(out.extras["loss_lora"])
    assert all(p.dtype == torch.float32 for p in g.parameters())
