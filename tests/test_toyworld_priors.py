"""The toy world's dataset, tokenizer, prior architectures and training scripts (a few steps
each, through the same from_pretrained paths the guidances use)."""

import json
import math

import pytest
import torch
import yaml

from threestudio_like.data.cameras import make_cameras
from threestudio_like.ops.dense_grid import DenseGridEncoding, sample_grid
from threestudio_like.toyworld import train_sd, train_zero123
from threestudio_like.toyworld.dataset import (
    SD_CAMERAS,
    ZERO123_CAMERAS,
    ToyDatasetConfig,
    caption,
    make_dataset,
    render_toy,
)
from threestudio_like.toyworld.priors import VOCABULARY, load_toy_zero123, write_word_tokenizer
from threestudio_like.toyworld.train_zero123 import same_class_partner


def test_word_tokenizer_makes_each_word_one_token(tmp_path):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(write_word_tokenizer(str(tmp_path / "tok")))
    for word in VOCABULARY:
        ids = tok(word).input_ids
        assert tok.convert_ids_to_tokens(ids) == ["<|startoftext|>", f"{word}</w>", "<|endoftext|>"]
    # unknown words are spelled out, not dropped
    assert tok.convert_ids_to_tokens(tok("hat").input_ids)[1:-1] == ["h", "a", "t</w>"]


def test_sphere_render_matches_the_projected_disc():
    """Pinhole camera at distance d looking at a sphere of radius r: the silhouette is a disc of
    angular radius asin(r/d); its image radius is tan(asin(r/d)) / tan(fovy/2) · H/2 pixels."""
    d, fovy, h = 2.0, 45.0, 64
    cams = make_cameras(torch.tensor([15.0]), torch.tensor([30.0]), torch.tensor([d]), torch.tensor([fovy]), h, h)
    _, alpha = render_toy("sphere", "red", cams, shading="albedo")
    radius_px = math.tan(math.asin(0.45 / d)) / math.tan(math.radians(fovy / 2)) * h / 2
    assert alpha.sum().item() == pytest.approx(math.pi * radius_px**2, rel=0.03)


def test_dataset_is_deterministic_and_captioned_by_the_view_rule():
    cfg = ToyDatasetConfig(n_images=24, chunk=4, size=16, supersample=1, seed=3)
    a, b = make_dataset(cfg), make_dataset(cfg)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["images"].shape == (24, 16, 16, 3) and a["images"].dtype == torch.uint8
    assert len(set(zip(a["shape"].tolist(), a["color"].tolist()))) == 6  # 6 chunks, 6 different classes
    assert caption(1, 0, 10.0, 5.0, with_view=True) == "a red cube, front view"
    assert caption(1, 0, 70.0, 5.0, with_view=True) == "a red cube, overhead view"
    assert caption(4, 2, 0.0, 170.0, with_view=False) == "a blue torus"


def test_lit_zero123_renders_are_lit_from_the_camera():
    """A view's shading follows from its pose alone: the light sits at the camera."""
    from threestudio_like.data.cameras import RandomCameraSampler

    cams = RandomCameraSampler({**ZERO123_CAMERAS, "height": 8, "width": 8, "batch_size": 16}).sample(
        torch.Generator().manual_seed(0)
    )
    assert torch.allclose(cams.light_position, cams.position, atol=1e-5)
    cfg = ToyDatasetConfig(n_images=16, chunk=4, size=8, supersample=1, cameras=dict(ZERO123_CAMERAS), albedo_prob=0.5)
    data = make_dataset(cfg)
    assert data["lit"].any() and not data["lit"].all()


def test_default_experiment_samples_the_cameras_the_prior_was_trained_on(repo_root):
    data = yaml.safe_load((repo_root / "configs/data/random_cameras.yaml").read_text())
    data.update(yaml.safe_load((repo_root / "configs/experiment/default.yaml").read_text())["data"])
    for key, value in SD_CAMERAS.items():
        assert data[key] == value, key


def test_same_class_partner_stays_in_class():
    classes = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    idx = torch.arange(7).repeat(20)
    partner = same_class_partner(classes, idx, torch.Generator().manual_seed(0))
    assert torch.equal(classes[partner], classes[idx])
    assert len(set(partner[idx == 0].tolist())) == 3  # every member of class 0 gets drawn


def test_dense_grid_equals_grid_sample_and_is_twice_differentiable():
    enc = DenseGridEncoding({"resolution": 5, "n_channels": 3}).double()
    u = torch.rand(50, 3, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.grid_sample(
        enc.grid.permute(3, 2, 1, 0)[None], (u * 2 - 1)[None, None, None], align_corners=True
    )[0, :, 0, 0].T
    assert torch.allclose(enc(u), ref, atol=1e-10)
    (g,) = torch.autograd.grad(enc(u).sum(), u, create_graph=True)
    g.square().sum().backward()  # analytic normals train: gradient of the gradient reaches the grid
    assert enc.grid.grad is not None and enc.grid.grad.abs().sum() > 0
    assert torch.allclose(sample_grid(enc.grid, torch.zeros(1, 3, dtype=torch.float64)), enc.grid[0, 0, 0][None])


def test_min_snr_weight_follows_the_formula():
    from diffusers import DDPMScheduler

    from threestudio_like.toyworld.priors import scheduler_config
    from threestudio_like.toyworld.training import denoising_loss

    scheduler = DDPMScheduler(**scheduler_config())
    g = torch.Generator().manual_seed(0)
    eps, noise = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    t = torch.tensor([10, 400, 990])
    mse = ((eps - noise) ** 2).mean(dim=(1, 2, 3))
    weights = []
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2  # √β linear
    for step in t.tolist():  # SNR from the β schedule written out: ᾱ_t = Π (1 − β_s)
        alpha_bar = torch.prod(1 - betas[: step + 1]).item()
        snr = alpha_bar / (1 - alpha_bar)
        weights.append(min(snr, 5.0) / snr)
    assert weights[0] < 0.1 and weights[2] == 1.0  # low noise down-weighted, high noise kept
    expected = (mse * torch.tensor(weights)).mean()
    assert torch.allclose(denoising_loss(eps, noise, t, scheduler, 5.0), expected.float(), rtol=1e-4)
    assert torch.allclose(denoising_loss(eps, noise, t, scheduler, 0.0), mse.mean())


@pytest.mark.slow
def test_train_sd_few_steps_resumes_and_loads_as_stable_diffusion(tmp_path):
    from threestudio_like.guidance.pretrained import load_diffusion_prior
    from threestudio_like.prompt.processor import PromptProcessor

    out, work = str(tmp_path / "toy-sd"), str(tmp_path / "work")
    args = [
        "--work-dir",
        work,
        "--out",
        out,
        "--n-images",
        "48",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "2",
        "--unet-channels",
        "8",
        "16",
        "32",
    ]
    assert train_sd.main(args + ["--steps", "2"])["steps"] == 2
    assert train_sd.main(args + ["--steps", "4"])["steps"] == 4  # resumed from the saved state
    prior = load_diffusion_prior(out)
    assert prior.vae is None and prior.camera_conditioned and prior.sample_size == 32
    assert list(prior.unet.config.block_out_channels) == [8, 16, 32]
    emb = PromptProcessor({"pretrained_model_name_or_path": out, "prompt": "a red cube", "cache_dir": ""})()
    cams = make_cameras(
        torch.tensor([15.0, 30.0]),
        torch.tensor([0.0, 90.0]),
        torch.tensor([2.0, 2.0]),
        torch.tensor([45.0, 45.0]),
        32,
        32,
    )
    images = train_sd.sample(out, ["a red cube", "a blue sphere, side view"], cams.c2w, steps=3)
    assert images.shape == (2, 32, 32, 3) and images.min() >= 0 and images.max() <= 1
    assert emb.cond.shape == (1, 16, 64)


@pytest.mark.slow
def test_train_zero123_few_steps_loads_in_the_zero123_guidance(tmp_path):
    from threestudio_like.guidance.zero123 import Zero123Guidance

    out = str(tmp_path / "toy-zero123")
    args = [
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        out,
        "--n-images",
        "48",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--checkpoint-every",
        "2",
        "--unet-channels",
        "8",
        "16",
        "24",
    ]
    data_flags = ["--lit-prob", "1", "--elevation-range", "-40", "80", "--target-backdrop"]
    assert train_zero123.main(args + data_flags)["steps"] == 2
    data = torch.load(tmp_path / "work" / "zero123-lit1-elevation-40to80-data-48-0.pt", weights_only=True)
    assert data["lit"].all() and data["elevation"].min() < -10 and data["elevation"].max() > 60
    # --target-backdrop: the same views over the backdrop (0.82 ± 0.18 grey), the references' over white
    backdrop = torch.load(tmp_path / "work" / "zero123-lit1-elevation-40to80-backdrop-data-48-0.pt", weights_only=True)
    assert torch.equal(backdrop["c2w"], data["c2w"]) and torch.equal(backdrop["alpha"], data["alpha"])
    inside, outside = data["alpha"] == 255, data["alpha"] == 0
    assert torch.equal(backdrop["images"][inside], data["images"][inside])
    assert (data["images"][outside] == 255).all()
    grey = backdrop["images"][outside].float() / 255
    assert grey.min() >= 0.64 - 0.01 and grey.max() <= 1.0 and grey.min() < 0.7
    guidance = Zero123Guidance({"pretrained_model_name_or_path": out})
    assert list(guidance.pipe.unet.config.block_out_channels) == [8, 16, 24]
    guidance.set_reference(torch.rand(1, 32, 32, 3), 15.0, 0.0, 1.8)
    cams = make_cameras(torch.tensor([15.0]), torch.tensor([90.0]), torch.tensor([1.8]), torch.tensor([45.0]), 32, 32)
    rgb = torch.rand(1, 32, 32, 3, requires_grad=True)
    guidance(rgb, cams).loss.backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    # --init-from: no steps exports the weights it started from
    again = str(tmp_path / "again")
    flags = ["--work-dir", str(tmp_path / "work2"), "--out", again, "--n-images", "48", "--steps", "0"]
    assert train_zero123.main(flags + ["--init-from", out])["steps"] == 0
    first, second = load_toy_zero123(out), load_toy_zero123(again)
    for name in ("unet", "image_encoder", "cc_projection"):
        a, b = first[name].state_dict(), second[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # Stable Zero123's pose embedding (a reference elevation per pair), lights jittered about the camera
    stable = str(tmp_path / "toy-stable-zero123")
    flags = ["--work-dir", str(tmp_path / "work3"), "--out", stable, "--n-images", "48", "--batch-size", "4"]
    flags += ["--steps", "1", "--unet-channels", "8", "16", "24", "--pose-embedding", "stable_zero123"]
    flags += ["--reference-fill", "0.6", "--own-view-prob", "0.5", "--half"]
    assert train_zero123.main(flags + ["--light-jitter", "0.8"] + data_flags)["steps"] == 1
    jittered = torch.load(tmp_path / "work3" / "zero123-lit1-elevation-40to80-light0.8-data-48-0.pt", weights_only=True)
    assert torch.equal(jittered["c2w"], data["c2w"]) and torch.equal(jittered["alpha"], data["alpha"])
    changed = (jittered["images"].float() - data["images"].float()).abs().amax(-1)[inside]
    assert (changed > 8).float().mean() > 0.5  # the shading moved (a headlight lights every view head-on)
    assert Zero123Guidance({"pretrained_model_name_or_path": stable}).pose_kind == "stable_zero123"
    # --half: float16 weights, loaded in float32
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "toy-stable-zero123" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.float16}
    assert {p.dtype for p in load_toy_zero123(stable)["unet"].parameters()} == {torch.float32}


def test_references_are_framed_as_preprocess_frames_a_photo():
    """A red 10×16 rectangle at x 4…14, y 10…26 of a white 32² render, framed at fill 0.5: its
    box centred, 16 px tall (0.5 of the side) and 10 px wide, white around it."""
    image = torch.full((1, 32, 32, 3), 255, dtype=torch.uint8)
    alpha = torch.zeros(1, 32, 32, dtype=torch.uint8)
    image[0, 10:26, 4:14] = torch.tensor([220, 30, 30], dtype=torch.uint8)
    alpha[0, 10:26, 4:14] = 255
    framed = train_zero123.framed_references(image, alpha, 0.5)[0].float()
    red = (framed[..., 1] < 128).nonzero()
    assert red[:, 0].min() == 8 and red[:, 0].max() == 23  # rows: 16 px, centred (8 + 23 + 1 = 32)
    assert red[:, 1].min() == 11 and red[:, 1].max() == 20  # columns: 10 px, centred
    assert (framed[:6] == 255).all() and (framed[:, :9] >= 250).all()


def test_toy_unet_widths_and_training_device_are_checked():
    from threestudio_like.core.errors import UserError
    from threestudio_like.toyworld.priors import unet_config
    from threestudio_like.toyworld.training import check_device

    assert unet_config(3, 3, 64, camera=True, channels=(8, 16, 24))["block_out_channels"] == (8, 16, 24)
    for bad in ((16, 32), (16, 32, 60), (0, 8, 16)):
        with pytest.raises(UserError, match="three positive multiples of 8"):
            unet_config(3, 3, 64, camera=True, channels=bad)
    # attention (where the context enters) at the coarsest level, or the two coarsest
    one, two = unet_config(6, 3, 64, camera=False), unet_config(6, 3, 64, camera=False, attention_levels=2)
    assert one["down_block_types"] == ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
    assert one["up_block_types"] == ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    assert two["down_block_types"] == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert two["up_block_types"] == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    for bad_levels in (0, 3):
        with pytest.raises(UserError, match="attention_levels: expected 1 or 2"):
            unet_config(6, 3, 64, camera=False, attention_levels=bad_levels)
    check_device("cpu")
    with pytest.raises(UserError, match="expected cpu, cuda"):
        check_device("meta")
    with pytest.raises(UserError, match="--device"):
        check_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no usable CUDA device"):
            check_device("cuda")


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_sd_on_cuda_sees_the_same_batches_as_on_cpu(tmp_path):
    """The same seed on either device draws the same batches: the logged losses agree (to the
    GPU's float rounding) step by step."""
    losses = {}
    for device in ("cpu", "cuda"):
        work = tmp_path / device
        train_sd.main(
            [
                "--work-dir",
                str(work),
                "--out",
                str(tmp_path / f"out-{device}"),
                "--n-images",
                "48",
                "--batch-size",
                "4",
                "--steps",
                "3",
                "--log-every",
                "1",
                "--device",
                device,
            ]
        )
        losses[device] = [json.loads(line)["loss"] for line in (work / "train_log.jsonl").read_text().splitlines()]
    assert len(losses["cpu"]) == 3
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=2e-2)
