"""Train the toy BLIP captioner: ``python -m threestudio_like.toyworld.train_blip --work-dir DIR``.

A small transformers ``BlipForConditionalGeneration`` (:func:`build_toy_blip`: ViT of width 64, 3
blocks, on 48² images in 6-pixel patches; a 2-block BERT text decoder of width 64 with
cross-attention) and a word-level ``BertTokenizer`` over the toy vocabulary (``a``, the colours,
the shapes: :func:`write_toy_vocab`), trained on toy photos (:mod:`.photos`) seen as
``preprocess`` shows them to the captioner: the object cut out by its mask — the mask a
segmenter gives (``--sam DIR``: that SAM's, from a point prompt; without, the true mask with
made-up errors: :func:`.photo_training.training_masks`) —, framed, over white, through the BLIP
image processor.
The target is the photo's caption, ``"a red cube"``, by BLIP's language-modelling loss (teacher
forcing from BLIP's ``[DEC]`` start token, to its ``[SEP]`` end). Images are flipped left-right at
random. The EMA weights are saved with a ``BlipProcessor`` into ``--out`` (default: the package's
``assets/toy-blip``), where ``threestudio-like preprocess --blip DIR`` loads them. ``--init-from
DIR`` continues from a saved toy BLIP's weights and processor (a new warm-up and cosine decay from ``--lr``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .photo_training import (
    caption_input,
    load_model_and_processor,
    photo_train_parser,
    prepare_photos,
    save_model_and_processor,
    training_masks,
)
from .priors import ASSETS
from .shapes import COLORS, SHAPES
from .training import train

IMAGE_SIZE = 48
"""The vision model's input side."""
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
"""BERT's special tokens and BLIP's decoder start token."""


def write_toy_vocab(directory: str) -> str:
    """Write ``vocab.txt`` (the special tokens, ``a``, the toy colours and shapes) into ``directory``."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "vocab.txt")
    with open(path, "w") as f:
        f.write("\n".join([*SPECIAL_TOKENS, "a", *COLORS, *SHAPES]) + "\n")
    return path


def build_toy_blip(work_dir: str, seed: int = 0) -> tuple[Any, Any]:
    """(a freshly initialized small ``BlipForConditionalGeneration``, its ``BlipProcessor``)."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    tokenizer = BertTokenizer(write_toy_vocab(os.path.join(work_dir, "tokenizer")), bos_token="[DEC]")
    processor = BlipProcessor(BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer)
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=64,
            encoder_hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=40,  # [DEC] and up to 30 new tokens (preprocess's longest caption)
            bos_token_id=tokenizer.bos_token_id,
            sep_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.sep_token_id,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=6,
            initializer_range=0.02,  # BlipVisionConfig's default, 1e-10, suits loading weights, not training
        ),
        projection_dim=64,
    )
    return BlipForConditionalGeneration(config), processor


def caption_dataset(photos: dict[str, Any], processor: Any, masks: list[np.ndarray]) -> dict[str, Tensor]:
    """``pixel_values`` (N,3,S,S) of each photo's object cut out by its mask in ``masks`` as the
    captioner sees it, and its caption's ``input_ids`` (N,L) starting with ``[DEC]``."""
    images = [caption_input(rgb.numpy(), mask) for rgb, mask in zip(photos["rgb"], masks)]
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    ids = processor.tokenizer([t["caption"] for t in photos["truths"]], return_tensors="pt").input_ids
    ids[:, 0] = processor.tokenizer.bos_token_id
    return {"pixel_values": pixels, "input_ids": ids}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = photo_train_parser(
        __doc__.splitlines()[0], str(ASSETS / "toy-blip"), n_photos=4000, steps=3000, batch_size=32, lr=1e-3, masks=True
    )
    args = parser.parse_args(argv)
    if args.init_from:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        model, processor = load_model_and_processor(BlipForConditionalGeneration, BlipProcessor, args.init_from)
    else:
        model, processor = build_toy_blip(args.work_dir, args.seed)
    cfg, data = prepare_photos(
        args, "blip", lambda photos: caption_dataset(photos, processor, training_masks(photos, args.sam, args.seed))
    )
    pixels, ids, n = data["pixel_values"], data["input_ids"], data["input_ids"].shape[0]
    modules = nn.ModuleDict({"blip": model})
    dev = torch.device(cfg.device)

    def loss_fn(gen: torch.Generator) -> Tensor:
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), pixels[idx].flip(-1), pixels[idx]).to(dev)
        return modules["blip"](pixel_values=x, input_ids=ids[idx].to(dev), labels=ids[idx].to(dev)).loss

    summary = train(
        modules, loss_fn, cfg, args.work_dir, lambda ema: save_model_and_processor(ema["blip"], processor, args.out)
    )
    summary.update(out=args.out, n_photos=n)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
