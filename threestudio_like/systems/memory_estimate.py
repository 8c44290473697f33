"""How much memory a stage needs, estimated before it trains.

Per stage, in bytes:

* **trained** — the system's trainable parameters, their gradients and the optimizer's state
  (Adam/AdamW: two moments; SGD: none) — exact, counted on the built system;
* **frozen** — the pretrained models the stage trains with (guidance UNet + VAE, Zero123's image
  encoder, CLIP), counted from the ``safetensors`` headers (no weights read), at the dtype they run
  in (fp16 on CUDA with ``half_precision``, fp32 otherwise); the prompt processor's text encoder is
  loaded only to encode prompts before training and freed, so it is counted in place of the
  activations where it is larger, not beside them;
* **render activations** — what autograd keeps for one training render with the loss terms
  that read it (regularizers) and for the renders terms make of their own (the reference view):
  two small probe renders (:data:`PROBE_SIDES`) give a per-pixel part (every ray with its samples,
  every rasterized or splatted pixel) and a fixed part per render call (per vertex or Gaussian),
  evaluated at the configured batch × height × width and each term's own render size — never
  rendered at those sizes, so the estimate itself stays small;
* **guidance activations** — what autograd keeps from the render to the prior's input: the VAE
  encoder at its input size (latent priors), and a full UNet forward for guidances that train the
  prior after their step (VSD's LoRA); traced on the ``meta`` device for one view (nothing
  computed) and multiplied by the batch, halved where the prior runs in fp16;
* **runtime** — the process itself (interpreter, libraries; CUDA context on a GPU), as it stands
  when the estimate is made.

Activations are taken at the training step where they peak: resolution schedules and the terms'
own render sizes are followed over the stage's steps (:func:`peak_step`).

The total is compared with the device's free memory (:func:`free_bytes`): CUDA's
``mem_get_info``, the system's available RAM on CPU.
"""

from __future__ import annotations

import json
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional

import torch
import torch.nn.functional as F

PROBE_SIDES = (16, 32)
"""Sides (pixels) of the two probe renders whose saved activations are fitted and scaled."""
PROBE_VIEWS = 4
"""Views (cameras drawn as the stage's training cameras) in each probe render, at least."""
OPTIMIZER_MOMENTS = {"Adam": 2, "AdamW": 2, "SGD": 0}
"""fp32 state tensors per trained parameter, by optimizer name (unknown names: 2)."""
COMPONENTS_BY_ROLE = {
    "guidance": ("unet", "vae", "image_encoder", "cc_projection", "clip_camera_projection"),
    "prompt_processor": ("text_encoder",),
}
"""Sub-folders of a pipeline directory a component loads, by its role in the stage."""


@dataclass
class MemoryEstimate:
    """One stage's estimate (bytes, see the module docstring)."""

    stage: str
    trained_parameters: int
    frozen_parameters: int
    trained: int
    frozen: int
    render_activations: Optional[int]
    """None where the probe could not render: a hand-off geometry that is empty before training."""
    guidance_activations: int
    runtime: int
    step: int = 0
    """The training step the activations are estimated at: the one where they peak (a resolution
    schedule's larger renders, a term's own render growing)."""
    text_encoder: int = 0
    """The prompt processor's text encoder: loaded only to encode prompts missing from the
    embedding cache, before training, and freed after — so it takes the activations' place when
    larger, never sits beside them."""

    @property
    def activations(self) -> int:
        return (self.render_activations or 0) + self.guidance_activations

    @property
    def total(self) -> int:
        return self.trained + self.frozen + max(self.activations, self.text_encoder) + self.runtime

    def line(self) -> str:
        g = lambda b: "?" if b is None else f"{b / 2**30:.2f}"  # noqa: E731
        encoder = ""
        if self.text_encoder:
            counted = "larger, counted instead" if self.text_encoder > self.activations else "smaller, not counted"
            encoder = f" (text encoder {g(self.text_encoder)} before training: {counted})"
        return (
            f"{self.stage}: {g(self.total)} GiB = trained {g(self.trained)} ({self.trained_parameters / 1e6:.2f} M "
            f"params + grads + optimizer) + frozen {g(self.frozen)} ({self.frozen_parameters / 1e6:.0f} M) "
            f"+ render activations {g(self.render_activations)} + guidance activations "
            f"{g(self.guidance_activations)}{encoder} + runtime {g(self.runtime)}"
            + (f" (at step {self.step})" if self.step else "")
        )


@dataclass
class NotEstimated:
    """A stage that cannot be built before its previous stage has trained (the untrained hand-off
    has no surface: a mesh taken from freshly initialised Gaussians); counted as 0 bytes."""

    stage: str
    reason: str
    total: int = 0

    def line(self) -> str:
        return f"{self.stage}: not estimated ({self.reason})"


# ---- parameters -------------------------------------------------------------------------------
def trained_bytes(module: torch.nn.Module, optimizer: str) -> tuple[int, int]:
    """(trainable parameter count, bytes of weights + gradients + optimizer state)."""
    trained = [p for p in module.parameters() if p.requires_grad]
    n = sum(p.numel() for p in trained)
    weights = sum(p.numel() * p.element_size() for p in trained)
    return n, 2 * weights + n * 4 * OPTIMIZER_MOMENTS.get(optimizer, 2)


def safetensors_numel(path: Path) -> int:
    """Number of elements in a ``.safetensors`` file, from its header only."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    total = 0
    for key, entry in header.items():
        if key != "__metadata__":
            n = 1
            for s in entry["shape"]:
                n *= s
            total += n
    return total


def pretrained_numel(model_dir: str, role: str) -> int:
    """Parameters a component of ``role`` loads from ``model_dir``: the role's sub-folders of a
    pipeline (:data:`COMPONENTS_BY_ROLE`), every weight file of a single model. Sharded or
    variant files (``*.fp16.safetensors``) are counted once per folder."""
    root = Path(model_dir)
    folders = [root / s for s in COMPONENTS_BY_ROLE.get(role, ()) if (root / s).is_dir()]
    if not (root / "model_index.json").is_file():
        folders = [root]
    total = 0
    for folder in folders:
        files = sorted(folder.glob("*.safetensors"))
        full = [f for f in files if ".fp16." not in f.name]
        total += sum(safetensors_numel(f) for f in (full or files))
    return total


# ---- activations ------------------------------------------------------------------------------
class _Saved:
    """What autograd holds for a saved tensor while :func:`saved_tensor_bytes` measures."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor: Optional[torch.Tensor] = tensor


def saved_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the tensors autograd saves while ``fn`` runs (each storage counted once).

    A pack hook that hands autograd the tensor itself makes a reference cycle through the graph
    whenever the tensor is an output of the node saving it (``exp``, ``relu``…), one Python's
    garbage collector cannot see: the whole graph would outlive ``fn``. The tensors are handed
    over in boxes, emptied once ``fn`` has returned (gradients inside ``fn`` — analytic normals —
    still see them)."""
    seen: dict[Any, int] = {}
    boxes: list[_Saved] = []

    def pack(t: torch.Tensor) -> _Saved:
        key = (id(t.untyped_storage()) if t.device.type != "meta" else id(t), t.shape, t.dtype)
        seen[key] = t.numel() * t.element_size()
        boxes.append(_Saved(t))
        return boxes[-1]

    def unpack(box: _Saved) -> torch.Tensor:
        if box.tensor is None:
            raise RuntimeError("saved_tensor_bytes: a measured graph cannot be run backward afterwards")
        return box.tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            fn()
    finally:
        for box in boxes:
            box.tensor = None
    return sum(seen.values())


class FusedAttention(torch.autograd.Function):
    """On the meta device, what a fused attention kernel keeps for its backward: query, key, value,
    the output and one log-sum-exp per query row (flash / memory-efficient attention, which torch's
    ``scaled_dot_product_attention`` runs on CUDA and CPU) — the meta device would take the math
    path and keep the L×S attention matrix (16× the fused kernel's record for a 64² latent)."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1]))
        return out


@contextmanager
def fused_attention_on_meta() -> Iterator[None]:
    """``F.scaled_dot_product_attention`` on meta tensors recorded as :class:`FusedAttention`."""
    original = F.scaled_dot_product_attention

    def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if query.device.type == "meta":
            return FusedAttention.apply(query, key, value)
        return original(query, key, value, *args, **kwargs)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


class Line(NamedTuple):
    """Saved bytes as ``fixed + per_pixel × pixels``, fitted on probes."""

    fixed: float
    per_pixel: float

    def at(self, pixels: int) -> float:
        return self.fixed + self.per_pixel * pixels


class RenderProbe(NamedTuple):
    """:func:`render_probe`'s fits: a training render with the loss terms that read it, and a render
    call alone (what a term's render of its own costs)."""

    step: Line
    render: Line


def render_probe(system: Any) -> RenderProbe:
    """Saved bytes of one training render with the loss terms that read it (those without a prior
    of their own and without a render of their own), and of the render alone: probes at
    :data:`PROBE_SIDES` pixels a side, each fitted as a :class:`Line` in the pixel count — a
    per-pixel part (rays with their samples, rasterized or splatted pixels) and a fixed part per
    render call (per vertex or Gaussian: a DMTet's surface extraction, the Gaussians' projection).
    The probes' cameras are drawn as the stage's training cameras are (:data:`PROBE_VIEWS` of them,
    a fixed seed): how many samples a ray keeps depends on how the object fills the view."""
    from ..systems.regularizers import LossTerm
    from ..systems.score_distillation import StepContext

    shading = system.material.training_shading(0)
    terms = [
        t
        for t in system.terms.values()
        if type(t).setup_guidance is LossTerm.setup_guidance and not t.own_render_pixels(0)
    ]

    def step(cams: Any, with_terms: bool) -> None:
        render = system.render(cams, shading=shading)
        ctx = StepContext(system=system, cameras=cams, render=render, global_step=0)
        for term in terms if with_terms else ():
            term(ctx)

    data = system.data
    views = data.cfg.n_views * -(-PROBE_VIEWS // data.cfg.n_views)  # whole groups of n_views
    (s0, s1), lines = PROBE_SIDES, []
    try:
        for with_terms in (True, False):
            measured = []
            for side in PROBE_SIDES:
                data.height = data.width = side
                data.batch_size = views
                cams = data.sample(generator=torch.Generator().manual_seed(0)).to(system.device)
                with torch.enable_grad():
                    measured.append(saved_tensor_bytes(lambda cams=cams, t=with_terms: step(cams, t)))
            b0, b1 = measured
            per_pixel = max(b1 - b0, 0) / (views * (s1 * s1 - s0 * s0))
            lines.append(Line(max(b0 - per_pixel * views * s0 * s0, 0.0), per_pixel))
    finally:
        data.on_update_step(0, 0)
    return RenderProbe(*lines)


def render_activation_bytes(
    system: Any, batch: int, height: int, width: int, step: int = 0, probe: Optional[RenderProbe] = None
) -> int:
    """Saved activations of a training step's renders at ``batch`` × ``height`` × ``width``: the
    step's render with the terms that read it, and the renders the terms make themselves at
    ``step`` (a reference view at its own size: :meth:`~.regularizers.LossTerm.own_render_pixels`),
    from :func:`render_probe` (``probe``; probed here when not given)."""
    probe = render_probe(system) if probe is None else probe
    own = (t.own_render_pixels(step) for t in system.terms.values())
    return int(probe.step.at(batch * height * width) + sum(probe.render.at(p) for p in own if p))


def guidance_activation_bytes(
    model_dir: str, batch: int, trains_prior: bool, unet_config: Optional[dict[str, Any]] = None
) -> int:
    """Saved activations from the render to the prior's input (the VAE encoder at its input size)
    and, for a guidance that trains the prior (``trains_prior``), one UNet forward with gradients;
    traced on the meta device from the pipeline's configs. ``unet_config``: the UNet the guidance
    denoises with where it is not the pipeline's own (MVDream's)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    root = Path(model_dir)
    if unet_config is None:
        if not (root / "unet" / "config.json").is_file():
            return 0
        unet_config = UNet2DConditionModel.load_config(str(root / "unet"))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = None
        if (root / "vae" / "config.json").is_file():
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(root / "vae")))
    s = unet.config.sample_size
    s = int(s[0] if isinstance(s, (list, tuple)) else s)
    total = 0
    with fused_attention_on_meta():
        if vae is not None:
            size = s * 2 ** (len(vae.config.block_out_channels) - 1)
            x = torch.zeros(batch, 3, size, size, device="meta", requires_grad=True)
            total += saved_tensor_bytes(lambda: vae.encode(x).latent_dist.sample())
        if trains_prior:
            unet.requires_grad_(False)
            lat = torch.zeros(batch, unet.config.in_channels, s, s, device="meta", requires_grad=True)
            ctx = torch.zeros(batch, 77, unet.config.cross_attention_dim, device="meta")
            labels = torch.zeros(batch, 16, device="meta") if unet.config.class_embed_type == "projection" else None
            t = torch.zeros(batch, dtype=torch.long, device="meta")
            total += saved_tensor_bytes(lambda: unet(lat, t, encoder_hidden_states=ctx, class_labels=labels))
    return total


# ---- the device -------------------------------------------------------------------------------
def free_bytes(device: torch.device) -> int:
    """Free memory of ``device``: CUDA's ``mem_get_info``; on CPU the available RAM
    (``MemAvailable`` of /proc/meminfo, else psutil)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.virtual_memory().available)


def runtime_bytes(device: torch.device) -> int:
    """Memory the process holds now: resident set on CPU, reserved by torch on CUDA."""
    if device.type == "cuda":
        return int(torch.cuda.memory_reserved(device))
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)


# ---- one stage ---------------------------------------------------------------------------------
def estimate_stage(
    name: str,
    system: Any,
    stage: dict[str, Any],
    pretrained: list[tuple[str, str, str]],
    device: torch.device,
    runtime: int,
) -> MemoryEstimate:
    """The estimate for a built stage ``system`` (its guidance not loaded) whose resolved config is
    ``stage``; ``pretrained`` lists its (config path, model directory, kind) as
    :func:`~threestudio_like.core.preflight.pretrained_components` finds them, resolved;
    ``runtime``: :func:`runtime_bytes` taken before any probe ran."""
    from ..core.config import import_target
    from ..core.errors import UserError
    from ..guidance.distillation import DistillationGuidance

    optimizer = str((stage.get("optimizer") or {}).get("name", "Adam"))
    n_trained, trained = trained_bytes(system, optimizer)
    try:
        probe: Optional[RenderProbe] = render_probe(system)
    except (RuntimeError, UserError):  # an untrained hand-off (Gaussians → mesh) may have nothing to render
        probe = None
    guidance = stage.get("guidance") or {}
    half = bool(guidance.get("half_precision", True)) and device.type == "cuda"
    half_encoder = bool((stage.get("prompt_processor") or {}).get("half_precision", False)) and device.type == "cuda"
    frozen_n, encoder_n, guidance_per_view, counted = 0, 0, 0, set()
    for path, model_dir, _kind in pretrained:
        role = "prompt_processor" if path.endswith("prompt_processor") else "guidance"
        if (model_dir, role) in counted:
            continue
        counted.add((model_dir, role))
        if role == "prompt_processor":
            encoder_n += pretrained_numel(model_dir, role)
            continue
        frozen_n += pretrained_numel(model_dir, role)
        if path.endswith(".guidance"):
            cls = import_target(guidance["_target_"]) if guidance.get("_target_") else None
            trains = (
                isinstance(cls, type)
                and issubclass(cls, DistillationGuidance)
                and cls.after_step is not DistillationGuidance.after_step
            )
            denoiser = getattr(cls, "denoiser_config", None)  # a guidance whose UNet is not the pipeline's
            unet_config = denoiser(guidance) if denoiser is not None else None
            traced = guidance_activation_bytes(model_dir, 1, trains, unet_config)  # fp32, meta, one view
            guidance_per_view += traced // 2 if half else traced
    step, render, guidance_act = peak_step(system, int(stage.get("steps", 1)), probe, guidance_per_view)
    return MemoryEstimate(
        stage=name,
        trained_parameters=n_trained,
        frozen_parameters=frozen_n,
        trained=trained,
        frozen=frozen_n * (2 if half else 4),
        text_encoder=encoder_n * (2 if half_encoder else 4),
        render_activations=render,
        guidance_activations=guidance_act,
        runtime=runtime,
        step=step,
    )


def peak_step(
    system: Any, steps: int, probe: Optional[RenderProbe], guidance_per_view: int
) -> tuple[int, Optional[int], int]:
    """(step, render activations, guidance activations) at the training step below ``steps`` where
    their sum is largest: the data's render size and batch and the terms' own render sizes follow
    their schedules (a resolution schedule's later, larger renders). ``probe``: :func:`render_probe`'s
    fit, None where the geometry could not render (then only the guidance is counted)."""
    data = system.data
    best = (-1, 0, None, 0)
    try:
        for step in range(max(steps, 1)):
            data.on_update_step(0, step)
            render = (
                None
                if probe is None
                else render_activation_bytes(system, data.batch_size, data.height, data.width, step, probe)
            )
            guidance = guidance_per_view * data.batch_size
            if (render or 0) + guidance > best[0]:
                best = ((render or 0) + guidance, step, render, guidance)
    finally:
        data.on_update_step(0, 0)
    return best[1], best[2], best[3]


def report(
    estimates: list[MemoryEstimate | NotEstimated], device: torch.device, free: Optional[int] = None
) -> tuple[str, bool]:
    """The printed block (one line per stage) and whether the largest stage exceeds ``free``
    (default: :func:`free_bytes` of ``device``)."""
    free = free_bytes(device) if free is None else free
    lines = [f"memory estimate ({device.type}, {free / 2**30:.1f} GiB free):"]
    lines += ["  " + e.line() for e in estimates]
    peak = max((e.total for e in estimates), default=0)
    return "\n".join(lines), peak > free


# ---- a run's stages ----------------------------------------------------------------------------
def memory_estimates(cfg: Any, device: torch.device) -> list[MemoryEstimate | NotEstimated]:
    """Each stage's :class:`MemoryEstimate` on ``device`` (systems built on the CPU, each from the
    previous one as the trainer builds them, untrained; pretrained models counted from their files,
    not loaded). A stage whose hand-off needs the previous stage
    trained (an isosurface of freshly initialised Gaussians may be empty) and the stages after it
    are :class:`NotEstimated`: the estimate never stops a run that validation let through. The
    systems are initialised from the run's ``seed`` on a forked torch RNG (the run's own draws are
    not moved)."""
    from ..core.config import import_target
    from ..core.errors import UserError
    from ..core.preflight import pretrained_components
    from ..core.stages import overlay_fields, resolve_stage, stage_names
    from ..core.trainer import DEFAULT_SYSTEM
    from ..guidance.pretrained import resolve_pretrained_dir

    out, system, runtime = [], None, runtime_bytes(device)
    names = stage_names(cfg)
    with torch.random.fork_rng(devices=[]):  # the same estimate every time; the run's draws untouched
        torch.manual_seed(int(cfg.get("seed", 0) or 0))
        for i, name in enumerate(names):
            stage, where = resolve_stage(cfg, name), f"stage.{name}"
            models = [(p, resolve_pretrained_dir(m), k) for p, m, k in pretrained_components(stage, where)]
            built = dict(stage)
            if isinstance(built.get("geometry"), dict):  # a mesh's colours fitted at the hand-off change no size
                built["geometry"] = dict(built["geometry"])
                overlay_fields(built["geometry"], {"appearance_fit_steps": 0})
            try:
                system = import_target(built.pop("_target_", DEFAULT_SYSTEM))(built, where=where, previous=system)
            except UserError as e:
                if system is None:  # the first stage builds from its config alone: a real error
                    raise
                reason = f"it is built from the trained {names[i - 1]} stage; untrained: {e}"
                return out + [NotEstimated(later, reason if later == name else "as above") for later in names[i:]]
            out.append(estimate_stage(name, system, stage, models, device, runtime))
    return out


def print_memory_estimate(cfg: Any) -> None:
    """Print the memory estimate block on stderr (on the run's ``trainer.device``), with a warning
    when the largest stage exceeds the device's free memory."""
    import sys

    from ..core.config import to_container
    from ..core.heap import trim_heap
    from ..core.trainer import _resolve_device

    device = _resolve_device(str((to_container(cfg.get("trainer")) or {}).get("device", "auto")))
    text, too_big = report(memory_estimates(cfg, device), device)
    trim_heap()  # the probes' memory goes back before the run loads its models
    print(text, file=sys.stderr)
    if too_big:
        print(
            "warning: the estimate exceeds the free memory; lower data.batch_size / height / width, "
            "renderer.num_samples_per_ray, or set guidance.half_precision=true on a GPU",
            file=sys.stderr,
        )
