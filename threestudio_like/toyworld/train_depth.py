"""Train the toy depth model: ``python -m threestudio_like.toyworld.train_depth --work-dir DIR``.

A small transformers ``DepthAnythingForDepthEstimation`` (:func:`build_toy_depth`: a DINOv2
backbone of width 64, 4 blocks, on 64² images in 8-pixel patches; Depth Anything's DPT neck and
head, relative depth) trained on toy photos (:mod:`.photos`) seen as ``preprocess`` shows them to
the depth model: the photo framed around the object's mask as a segmenter gives it (``--sam
DIR``, or the true mask with made-up errors: :func:`.photo_training.training_masks`), background
included, through the DPT image processor. The target
is the renderer's truth as a disparity, 1 / depth, on the object; the loss is 1 − the Pearson
correlation of the prediction with it over the object's pixels — the measure Make-It-3D's depth
loss uses, blind to the map's scale and shift. Images are flipped left-right at random. The EMA
weights are saved in float16 (half the size: the asset budget) with the image processor into
``--out`` (default: the package's ``assets/toy-depth``), where ``threestudio-like preprocess
--depth DIR`` loads them. ``--init-from DIR`` continues from a saved toy depth model's weights
(a new warm-up and cosine decay from ``--lr``).
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..preprocess.framing import Framing
from .photo_training import (
    depth_input,
    load_model_and_processor,
    photo_train_parser,
    prepare_photos,
    save_model_and_processor,
    training_masks,
)
from .priors import ASSETS
from .training import train

IMAGE_SIZE = 64
"""The model's input side."""
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def build_toy_depth(seed: int = 0) -> tuple[Any, Any]:
    """(a freshly initialized small ``DepthAnythingForDepthEstimation``, its image processor)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessorPil

    torch.manual_seed(seed)
    backbone = Dinov2Config(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        patch_size=8,
        image_size=IMAGE_SIZE,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    model = DepthAnythingForDepthEstimation(
        DepthAnythingConfig(
            backbone_config=backbone,
            patch_size=8,
            reassemble_hidden_size=64,
            reassemble_factors=[2, 1, 0.5, 0.25],
            neck_hidden_sizes=[16, 32, 64, 64],
            fusion_hidden_size=32,
            head_hidden_size=16,
        )
    )
    with torch.no_grad():  # start the final ReLU's input positive: a dead head learns nothing
        model.head.conv3.bias.fill_(1.0)
    processor = DPTImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        keep_aspect_ratio=False,
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    return model, processor


def depth_dataset(photos: dict[str, Any], processor: Any, masks: list[np.ndarray]) -> dict[str, Tensor]:
    """``pixel_values`` (N,3,S,S) of each framed photo as the depth model sees it, its true
    ``disparity`` (N,S,S) in the same frame, and ``valid`` (N,S,S) bool: the object's interior
    pixels, where the disparity is known."""
    images, disparities, valid = [], [], []
    for rgb, mask, depth, seen in zip(photos["rgb"].numpy(), photos["mask"].numpy(), photos["depth"].numpy(), masks):
        image, framing = depth_input(rgb, seen)
        small = Framing(framing.box, IMAGE_SIZE)
        coverage = small.apply(mask.astype(np.float32), "bilinear")
        disparity = small.apply(np.where(mask, 1.0 / np.maximum(depth, 1e-6), 0.0), "bilinear")
        images.append(image)
        valid.append(coverage > 0.999)
        disparities.append(np.where(valid[-1], disparity / np.maximum(coverage, 1e-6), 0.0))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    return {
        "pixel_values": pixels,
        "disparity": torch.from_numpy(np.stack(disparities).astype(np.float32)),
        "valid": torch.from_numpy(np.stack(valid)),
    }


def pearson_loss(predicted: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean over the batch of 1 − the Pearson correlation of ``predicted`` and ``target`` (B,H,W)
    over the ``valid`` (B,H,W) pixels."""
    w = valid.float()
    count = w.sum(dim=(1, 2)).clamp(min=1.0)

    def centred(x: Tensor) -> Tensor:
        return (x - (x * w).sum(dim=(1, 2), keepdim=True) / count.view(-1, 1, 1)) * w

    p, t = centred(predicted), centred(target)
    r = (p * t).sum(dim=(1, 2)) / ((p.pow(2).sum(dim=(1, 2)) * t.pow(2).sum(dim=(1, 2))).sqrt() + 1e-8)
    return (1.0 - r).mean()


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = photo_train_parser(
        __doc__.splitlines()[0],
        str(ASSETS / "toy-depth"),
        n_photos=4000,
        steps=3000,
        batch_size=16,
        lr=1e-3,
        masks=True,
    )
    args = parser.parse_args(argv)
    if args.init_from:
        from transformers import AutoImageProcessor, DepthAnythingForDepthEstimation

        model, processor = load_model_and_processor(DepthAnythingForDepthEstimation, AutoImageProcessor, args.init_from)
    else:
        model, processor = build_toy_depth(args.seed)
    cfg, data = prepare_photos(
        args, "depth", lambda photos: depth_dataset(photos, processor, training_masks(photos, args.sam, args.seed))
    )
    pixels, disparity, valid = data["pixel_values"], data["disparity"], data["valid"]
    n = pixels.shape[0]
    modules = nn.ModuleDict({"depth": model})
    dev = torch.device(cfg.device)

    def loss_fn(gen: torch.Generator) -> Tensor:
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        x, t, v = (
            torch.where(flip.view(-1, *[1] * (a.dim() - 1)), a[idx].flip(-1), a[idx])
            for a in (pixels, disparity, valid)
        )
        predicted = modules["depth"](pixel_values=x.to(dev)).predicted_depth
        return pearson_loss(predicted, t.to(dev), v.to(dev))

    def export(ema: nn.ModuleDict) -> None:
        save_model_and_processor(ema["depth"], processor, args.out, half=True)

    summary = train(modules, loss_fn, cfg, args.work_dir, export)
    summary.update(out=args.out, n_photos=n)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
