"""Train the toy multi-view prior: ``python -m threestudio_like.toyworld.train_mvdream``.

The toy world's MVDream (``guidance=mvdream`` with ``models.mvdream`` = this prior and
``models.sd`` = the toy SD pipeline ``assets/toy-sd``, whose text encoder, pixel space and noise
schedule it shares): the toy SD's UNet made multi-view (:func:`~..guidance.mvdream_unet.make_multiview`:
self-attention across the 4 views of a sample) and conditioned on MVDream's camera input
(:func:`~..guidance.mvdream_unet.camera_condition`), fine-tuned from the toy SD's weights as
MVDream was from SD's, with the camera MLP's last layer zeroed (at the start the camera adds
nothing to the time embedding).

Each sample is 4 views of one toy object (shape × colour) 90° apart in azimuth with one
elevation, distance and field of view — the default experiment's cameras (:data:`.dataset.SD_CAMERAS`
sampled with ``n_views=4``, as ``data.n_views=4`` samples them) — rendered over the azimuth
backdrop the default experiment renders over (:mod:`.dataset`, cached in ``--work-dir``). Captions
``"a red mug"`` (no view suffix: the camera says which side is seen; ``--drop-prob`` of them empty
for classifier-free guidance), encoded once by the toy SD's frozen text encoder; ε-prediction
with one t per sample (its 4 views share it, as the guidance draws them) and the toy SD's noise
schedule, by :mod:`.training`'s loop. The EMA UNet is saved in the converted multi-view layout
(``config.json`` + weights) into ``--out`` (default: the package's ``assets/toy-mvdream``).
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..core.errors import UserError
from ..guidance.mvdream_unet import camera_condition, make_multiview
from .dataset import SD_CAMERAS, ToyDatasetConfig, make_dataset
from .priors import ASSETS, load_toy_sd
from .train_sd import CaptionTable, save_pipeline_atomically
from .training import denoising_loss, noised, prepare, train, train_parser

NUM_VIEWS = 4
"""Views per sample, 360°/4 apart in azimuth (MVDream's ``num_frames``)."""


def multiview_cameras() -> dict:
    """The default experiment's cameras (:data:`SD_CAMERAS`) sampled in groups of
    :data:`NUM_VIEWS` views of one camera (``data.n_views``)."""
    return {**SD_CAMERAS, "n_views": NUM_VIEWS}


def multiview_dataset(n_images: int, seed: int) -> dict[str, Tensor]:
    """``n_images`` renders (a multiple of 4), consecutive groups of :data:`NUM_VIEWS` views of
    one object, over the azimuth backdrop (:func:`.dataset.make_dataset`'s fields)."""
    return make_dataset(
        ToyDatasetConfig(n_images=n_images, cameras=multiview_cameras(), backdrop=True, seed=seed), progress=True
    )


def view_groups(data: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The dataset as samples: (images (G,V,H,W,3) uint8, cameras (G,V,4,4) camera-to-world) of
    its G = N/V groups of :data:`NUM_VIEWS` consecutive renders."""
    groups = data["images"].shape[0] // NUM_VIEWS
    images = data["images"][: groups * NUM_VIEWS].unflatten(0, (groups, NUM_VIEWS))
    return images, data["c2w"][: groups * NUM_VIEWS].unflatten(0, (groups, NUM_VIEWS))


def multiview_unet_from_sd(sd_unet: nn.Module) -> nn.Module:
    """A copy of the toy SD's UNet (its config has MVDream's 16-wide camera projection) with the
    camera MLP's last layer zeroed, made multi-view."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(sd_unet.config)
    unet.load_state_dict(sd_unet.state_dict())
    last = unet.class_embedding.linear_2
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return make_multiview(unet, NUM_VIEWS)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = train_parser(__doc__.splitlines()[0], str(ASSETS / "toy-mvdream"), n_images=16384)
    parser.set_defaults(steps=4000, lr=3e-4)  # a fine-tune: the shipped prior's recipe
    parser.add_argument("--drop-prob", type=float, default=0.1, help="empty captions (for CFG)")
    parser.add_argument("--sd", default=str(ASSETS / "toy-sd"), help="the toy SD pipeline to start from")
    args = parser.parse_args(argv)
    if args.n_images % NUM_VIEWS or args.batch_size % NUM_VIEWS:
        raise UserError(f"--n-images and --batch-size must be multiples of {NUM_VIEWS} (views per sample)")
    cfg, data = prepare(args, "mvdream", multiview_dataset)
    parts = load_toy_sd(args.sd)
    scheduler, table = parts["scheduler"], CaptionTable(parts["tokenizer"])
    with torch.no_grad():
        texts = parts["text_encoder"](table.ids)[0]  # (captions, tokens, 64): the frozen encoder's
    images, c2w = view_groups(data)
    groups = images.shape[0]
    cameras = camera_condition(c2w.flatten(0, 1)).unflatten(0, (groups, NUM_VIEWS))  # (G,V,16)
    modules = nn.ModuleDict({"unet": multiview_unet_from_sd(parts["unet"])})
    dev = torch.device(cfg.device)

    def loss_fn(gen: torch.Generator) -> Tensor:
        g = cfg.batch_size // NUM_VIEWS
        idx = torch.randint(0, groups, (g,), generator=gen)
        x0 = images[idx].to(dev).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # (g, V, 3, H, W)
        t, noise, noisy = noised(x0, scheduler, gen)  # one t per sample, shared by its views
        first = idx * NUM_VIEWS  # every view of a sample has its shape and colour
        rows = table.rows(
            data["shape"][first],
            data["color"][first],
            torch.zeros_like(idx),
            torch.zeros(g, dtype=torch.bool),
            torch.rand(g, generator=gen) < args.drop_prob,
        )
        text = texts[rows].to(dev).repeat_interleave(NUM_VIEWS, dim=0)
        t = t.repeat_interleave(NUM_VIEWS)
        eps = modules["unet"](
            noisy.flatten(0, 1), t, encoder_hidden_states=text, class_labels=cameras[idx].to(dev).flatten(0, 1)
        ).sample
        return denoising_loss(eps, noise.flatten(0, 1), t, scheduler, cfg.snr_gamma)

    summary = train(modules, loss_fn, cfg, args.work_dir, lambda ema: save_pipeline_atomically(ema["unet"], args.out))
    summary.update(out=args.out, n_images=int(data["images"].shape[0]))
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
