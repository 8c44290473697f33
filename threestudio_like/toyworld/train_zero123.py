"""Train the toy view-conditioned prior: ``python -m threestudio_like.toyworld.train_zero123``.

Renders the toy dataset with the image-to-3D cameras (:data:`.dataset.ZERO123_CAMERAS`), unlit
albedo (the shading of the toy image-to-3D system and of its reference images) or, for a
``--lit-prob`` share of it (default none: the shipped prior), lit from the camera (or near it,
``--light-jitter``), and trains the pixel-space Zero123 model of :func:`.priors.build_toy_zero123`
on pairs of views of the same (shape, colour) and shading: the UNet sees ``[noisy target;
reference image]`` and the context ``cc_projection([CLIP(reference), pose(target relative to reference)])``
(:func:`~threestudio_like.guidance.zero123_pipeline.relative_pose`); ``--drop-prob`` of the pairs
drop both (zero context, zero reference) for classifier-free guidance, exactly the unconditional
input of :meth:`Zero123Pipeline.predict_noise`. Saves the EMA weights with ``save_pretrained``
into ``--out`` (default: the package's ``assets/toy-zero123``; ``--half``: in float16);
``--init-from DIR`` starts from a saved toy Zero123 instead of random weights.
``--target-backdrop`` renders the targets over the toy SD's azimuth backdrop (each target's
background then shows its yaw, as the toy SD's images do) and keeps the references over white,
as the image-to-3D systems give them.
``--pose-embedding stable_zero123`` gives the pose Stable Zero123's last entry, the reference's
polar angle, in place of Δradius; ``--light-jitter`` turns the lit renders' light about the camera
direction, as the toy photos are lit. ``--reference-fill`` frames the references as ``preprocess``
frames a photo (the targets stay as rendered), and ``--own-view-prob`` makes that share of the
targets the reference's own view.
"""

from __future__ import annotations

import copy
import json
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..guidance.zero123_pipeline import POSE_EMBEDDINGS, Zero123Pipeline, relative_pose
from .dataset import ZERO123_CAMERAS, ToyDatasetConfig, make_dataset
from .priors import ASSETS, build_toy_zero123, load_toy_zero123
from .shapes import COLORS
from .train_sd import save_pipeline_atomically
from .training import add_unet_channels_flag, denoising_loss, noised, prepare, train, train_parser


def same_class_partner(classes: Tensor, idx: Tensor, gen: torch.Generator) -> Tensor:
    """For each index in ``idx`` a uniformly drawn index with the same class (itself possible)."""
    order = torch.argsort(classes, stable=True)
    counts = torch.bincount(classes)
    starts = torch.cumsum(counts, 0) - counts
    k = classes[idx]
    offset = (torch.rand(idx.shape[0], generator=gen) * counts[k]).long().clamp(max=counts[k] - 1)
    return order[starts[k] + offset]


def framed_references(images: Tensor, alpha: Tensor, fill: float) -> Tensor:
    """(N,H,W,3) uint8 renders over white, (N,H,W) uint8 alpha → the renders framed as
    ``preprocess`` frames a photo (:func:`~threestudio_like.preprocess.framing.frame_object`:
    the bounding box of alpha ≥ 0.5 centred, its longer side ``fill`` of the frame; Lanczos,
    the border's white beyond the render)."""
    from ..preprocess.framing import frame_object
    from ..preprocess.masks import bounding_box

    out = torch.empty_like(images)
    size = images.shape[1]
    for i in range(images.shape[0]):
        framing = frame_object(bounding_box(alpha[i].numpy() >= 128), fill, size)
        framed = framing.apply(images[i].numpy() / 255.0, "lanczos", pad="edge")
        out[i] = torch.from_numpy(np.round(np.clip(framed, 0.0, 1.0) * 255.0).astype(np.uint8))
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = train_parser(__doc__.splitlines()[0], str(ASSETS / "toy-zero123"), n_images=12000)
    parser.add_argument("--drop-prob", type=float, default=0.1, help="unconditional pairs (for CFG)")
    parser.add_argument(
        "--attention-levels", type=int, default=2, help="UNet levels with cross-attention (1: 8², 2: 16² and 8²)"
    )
    add_unet_channels_flag(parser)
    parser.add_argument("--lit-prob", type=float, default=0.0, help="share of the renders lit (see --light-jitter)")
    parser.add_argument(
        "--light-jitter",
        type=float,
        default=0.0,
        help="std of the lit renders' light direction around the camera's (the camera sampler's "
        "light_position_perturb; 0: a headlight, 0.8: about 24°, as the toy photos' light)",
    )
    parser.add_argument(
        "--target-backdrop",
        action="store_true",
        help="render the targets over the azimuth backdrop (the toy SD's), the references over white",
    )
    parser.add_argument(
        "--pose-embedding",
        choices=POSE_EMBEDDINGS,
        default="zero123",
        help="zero123: Δradius last (the shipped prior); stable_zero123: the reference's polar angle last",
    )
    parser.add_argument(
        "--reference-fill",
        type=float,
        default=0.0,
        help="frame the references as preprocess frames a photo: centred on their bounding box, "
        "spanning this fraction of the side (default 0: as rendered); the targets stay as rendered",
    )
    parser.add_argument(
        "--own-view-prob",
        type=float,
        default=0.0,
        help="share of the pairs whose target is the reference's own view (with --reference-fill: "
        "the reference as rendered, which the elevation estimator's align_input draws)",
    )
    parser.add_argument(
        "--half", action="store_true", help="save the weights in float16 (half the size; they load in float32)"
    )
    parser.add_argument("--init-from", help="a saved toy Zero123 to start from (default: random weights)")
    parser.add_argument(
        "--elevation-range",
        type=float,
        nargs=2,
        default=ZERO123_CAMERAS["elevation_range"],
        metavar=("LOW", "HIGH"),
        help="elevations of the rendered views, degrees (default: the image-to-3D cameras')",
    )
    args = parser.parse_args(argv)
    name = "zero123-lit{:g}-elevation{:g}to{:g}".format(args.lit_prob, *args.elevation_range)
    if args.light_jitter:
        name += f"-light{args.light_jitter:g}"

    def renders(backdrop: bool) -> Callable[[int, int], dict]:
        return lambda n, seed: make_dataset(
            ToyDatasetConfig(
                n_images=n,
                cameras=dict(
                    ZERO123_CAMERAS,
                    elevation_range=list(args.elevation_range),
                    light_position_perturb=args.light_jitter,
                ),
                albedo_prob=1.0 - args.lit_prob,
                seed=seed,
                backdrop=backdrop,
            ),
            progress=True,
        )

    cfg, data = prepare(args, name, renders(False))
    targets = data["images"]
    if args.target_backdrop:  # the same seed draws the same cameras and shading: only the background differs
        targets = prepare(args, name + "-backdrop", renders(True))[1]["images"]
    parts = build_toy_zero123(seed=cfg.seed, attention_levels=args.attention_levels, channels=args.unet_channels)
    if args.init_from:
        parts.update(load_toy_zero123(args.init_from))
    pipe = Zero123Pipeline(**parts)
    scheduler = parts["scheduler"]
    modules = nn.ModuleDict({k: parts[k] for k in ("unet", "image_encoder", "cc_projection")})
    images, n = data["images"], data["images"].shape[0]
    references = framed_references(images, data["alpha"], args.reference_fill) if args.reference_fill else images
    dev = torch.device(cfg.device)
    classes = (data["shape"] * len(COLORS) + data["color"]) * 2 + data["lit"].long()

    def loss_fn(gen: torch.Generator) -> Tensor:
        b = cfg.batch_size
        idx = torch.randint(0, n, (b,), generator=gen)
        ref = same_class_partner(classes, idx, gen)
        if args.own_view_prob:  # (drawn only then: the other recipes' batches stay as they were)
            ref = torch.where(torch.rand(b, generator=gen) < args.own_view_prob, idx, ref)
        target = targets[idx].to(dev).permute(0, 3, 1, 2).float() / 255.0
        reference = references[ref].to(dev).permute(0, 3, 1, 2).float() / 255.0
        pose = relative_pose(
            data["elevation"][idx],
            data["azimuth"][idx],
            data["distance"][idx],
            data["elevation"][ref],
            data["azimuth"][ref],
            data["distance"][ref],
            args.pose_embedding,
        ).to(dev)
        context = pipe.conditioning(pipe.encode_image_embedding(reference), pose)
        ref_latent = pipe.encode_reference_latent(reference)
        keep = (torch.rand(b, generator=gen) >= args.drop_prob).float().to(dev)
        context, ref_latent = context * keep.view(b, 1, 1), ref_latent * keep.view(b, 1, 1, 1)
        t, noise, noisy = noised(target * 2.0 - 1.0, scheduler, gen)
        eps = modules["unet"](torch.cat([noisy, ref_latent], 1), t, encoder_hidden_states=context).sample
        return denoising_loss(eps, noise, t, scheduler, cfg.snr_gamma)

    def export(ema: nn.ModuleDict) -> None:
        if args.half:
            ema = copy.deepcopy(ema).half()
        out = Zero123Pipeline(
            vae=None,
            image_encoder=ema["image_encoder"],
            unet=ema["unet"],
            scheduler=scheduler,
            cc_projection=ema["cc_projection"],
            feature_extractor=parts["feature_extractor"],
        )
        save_pipeline_atomically(out, args.out)

    summary = train(modules, loss_fn, cfg, args.work_dir, export)
    summary.update(out=args.out, n_images=n)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
