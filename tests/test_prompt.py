"""Prompt processor: view-dependent embeddings, the on-disk cache, Perp-Neg weights, errors."""

from __future__ import annotations

import math
import os

import pytest
import torch
from tiny_models import make_tiny_sd

from threestudio_like.core.errors import UserError
from threestudio_like.prompt import processor as processor_mod
from threestudio_like.prompt.processor import PromptProcessor

PROMPT = "a red cube"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_sd(str(tmp_path_factory.mktemp("sd") / "tiny_sd"), pixel_space=True)


def encode_directly(model_dir: str, text: str) -> torch.Tensor:
    """(1,L,D) the way a Stable Diffusion pipeline encodes a prompt, independent of the processor."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(os.path.join(model_dir, "tokenizer"))
    enc = CLIPTextModel.from_pretrained(os.path.join(model_dir, "text_encoder")).eval()
    ids = tok([text], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        return enc(ids).last_hidden_state


def make(model_dir, cache, **kw):
    return PromptProcessor(dict(pretrained_model_name_or_path=model_dir, prompt=PROMPT, cache_dir=str(cache), **kw))


def test_view_dependent_embeddings_match_direct_encoding(model_dir, tmp_path):
    emb = make(model_dir, tmp_path, negative_prompt="blurry")()
    # elevation, azimuth → expected view (thresholds 45/45/60)
    cams = [
        (0.0, 10.0, "front"),
        (0.0, -44.0, "front"),
        (20.0, 90.0, "side"),
        (0.0, -120.0, "side"),
        (10.0, 170.0, "back"),
        (0.0, -150.0, "back"),
        (75.0, 0.0, "overhead"),
    ]
    elev = torch.tensor([c[0] for c in cams])
    azim = torch.tensor([c[1] for c in cams])
    cond, uncond = emb.get_text_embeddings(elev, azim)
    assert cond.shape == uncond.shape == (len(cams), 32, 32)
    direct = {v: encode_directly(model_dir, f"{PROMPT}, {v} view") for v in ("front", "side", "back", "overhead")}
    for i, (_, _, view) in enumerate(cams):
        torch.testing.assert_close(cond[i : i + 1], direct[view], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(uncond[:1], encode_directly(model_dir, "blurry"), rtol=1e-5, atol=1e-5)
    # the view suffix matters: the views' embeddings differ
    assert (direct["front"] - direct["back"]).abs().max() > 1e-3
    plain, _ = emb.get_text_embeddings(elev, azim, view_dependent=False)
    expected = encode_directly(model_dir, PROMPT).expand(len(cams), -1, -1)
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-5)


def test_view_independent_config(model_dir, tmp_path):
    emb = make(model_dir, tmp_path, view_dependent_prompting=False)()
    cond, _ = emb.get_text_embeddings(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 180.0]))
    torch.testing.assert_close(cond[0], cond[1])
    torch.testing.assert_close(cond[:1], emb.cond)


def test_second_run_does_not_load_the_text_encoder(model_dir, tmp_path, monkeypatch):
    first = make(model_dir, tmp_path)()
    assert len(list(tmp_path.glob("*.safetensors"))) == 6  # prompt, negative, 4 views

    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder was loaded although every embedding is cached")

    monkeypatch.setattr("threestudio_like.guidance.pretrained.load_text_encoder", refuse)
    second = make(model_dir, tmp_path)()
    torch.testing.assert_close(second.cond, first.cond)
    for v in first.views:
        torch.testing.assert_close(second.views[v], first.views[v])
    # a new prompt, or new text-encoder weights (mtime), misses the cache and needs the encoder
    with pytest.raises(AssertionError, match="text encoder was loaded"):
        PromptProcessor(dict(pretrained_model_name_or_path=model_dir, prompt="a blue ball", cache_dir=str(tmp_path)))()
    weights = [f for f in os.listdir(os.path.join(model_dir, "text_encoder")) if f.endswith(".safetensors")][0]
    path = os.path.join(model_dir, "text_encoder", weights)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="text encoder was loaded"):
        make(model_dir, tmp_path)()


def test_cache_key_depends_on_model_and_text():
    a = processor_mod.cache_key("model-a", "a cube")
    assert a == processor_mod.cache_key("model-a", "a cube")
    assert a != processor_mod.cache_key("model-b", "a cube")
    assert a != processor_mod.cache_key("model-a", "a cube ")


def test_perp_neg_embeddings_and_weights(model_dir, tmp_path):
    emb = make(model_dir, tmp_path, use_perp_neg=True)()
    f = lambda p, r: p[0] * math.exp(-p[1] * r) + p[2]  # noqa: E731
    fs, sf, sb, fsb = (4.0, 0.5, -2.426), (4.0, 0.5, -2.426), (1.0, 0.5, -0.606), (1.0, 0.5, 0.967)
    front, side, back, over = (emb.views[v][0] for v in ("front", "side", "back", "overhead"))
    elev = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 80.0])
    azim = torch.tensor([0.0, 45.0, -90.0, 135.0, 180.0, 30.0])
    pos, uncond, neg, w = emb.get_perp_neg_embeddings(elev, azim)
    assert pos.shape == (6, 32, 32) and neg.shape == (6, 2, 32, 32) and w.shape == (6, 2)
    expected_pos = [front, 0.5 * front + 0.5 * side, side, 0.5 * side + 0.5 * back, back, over]
    expected_w = [
        [-f(fs, 1.0), -f(sf, 0.0)],
        [-f(fs, 0.5), -f(sf, 0.5)],
        [-f(sb, 1.0), -f(fsb, 1.0)],  # |az| = 90 falls in the side–back half, r = 1
        [-f(sb, 0.5), -f(fsb, 0.5)],
        [-f(sb, 0.0), -f(fsb, 0.0)],
        [0.0, 0.0],
    ]
    for i in range(6):
        torch.testing.assert_close(pos[i], expected_pos[i])
    torch.testing.assert_close(w, torch.tensor(expected_w))
    torch.testing.assert_close(neg[0], torch.stack([front, side]))
    torch.testing.assert_close(neg[3], torch.stack([side, front]))
    torch.testing.assert_close(neg[5], torch.stack([emb.uncond[0], emb.uncond[0]]))
    # continuity at |az| = 90: the front–side half's limit equals the side–back half's value
    pos_near, _, _, _ = emb.get_perp_neg_embeddings(torch.tensor([0.0]), torch.tensor([89.999]))
    torch.testing.assert_close(pos_near[0], side, atol=1e-4, rtol=0)


def test_errors(model_dir, tmp_path):
    with pytest.raises(UserError, match="prompt is empty"):
        PromptProcessor(dict(pretrained_model_name_or_path=model_dir, prompt=" "))
    with pytest.raises(UserError, match="view_dependent_prompting"):
        make(model_dir, tmp_path, use_perp_neg=True, view_dependent_prompting=False)
    with pytest.raises(UserError, match="does-not-exist-here"):
        PromptProcessor(dict(pretrained_model_name_or_path=str(tmp_path / "does-not-exist-here"), prompt="x"))()
    with pytest.raises(UserError, match=r"threestudio-like-test/no-such-model.*huggingface-cli download"):
        PromptProcessor(dict(pretrained_model_name_or_path="threestudio-like-test/no-such-model", prompt="x"))()
    with pytest.raises(UserError, match="unknown config key"):
        PromptProcessor(dict(pretrained_model_name_or_path=model_dir, prompt="x", promt="y"))
