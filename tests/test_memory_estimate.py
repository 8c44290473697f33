"""The memory estimate (systems/memory_estimate.py): exact parameter and optimizer counts, safetensors
headers, saved-activation accounting, the warning — against formulas and models built here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from threestudio_like.systems import memory_estimate as memory


def test_trained_bytes_counts_weights_grads_and_adam_moments_exactly():
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3))
    model[2].requires_grad_(False)
    n = 10 * 20 + 20  # the trainable first layer only
    assert memory.trained_bytes(model, "Adam") == (n, n * 4 * (1 + 1 + 2))
    assert memory.trained_bytes(model, "SGD") == (n, n * 4 * 2)


def test_safetensors_numel_reads_the_header(tmp_path):
    save_file({"a": torch.zeros(3, 5), "b": torch.zeros(7, dtype=torch.float16)}, tmp_path / "w.safetensors")
    assert memory.safetensors_numel(tmp_path / "w.safetensors") == 3 * 5 + 7


def test_pretrained_numel_counts_the_role_s_folders(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    for sub, n in (("unet", 100), ("vae", 30), ("text_encoder", 11)):
        (tmp_path / sub).mkdir()
        save_file({"w": torch.zeros(n)}, tmp_path / sub / "model.safetensors")
    save_file({"w": torch.zeros(100, dtype=torch.float16)}, tmp_path / "unet" / "model.fp16.safetensors")
    assert memory.pretrained_numel(str(tmp_path), "guidance") == 130  # the fp16 variant not counted twice
    assert memory.pretrained_numel(str(tmp_path), "prompt_processor") == 11
    single = tmp_path / "clip"
    single.mkdir()
    save_file({"w": torch.zeros(4, 4)}, single / "model.safetensors")
    assert memory.pretrained_numel(str(single), "guidance") == 16


def test_saved_tensor_bytes_of_known_ops():
    x = torch.randn(100, requires_grad=True)
    assert memory.saved_tensor_bytes(lambda: torch.exp(x)) == 100 * 4  # exp saves its output
    w = torch.randn(100, 50, requires_grad=True)
    a = torch.randn(8, 100, requires_grad=True)
    # a @ w saves both operands; a second use of the same tensors adds nothing
    assert memory.saved_tensor_bytes(lambda: (a @ w, a @ w)) == (8 * 100 + 100 * 50) * 4
    with torch.no_grad():
        assert memory.saved_tensor_bytes(lambda: torch.exp(x)) == 0


def test_a_measured_graph_is_freed_with_its_outputs():
    """exp saves its own output: handed to autograd as itself, the output and its graph would keep
    each other alive past the probe (a cycle through C++ the garbage collector cannot see) — the
    memory estimate once kept every probe's graph for the whole run."""
    import gc
    import weakref

    x = torch.randn(1000, requires_grad=True)
    outputs = []

    def fn() -> None:
        y = torch.exp(x).relu()
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)  # gradients inside still work
        assert torch.allclose(g, torch.exp(x))
        outputs.append(weakref.ref(y))

    assert memory.saved_tensor_bytes(fn) >= 2 * 1000 * 4
    gc.collect()
    assert outputs[0]() is None


def test_attention_on_meta_is_counted_as_a_fused_kernel_keeps_it():
    """q, k, v, the output and a log-sum-exp per query row — not the L×S matrix of the math path
    that the meta device would take (20 MiB against 330 MiB for SD's 64² latent, 5 heads)."""
    import torch.nn.functional as F

    b, h, n, d = 1, 5, 4096, 64
    q = torch.zeros(b, h, n, d, device="meta", requires_grad=True)
    k, v = torch.zeros(b, h, n, d, device="meta"), torch.zeros(b, h, n, d, device="meta")
    with memory.fused_attention_on_meta():
        fused = memory.saved_tensor_bytes(lambda: F.scaled_dot_product_attention(q, k, v))
    assert fused == (4 * b * h * n * d + b * h * n) * 4
    assert memory.saved_tensor_bytes(lambda: F.scaled_dot_product_attention(q, k, v)) > b * h * n * n * 4
    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention  # restored


def test_report_warns_above_free_memory():
    e = memory.MemoryEstimate("s", 1, 2, trained=1 << 30, frozen=1 << 30, render_activations=0,
                              guidance_activations=0, runtime=0)  # fmt: skip
    text, too_big = memory.report([e], torch.device("cpu"), free=3 << 30)
    assert not too_big and "s: 2.00 GiB" in text
    assert memory.report([e], torch.device("cpu"), free=1 << 30)[1]
    assert memory.free_bytes(torch.device("cpu")) > 0


def test_the_text_encoder_takes_the_activations_place_when_larger():
    """It encodes the prompts before training and is freed: the larger of the two counts."""
    gib = 1 << 30
    e = memory.MemoryEstimate("s", 1, 2, trained=gib, frozen=2 * gib, render_activations=gib,
                              guidance_activations=gib, runtime=0, text_encoder=gib)  # fmt: skip
    assert e.total == 5 * gib and "text encoder 1.00 before training: smaller, not counted" in e.line()
    e.text_encoder = 3 * gib
    assert e.total == 6 * gib and "text encoder 3.00 before training: larger, counted instead" in e.line()


@pytest.fixture(scope="module")
def smoke_estimates():
    from threestudio_like.cli import compose_config
    from threestudio_like.systems.memory_estimate import memory_estimates

    cfg = compose_config(["experiment=magic3d", "debug=smoke", "prompt=a red cube"])
    return cfg, memory_estimates(cfg, torch.device("cpu"))


@pytest.mark.slow
def test_stage_estimate_matches_the_built_system(smoke_estimates):
    from threestudio_like.core.preflight import build_stage_for_check
    from threestudio_like.core.stages import resolve_stage, stage_names

    cfg, estimates = smoke_estimates
    assert [e.stage for e in estimates] == stage_names(cfg) == ["coarse", "refine"]
    for e in estimates:
        n = build_stage_for_check(resolve_stage(cfg, e.stage), f"stage.{e.stage}")
        assert e.trained_parameters == n and e.trained == 16 * n  # fp32 weight, grad, Adam's 2 moments
        assert e.render_activations > 0 and e.runtime > 0
        sd = str(cfg.models.sd)  # the prior's UNet + VAE frozen; its text encoder apart, fp32 on the CPU
        assert e.frozen == 4 * memory.pretrained_numel(sd, "guidance")
        assert e.text_encoder == 4 * memory.pretrained_numel(sd, "prompt_processor") > 0


@pytest.mark.slow
def test_render_activations_scale_with_the_pixel_count(smoke_estimates):
    from threestudio_like.core.config import import_target
    from threestudio_like.core.stages import resolve_stage
    from threestudio_like.core.trainer import DEFAULT_SYSTEM

    cfg, _ = smoke_estimates

    stage = dict(resolve_stage(cfg, "coarse"))
    system = import_target(stage.pop("_target_", DEFAULT_SYSTEM))(stage, where="stage.coarse")
    sizes = [(1, 16, 16), (1, 32, 32), (2, 32, 48), (4, 64, 64)]
    got = [memory.render_activation_bytes(system, *size) for size in sizes]  # probes re-rendered each time
    pixels = [b * h * w for b, h, w in sizes]
    slope = (got[3] - got[0]) / (pixels[3] - pixels[0])
    for n, g in zip(pixels[1:3], got[1:3]):  # a line in the pixel count (a volume: through ~0)
        assert g == pytest.approx(got[0] + slope * (n - pixels[0]), rel=0.1)


@pytest.mark.slow
def test_a_hand_off_that_needs_training_is_not_estimated_and_the_run_goes_on(tmp_path):
    """DreamGaussian's texture stage meshes the Gaussians stage's isosurface: untrained (here made
    empty on purpose by a level above every density) the estimate says so, and the run starts."""
    from threestudio_like.cli import compose_config
    from threestudio_like.systems.memory_estimate import memory_estimates

    overrides = ["experiment=dreamgaussian", "debug=smoke", "prompt=a red cube", "geometry.isosurface_threshold=1000"]
    estimates = memory_estimates(compose_config(overrides), torch.device("cpu"))
    assert [e.stage for e in estimates] == ["gaussians", "texture"]
    assert isinstance(estimates[0], memory.MemoryEstimate) and estimates[0].total > 0
    assert isinstance(estimates[1], memory.NotEstimated) and "trained gaussians stage" in estimates[1].line()
    assert "texture: not estimated" in memory.report(estimates, torch.device("cpu"))[0]

    from tests.test_experiments import run_cli

    p = run_cli(*overrides, "output_dir=run", cwd=tmp_path)
    assert "texture: not estimated" in p.stderr
    # the run trained its first stage before the (deliberately unreachable) level stopped it
    assert "isosurface at threshold 1000 is empty" in p.stderr and (tmp_path / "run" / "metrics.jsonl").exists()


def test_mvdream_is_estimated_with_its_own_unet(monkeypatch, tmp_path):
    """MVDream denoises with its multi-view UNet (32² latents: 256² renders encoded), not the SD
    pipeline's (64²: 512²): the estimate traces that UNet's config — from a converted directory, or
    the released architecture for the checkpoint file."""
    from threestudio_like.cli import compose_config
    from threestudio_like.guidance.mvdream import MultiViewDiffusionGuidance
    from threestudio_like.guidance.mvdream_unet import CHECKPOINT_NAME, MVDREAM_UNET_CONFIG
    from threestudio_like.systems.memory_estimate import memory_estimates

    cfg = compose_config(["experiment=mvdream", "debug=smoke", "prompt=a red cube"])
    tiny = str(cfg.models.mvdream)
    assert MultiViewDiffusionGuidance.denoiser_config({"multiview_unet": tiny}) == json.loads(
        (Path(tiny) / "config.json").read_text()
    )
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"")  # located, not read
    assert MultiViewDiffusionGuidance.denoiser_config({"multiview_unet": str(tmp_path)}) == MVDREAM_UNET_CONFIG

    seen = []
    monkeypatch.setattr(memory, "guidance_activation_bytes", lambda d, b, t, u=None: seen.append(u) or 0)
    memory_estimates(cfg, torch.device("cpu"))
    assert seen == [json.loads((Path(tiny) / "config.json").read_text())]


@pytest.fixture(scope="module")
def zero123_nerf():
    """The smoke zero123 nerf stage, built as the estimate builds it: a reference-view term that
    renders its own 128² view (256², 512² later) beside the step's render."""
    from threestudio_like.cli import compose_config
    from threestudio_like.core.config import import_target
    from threestudio_like.core.stages import resolve_stage
    from threestudio_like.core.trainer import DEFAULT_SYSTEM

    image = Path(__file__).resolve().parents[1] / "threestudio_like" / "assets" / "toy-images" / "red_cube.png"
    schedule = "stage.nerf.data.resolution_schedule=[[0,16,16,4],[2,32,32,2]]"
    cfg = compose_config(["experiment=zero123", "debug=smoke", f"image={image}", schedule])
    stage = dict(resolve_stage(cfg, "nerf"))
    return import_target(stage.pop("_target_", DEFAULT_SYSTEM))(stage, where="stage.nerf")


def test_a_term_s_own_render_size_follows_its_schedule(zero123_nerf):
    ref = zero123_nerf.terms["ref"]
    assert [ref.own_render_pixels(s) for s in (0, 199, 200, 300)] == [128**2, 128**2, 256**2, 512**2]
    assert zero123_nerf.terms["sparsity"].own_render_pixels(0) == 0


@pytest.mark.slow
def test_a_term_s_own_render_is_counted_at_its_size(zero123_nerf):
    """Estimated from the small probes against what autograd keeps when the step's render (2 views
    at 24²) and the terms, the reference view's 128² render among them, really run."""
    from threestudio_like.data.cameras import make_cameras
    from threestudio_like.systems.regularizers import LossTerm
    from threestudio_like.systems.score_distillation import StepContext

    system = zero123_nerf
    probe = memory.render_probe(system)
    estimate = memory.render_activation_bytes(system, 2, 24, 24, 0, probe)
    ones = torch.ones(2)
    cams = make_cameras(ones * 15.0, torch.tensor([0.0, 90.0]), ones * 3.8, ones * 20.0, 24, 24)
    terms = [t for t in system.terms.values() if type(t).setup_guidance is LossTerm.setup_guidance]

    def step() -> None:
        render = system.render(cams, shading=system.material.training_shading(0))
        ctx = StepContext(system=system, cameras=cams, render=render, global_step=0)
        for term in terms:
            term(ctx)

    with torch.enable_grad():
        measured = memory.saved_tensor_bytes(step)
    without_own = probe.step.at(2 * 24 * 24)
    assert measured > 4 * without_own  # the 128² reference view is most of it
    assert estimate == pytest.approx(measured, rel=0.2)


def test_activations_are_taken_at_the_step_where_they_peak(zero123_nerf):
    """Resolution schedule 4 × 16² (from step 0), 2 × 32² (from step 2); the reference view 128²:
    with a per-pixel cost of 1 byte and no fixed part the render's bytes are its pixel count."""
    own, pixel = 128**2, memory.Line(0.0, 1.0)
    probe = memory.RenderProbe(step=pixel, render=pixel)
    assert memory.peak_step(zero123_nerf, 3, probe, 0) == (2, 2 * 32 * 32 + own, 0)
    assert memory.peak_step(zero123_nerf, 2, probe, 0) == (0, 4 * 16 * 16 + own, 0)  # stopped before step 2
    # a guidance term per view large enough that the 4-view batch of step 0 outweighs the larger renders
    assert memory.peak_step(zero123_nerf, 3, probe, 10**6) == (0, 4 * 16 * 16 + own, 4 * 10**6)
    # the step's render with its terms at one cost, the reference view's render call at another
    split = memory.RenderProbe(step=memory.Line(100.0, 3.0), render=memory.Line(10.0, 1.0))
    assert memory.peak_step(zero123_nerf, 1, split, 0) == (0, 100 + 3 * 4 * 16 * 16 + 10 + own, 0)
    assert zero123_nerf.data.batch_size == 4  # the data module is left at step 0


def test_the_estimate_is_reproducible_and_leaves_the_run_s_random_draws():
    """Systems are built on a forked RNG seeded with the run's seed: the same estimate each time
    (a Gaussians hand-off either meshes or not, always the same way), the global state untouched."""
    from threestudio_like.cli import compose_config
    from threestudio_like.systems.memory_estimate import memory_estimates

    cfg = compose_config(["experiment=dreamgaussian", "debug=smoke", "prompt=a red cube"])
    torch.manual_seed(123)
    state = torch.get_rng_state()

    def sizes(estimates):  # all but the runtime (the process grows between the two)
        return [
            (e.trained, e.frozen, e.render_activations, e.guidance_activations, e.step)
            if isinstance(e, memory.MemoryEstimate)
            else e.line()
            for e in estimates
        ]

    first = sizes(memory_estimates(cfg, torch.device("cpu")))
    assert torch.equal(torch.get_rng_state(), state)
    assert sizes(memory_estimates(cfg, torch.device("cpu"))) == first
