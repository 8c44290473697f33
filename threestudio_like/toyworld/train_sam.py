"""Train the toy SAM: ``python -m threestudio_like.toyworld.train_sam --work-dir DIR``.

A small transformers ``SamModel`` (:func:`build_toy_sam`: a ViT encoder of width 64, 4 blocks —
two windowed, two global — on 96² inputs in 6-pixel patches, its neck to 96 channels; SAM's
prompt encoder and two-way mask decoder of width 96) trained on toy photos (:mod:`.photos`) as SAM
is, from prompts:

- **single points**, three candidate masks each (SAM's multimask output): one on the object, one
  on the distractor toy (on the object when there is none), one on the background; the target is
  the toy the point lies on — the object, or the distractor's visible part — and no mask for a
  point on the background (so that ``preprocess``'s automatic mode, whose grid of point prompts
  mostly lands on the background, meets empty candidates there and picks a toy);
- **a box** around the object (or, a fifth of the time, the distractor), jittered by up to 3
  pixels: SAM's single-mask output.

The mask loss is binary cross-entropy plus the Dice loss on the logits upsampled to the photo (the
upsampling of ``preprocess.segment``), averaged over the candidate masks (the toy world has no
part/whole ambiguity, so all three learn the toy); SAM's IoU head learns each candidate's IoU with
its target (mean squared error; 0 for the background's empty target). Images are flipped
left-right at random. The EMA weights are saved in float16 with a ``SamProcessor`` (longest side
96, ImageNet mean/std) into ``--out`` (default: the package's ``assets/toy-sam``), where
``threestudio-like preprocess --sam DIR`` loads them. ``--init-from DIR`` continues from a saved
toy SAM's weights (a new warm-up and cosine decay from ``--lr``).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .photo_training import photo_train_parser, prepare_photos, save_dir_atomically
from .priors import ASSETS
from .training import train

INPUT_SIZE = 96
"""The encoder's input side (the toy photos' size)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_toy_sam(seed: int = 0) -> Any:
    """A freshly initialized small ``SamModel`` (see the module docstring)."""
    from transformers import SamConfig, SamModel

    torch.manual_seed(seed)
    config = SamConfig(
        vision_config=dict(
            hidden_size=64,
            output_channels=96,
            num_hidden_layers=4,
            num_attention_heads=4,
            image_size=INPUT_SIZE,
            patch_size=6,
            window_size=8,
            global_attn_indexes=[1, 3],
            mlp_dim=128,
            num_pos_feats=48,
            # transformers' SamVisionConfig defaults suit loading trained weights, not training: its
            # initializer_range of 1e-10 leaves the encoder's output constant (the decoder then ignores
            # the image), and the prompt encoder's random Fourier features are drawn with std width/2
            # (SAM's own: 1), so that nearby points get unrelated encodings
            initializer_range=0.02,
            scale=1.0,
        ),
        prompt_encoder_config=dict(hidden_size=96, image_size=INPUT_SIZE, patch_size=6, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=96, mlp_dim=192, num_attention_heads=4, iou_head_hidden_dim=96),
    )
    return SamModel(config)


def load_toy_sam(directory: str) -> Any:
    """A saved toy SAM (``--out`` of an earlier training) in float32, to train further."""
    from transformers import SamModel

    return SamModel.from_pretrained(directory, torch_dtype=torch.float32)


def save_toy_sam(model: Any, out: str) -> None:
    """``model`` with float16 weights (within the 3 MB asset budget) and its processor (longest side
    :data:`INPUT_SIZE`, ImageNet mean/std) into ``out``, atomically."""
    from transformers import SamImageProcessorPil, SamProcessor

    def write(directory: str) -> None:
        copy.deepcopy(model).half().save_pretrained(directory)
        size, pad = {"longest_edge": INPUT_SIZE}, {"height": INPUT_SIZE, "width": INPUT_SIZE}
        processor = SamImageProcessorPil(
            size=size, pad_size=pad, mask_pad_size=pad, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD)
        )
        SamProcessor(processor).save_pretrained(directory)

    save_dir_atomically(out, write)


def normalize(rgb: Tensor) -> Tensor:
    """(B,H,W,3) uint8 → (B,3,H,W) float, ImageNet mean/std (``preprocess.segment``'s normalization)."""
    x = rgb.permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean.to(x)) / std.to(x)


def sample_points(regions: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """(B,H,W) bool regions (each non-empty) → (B,k,2) float (x, y) pixel indices drawn uniformly from each."""
    w = regions.shape[-1]
    flat = torch.multinomial(regions.flatten(1).float(), k, replacement=True, generator=gen)
    return torch.stack([flat % w, flat // w], dim=-1).float()


def upsample(low: Tensor, size: int) -> Tensor:
    """(...,L,L) low-resolution mask logits → (...,size,size), bilinear (the preprocessing's upsampling)."""
    lead = low.shape[:-2]
    x = F.interpolate(low.reshape(-1, 1, *low.shape[-2:]).float(), (size, size), mode="bilinear", align_corners=False)
    return x.reshape(*lead, size, size)


def mask_losses(low: Tensor, iou: Tensor, target: Tensor) -> Tensor:
    """BCE + Dice of candidate masks ``low`` (B,P,C,L,L) against ``target`` (B,P,H,W) bool, plus the
    IoU head's squared error against each candidate's true IoU (``iou`` (B,P,C))."""
    logits = upsample(low, target.shape[-1])
    t = target[:, :, None].float().expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean(dim=(-2, -1))
    p = torch.sigmoid(logits)
    dice = 1.0 - (2.0 * (p * t).sum(dim=(-2, -1)) + 1.0) / (p.sum(dim=(-2, -1)) + t.sum(dim=(-2, -1)) + 1.0)
    with torch.no_grad():
        hard = logits > 0
        inter = (hard & (t > 0)).sum(dim=(-2, -1)).float()
        union = (hard | (t > 0)).sum(dim=(-2, -1)).float()
        true_iou = inter / union.clamp(min=1.0)
    return (bce + dice).mean() + F.mse_loss(iou.float(), true_iou)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = photo_train_parser(
        __doc__.splitlines()[0], str(ASSETS / "toy-sam"), n_photos=4000, steps=4000, batch_size=16, lr=3e-3
    )
    args = parser.parse_args(argv)
    cfg, data = prepare_photos(
        args,
        "sam",
        lambda photos: {k: photos[k] for k in ("rgb", "mask", "distractor_mask")},
    )
    rgb, obj, dis = data["rgb"], data["mask"], data["distractor_mask"]
    n, size = rgb.shape[0], rgb.shape[1]
    modules = nn.ModuleDict({"sam": load_toy_sam(args.init_from) if args.init_from else build_toy_sam(cfg.seed)})
    dev = torch.device(cfg.device)

    def loss_fn(gen: torch.Generator) -> Tensor:
        sam, b = modules["sam"], cfg.batch_size
        idx = torch.randint(0, n, (b,), generator=gen)
        flip = torch.rand(b, generator=gen) < 0.5
        image, o, d = (flip_where(x[idx], flip) for x in (rgb, obj, dis))
        has_d = d.flatten(1).any(dim=1)
        d = torch.where(has_d.view(-1, 1, 1), d, o)  # no distractor: another point on the object
        bg = ~(o | d)
        embeddings = sam.get_image_embeddings(normalize(image).to(dev))

        # 1. single points, three candidates: object, distractor, background (no mask)
        targets = torch.stack([o, d, torch.zeros_like(bg)], dim=1)  # (B,3,H,W)
        points = torch.cat([sample_points(o, 1, gen), sample_points(d, 1, gen), sample_points(bg, 1, gen)], dim=1)
        out = sam(
            image_embeddings=embeddings,
            input_points=points[:, :, None].to(dev),
            input_labels=torch.ones(b, 3, 1, dtype=torch.long, device=dev),
            multimask_output=True,
        )
        loss = mask_losses(out.pred_masks, out.iou_scores, targets.to(dev))

        # 2. a box (of the object, or of the distractor), one mask
        on_d = has_d & (torch.rand(b, generator=gen) < 0.2)
        boxed = torch.where(on_d.view(-1, 1, 1), d, o)
        boxes = torch.stack([box_of(m) for m in boxed]) + torch.randint(-3, 4, (b, 4), generator=gen).float()
        boxes = boxes.clamp(0, size)
        out = sam(image_embeddings=embeddings, input_boxes=boxes[:, None].to(dev), multimask_output=False)
        return loss + mask_losses(out.pred_masks, out.iou_scores, boxed[:, None].to(dev))

    summary = train(modules, loss_fn, cfg, args.work_dir, lambda ema: save_toy_sam(ema["sam"], args.out))
    summary.update(out=args.out, n_photos=n)
    print(json.dumps(summary), flush=True)
    return summary


def flip_where(x: Tensor, flip: Tensor) -> Tensor:
    """(B,H,W,…) images with those where ``flip`` (B,) bool is set mirrored left-right."""
    return torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(2), x)


def box_of(mask: Tensor) -> Tensor:
    """(4,) float (x0, y0, x1, y1) of a non-empty (H,W) bool mask, x1/y1 exclusive."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


if __name__ == "__main__":
    main()
