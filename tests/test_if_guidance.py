"""DeepFloyd IF guidance (``guidance=if``) and T5 prompts (``prompt_processor=t5``): the SDS
gradient against an independent implementation (pixel space at 64², ε from the first 3 of the
UNet's 6 output channels, IF's cosine ᾱ by formula), the resize of renders to 64², the T5
embeddings and their cache, and the errors for a wrong model or prompt processor."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from tiny_if import MAX_TOKENS, SAMPLE_SIZE, make_tiny_if
from tiny_models import make_tiny_sd

from threestudio_like.core.errors import UserError
from threestudio_like.data.cameras import make_cameras
from threestudio_like.guidance.deepfloyd_if import DeepFloydIFGuidance, weights_variant
from threestudio_like.prompt import t5
from threestudio_like.prompt.processor import PromptProcessor
from threestudio_like.prompt.t5 import T5PromptProcessor

PROMPT = "a red cube"


@pytest.fixture(scope="module")
def tiny_if(tmp_path_factory):
    return make_tiny_if(str(tmp_path_factory.mktemp("if") / "tiny-if"))


def t5_prompt(model_dir, tmp_path, **kw):
    cfg = dict(pretrained_model_name_or_path=model_dir, prompt=PROMPT, cache_dir=str(tmp_path / "cache"), **kw)
    return T5PromptProcessor(cfg)()


def cameras(n, size):
    return make_cameras(
        torch.zeros(n), torch.linspace(0, 90, n), torch.full((n,), 2.0), torch.full((n,), 40.0), size, size
    )


def independent_t5(model_dir, texts):
    """(N,77,D) last hidden states of the pipeline's T5 with the padding masked, loaded directly."""
    from transformers import T5EncoderModel, T5Tokenizer

    tok = T5Tokenizer.from_pretrained(os.path.join(model_dir, "tokenizer"))
    enc = T5EncoderModel.from_pretrained(os.path.join(model_dir, "text_encoder")).eval()
    ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return enc(ids.input_ids, attention_mask=ids.attention_mask).last_hidden_state


def cosine_alphas_cumprod(t):
    """ᾱ_t of IF's ``squaredcos_cap_v2`` schedule (Nichol & Dhariwal 2021), by formula:
    β_i = min(1 − f(i+1)/f(i), 0.999), f(i) = cos²((i/1000 + 0.008)/1.008 · π/2)."""
    f = lambda i: math.cos((i / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(1000)], dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)[t].float()


def test_sds_gradient_matches_an_independent_implementation(tiny_if, tmp_path):
    from diffusers import UNet2DConditionModel

    b, size, scale = 2, 32, 20.0
    guidance = DeepFloydIFGuidance(
        dict(pretrained_model_name_or_path=tiny_if, guidance_scale=scale, weighting="sds")
    ).place("cpu")
    prompt = t5_prompt(tiny_if, tmp_path, view_dependent_prompting=False, negative_prompt="blurry")
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(b, size, size, 3, generator=g).requires_grad_(True)
    noise = torch.randn(b, 3, SAMPLE_SIZE, SAMPLE_SIZE, generator=g)
    t = torch.tensor([150, 800])
    out = guidance(rgb, cameras(b, size), prompt, noise=noise, timesteps=t)
    out.loss.backward()

    # independently: render → [-1, 1] at 64², z_t, UNet on [cond; uncond], ε = first 3 of 6 channels
    x = rgb.detach().clone().requires_grad_(True)
    z = F.interpolate(x.permute(0, 3, 1, 2), (64, 64), mode="bilinear", align_corners=False) * 2 - 1
    a = cosine_alphas_cumprod(t).view(-1, 1, 1, 1)
    z_t = a.sqrt() * z.detach() + (1 - a).sqrt() * noise
    cond, uncond = independent_t5(tiny_if, [PROMPT, "blurry"])
    unet = UNet2DConditionModel.from_pretrained(os.path.join(tiny_if, "unet")).eval()
    text = torch.cat([cond[None]] * b + [uncond[None]] * b)
    with torch.no_grad():
        raw = unet(torch.cat([z_t, z_t]), torch.cat([t, t]), encoder_hidden_states=text).sample
    assert raw.shape[1] == 6
    eps_c, eps_u = raw[:b, :3], raw[b:, :3]
    grad_z = (1 - a) * (eps_u + scale * (eps_c - eps_u) - noise)
    (z * grad_z).sum().div(b).backward()

    assert torch.allclose(out.grad_norm, grad_z.norm(), rtol=1e-4)
    assert torch.allclose(rgb.grad, x.grad, rtol=1e-4, atol=1e-7)
    # the variance half is not ε: taking it instead would change the gradient
    assert (raw[:b, 3:] - eps_c).abs().max() > 1e-3


def test_renders_are_resized_to_64_in_pixel_space(tiny_if):
    guidance = DeepFloydIFGuidance(dict(pretrained_model_name_or_path=tiny_if)).place("cpu")
    assert guidance.prior.sample_size == 64 and guidance.prior.vae is None
    z = guidance.encode(torch.full((2, 24, 24, 3), 0.25))  # any render size → 64², rgb 0.25 → −0.5
    assert z.shape == (2, 3, 64, 64) and torch.allclose(z, torch.full_like(z, -0.5))
    ramp = torch.linspace(0, 1, 128).view(1, 1, 128, 1).expand(1, 128, 128, 3)  # 2:1 bilinear = mean of pairs
    expected = ramp[:, :, 0::2].add(ramp[:, :, 1::2]).div(2)[:, ::2].permute(0, 3, 1, 2) * 2 - 1
    assert torch.allclose(guidance.encode(ramp), expected, atol=1e-6)
    assert torch.allclose(guidance.decode(z), torch.full((2, 64, 64, 3), 0.25))  # (z + 1)/2, the inverse


def test_t5_embeddings_and_their_cache(tiny_if, tmp_path, monkeypatch):
    first = t5_prompt(tiny_if, tmp_path, negative_prompt="blurry")
    want = independent_t5(tiny_if, [PROMPT, "blurry", PROMPT + ", back view"])
    assert first.cond.shape == (1, MAX_TOKENS, 16)
    assert torch.allclose(first.cond[0], want[0], atol=1e-6) and torch.allclose(first.uncond[0], want[1], atol=1e-6)
    assert torch.allclose(first.views["back"][0], want[2], atol=1e-6)
    files = sorted(os.listdir(tmp_path / "cache"))
    assert len(files) == 6  # prompt, negative, 4 views

    def no_encoder(*args, **kwargs):
        raise AssertionError("the T5 encoder was loaded although every embedding is cached")

    monkeypatch.setattr(t5, "load_t5", no_encoder)
    again = t5_prompt(tiny_if, tmp_path, negative_prompt="blurry")
    assert torch.equal(again.cond, first.cond) and torch.equal(again.views["side"], first.views["side"])
    # another padded length is another cache entry (and needs the encoder)
    with pytest.raises(AssertionError, match="T5 encoder was loaded"):
        t5_prompt(tiny_if, tmp_path, negative_prompt="blurry", max_length=40)
    assert sorted(os.listdir(tmp_path / "cache")) == files


def test_wrong_model_or_prompt_processor_is_a_user_error(tiny_if, tmp_path):
    sd = make_tiny_sd(str(tmp_path / "sd"), pixel_space=True)
    with pytest.raises(UserError, match="learned variance"):
        DeepFloydIFGuidance(dict(pretrained_model_name_or_path=sd))
    guidance = DeepFloydIFGuidance(dict(pretrained_model_name_or_path=tiny_if)).place("cpu")
    clip = PromptProcessor(dict(pretrained_model_name_or_path=sd, prompt=PROMPT, cache_dir=""))()
    with pytest.raises(UserError, match="prompt_processor=t5"):
        guidance(torch.rand(1, 16, 16, 3), cameras(1, 16), clip)


def test_weights_variant_is_used_only_where_its_files_exist(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").touch()
    assert weights_variant(str(tmp_path), "unet", "fp16") is None
    (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").touch()
    assert weights_variant(str(tmp_path), "unet", "fp16") == "fp16"
    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "text_encoder" / "model.fp16-00001-of-00002.safetensors").touch()
    assert weights_variant(str(tmp_path), "text_encoder", "fp16") == "fp16"
    assert weights_variant(str(tmp_path), "unet", None) is None
