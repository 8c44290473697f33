"""CLIP guidance and CLIP similarity with a tiny CLIPModel saved to a temp dir."""

import json

import pytest
import torch
import torch.nn.functional as F

from threestudio_like.core.errors import UserError
from threestudio_like.eval.clip_similarity import clip_similarity
from threestudio_like.guidance.base import Guidance
from threestudio_like.guidance.clip import ClipGuidance, load_clip
from threestudio_like.ops.clip_preprocess import ClipImageNormalization, clip_preprocess

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """Tiny CLIPModel (16² images, patch 8), a letter-level CLIPTokenizer and a processor that
    resizes the short side to 20 then centre-crops 16 — saved like a hub checkpoint."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    d = tmp_path_factory.mktemp("tiny_clip")
    letters = [chr(c) for c in range(97, 123)]
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>"] + letters + [x + "</w>" for x in letters])}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=16).save_pretrained(str(d))
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
        projection_dim=8,
    )
    CLIPModel(config).eval().save_pretrained(str(d))
    CLIPImageProcessorPil(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16}).save_pretrained(str(d))
    return str(d)


def _reference_pixels(images_bhwc):
    """Independent preprocessing: short side 20 (bicubic, antialias), centre crop 16, normalize."""
    x = images_bhwc.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    nh, nw = (20, round(w * 20 / h)) if h <= w else (round(h * 20 / w), 20)
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - 16) // 2, (nw - 16) // 2
    return (x[..., top : top + 16, left : left + 16] - MEAN) / STD


def test_preprocess_reads_processor_and_crops(clip_dir):
    _, _, norm = load_clip(clip_dir)
    assert (norm.size, norm.crop) == (20, 16)
    x = torch.rand(2, 24, 30, 3)
    assert torch.allclose(clip_preprocess(x.permute(0, 3, 1, 2), norm), _reference_pixels(x), atol=1e-6)
    assert ClipImageNormalization.from_processor({"size": 224, "do_center_crop": False}, 32).crop == 224


def test_text_guidance_loss_is_one_minus_cosine(clip_dir):
    from transformers import CLIPModel, CLIPTokenizer

    guidance = ClipGuidance({"pretrained_model_name_or_path": clip_dir, "prompt": "a red cube"})
    assert list(guidance.state_dict()) == []
    rgb = torch.rand(3, 24, 24, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = guidance(rgb)
    assert isinstance(guidance, Guidance) and guidance.uses_reference

    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok = CLIPTokenizer.from_pretrained(clip_dir)
    tokens = tok(["a red cube"], padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        ref = model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=_reference_pixels(rgb.detach()),
        )
        cos = (ref.image_embeds @ ref.text_embeds.T)[:, 0]  # both unit-normalized by CLIPModel
    assert out.loss.item() == pytest.approx((1 - cos).mean().item(), abs=1e-5)
    assert out.extras["clip_similarity"].item() == pytest.approx(cos.mean().item(), abs=1e-5)

    out.loss.backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    with torch.no_grad():  # a small step against the gradient lowers the loss
        stepped = guidance((rgb - 0.5 * rgb.grad / rgb.grad.norm()).clamp(0, 1)).loss
    assert stepped.item() < out.loss.item()


def test_image_target_and_similarity(clip_dir, tmp_path):
    import imageio.v3 as iio
    import numpy as np

    ref_img = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "ref.png", ref_img)
    guidance = ClipGuidance({"pretrained_model_name_or_path": clip_dir, "reference_image": str(tmp_path / "ref.png")})
    ref = torch.from_numpy(ref_img.astype(np.float32) / 255)[None]
    # the reference scored against itself: cosine 1, loss 0
    assert guidance(ref).loss.item() == pytest.approx(0.0, abs=1e-5)

    model, tok, norm = load_clip(clip_dir)
    images = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        emb = model(
            input_ids=torch.zeros(1, 2, dtype=torch.long), pixel_values=_reference_pixels(torch.cat([images, ref]))
        )
        expected = emb.image_embeds[:2] @ emb.image_embeds[2]
    sims = clip_similarity(images, ref, model, norm=norm)
    assert torch.allclose(sims, expected, atol=1e-5)
    assert torch.allclose(guidance(images).loss, (1 - expected).mean(), atol=1e-5)
    text_sims = clip_similarity(images, ["a cube", "a ball"], model, tokenizer=tok, norm=norm)
    assert text_sims.shape == (2,) and (text_sims.abs() <= 1 + 1e-6).all()
    with pytest.raises(UserError):
        clip_similarity(images, "a cube", model, norm=norm)  # text needs the tokenizer
    with pytest.raises(UserError):
        clip_similarity(images, torch.rand(3, 16, 16, 3), model, norm=norm)


def test_missing_target_and_bad_image_are_user_errors(clip_dir, tmp_path):
    with pytest.raises(UserError, match="no target"):
        ClipGuidance({"pretrained_model_name_or_path": clip_dir})(torch.rand(1, 16, 16, 3))
    with pytest.raises(UserError, match="reference image"):
        ClipGuidance({"pretrained_model_name_or_path": clip_dir, "reference_image": str(tmp_path / "nope.png")})
