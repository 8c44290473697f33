"""``threestudio-like preprocess PHOTO …`` (also ``python -m threestudio_like.preprocess``).

Every bad input — a missing, corrupt or unsupported photo, a prompt outside it, a model that is
not there, a segmentation that finds nothing, a bad flag — is one ``error:`` line on stderr and
exit status 2, with nothing written. Progress goes to stderr, one line a step.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

from ..core.errors import CommandParser, exit_status
from ..core.transformers_output import quiet_transformers

DESCRIPTION = """\
Photo → the inputs of image-to-3D, in OUT (default: the photo's folder), named after the photo:
  NAME_rgba.png         the object cut out, centred in a square, its longer side FILL of the frame
  NAME_mask.png         its mask (white = object), same frame
  NAME_depth.npy/.png   monocular disparity (1 = nearest), object only; the .png is 16-bit
  NAME_caption.txt      BLIP's caption of the object: a text prompt
  NAME_preprocess.json  models, prompts, crop box, the view's elevation (--zero123 / --elevation)

Segmentation: SAM with the --point/--box prompts given, else automatic (the most salient object
near the centre). A photo whose alpha channel already cuts the object out is used as it is,
unless --segment or a prompt asks for SAM. Models: a hub id (from the local Hugging Face cache
only: `huggingface-cli download ID` once) or a local directory; --sam also takes an original
segment-anything checkpoint (sam_vit_h_4b8939.pth …). --zero123 estimates the elevation of the
photo's view with that Zero123 prior (the candidate elevation under which the views it draws agree
best with the photo's silhouette); --elevation records a known one."""

EXAMPLES = """\
examples:
  threestudio-like preprocess chair.jpg                      # automatic: the object near the centre
  threestudio-like preprocess chair.jpg --point 410,300      # the object under this pixel
  threestudio-like preprocess chair.jpg --box 120,80,700,560 --out inputs/
  threestudio-like preprocess chair.jpg --sam sam_vit_b_01ec64.pth --no-depth
  threestudio-like preprocess chair.jpg --zero123 kxic/zero123-xl-diffusers   # + the elevation
then: python launch.py experiment=makeit3d image=chair_rgba.png depth=chair_depth.npy prompt="$(cat chair_caption.txt)"
More: docs/preprocess.md."""


def parser() -> argparse.ArgumentParser:
    from .caption import Captioner
    from .depth import DepthEstimator
    from .pipeline import PhotoPreprocessor
    from .segment import SamSegmenter

    defaults = PhotoPreprocessor.Config()
    p = CommandParser(
        prog="threestudio-like preprocess",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=26, width=100),
    )
    p.add_argument("photo", metavar="PHOTO", help="the photo (JPEG, PNG, TIFF, WebP …; EXIF orientation applied)")
    p.add_argument(
        "--point",
        metavar="X,Y",
        action="extend",
        nargs="+",
        type=_point,
        default=[],
        help="a pixel on the object (x right, y down from the top-left corner); several: --point 1,2 3,4",
    )
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", type=_box, help="a box around the object, in pixels")
    p.add_argument("--out", metavar="DIR", help="output directory (default: the photo's folder)")
    p.add_argument("--sam", metavar="MODEL", default=SamSegmenter.Config.model, help="SAM model (default: %(default)s)")
    p.add_argument(
        "--blip", metavar="MODEL", default=Captioner.Config.model, help="BLIP or BLIP-2 model (default: %(default)s)"
    )
    p.add_argument(
        "--depth", metavar="MODEL", default=DepthEstimator.Config.model, help="depth model (default: %(default)s)"
    )
    p.add_argument(
        "--zero123",
        metavar="MODEL",
        help="estimate the elevation of the photo's view with this Zero123 prior (e.g. kxic/zero123-xl-diffusers)",
    )
    p.add_argument(
        "--elevation",
        metavar="DEG",
        type=float,
        help="the photo's elevation in degrees, when known (recorded; nothing estimated)",
    )
    p.add_argument("--no-caption", action="store_true", help="no caption (no BLIP)")
    p.add_argument("--no-depth", action="store_true", help="no depth map (no depth model)")
    p.add_argument(
        "--segment", action="store_true", help="segment with SAM even if the photo's alpha cuts the object out"
    )
    p.add_argument(
        "--edge-radius",
        metavar="R",
        type=float,
        default=SamSegmenter.Config.edge_radius,
        help="snap SAM's mask edge to the photo's edges within R of SAM's low-resolution mask pixels "
        "(guided filter; 0: off; default: %(default)s)",
    )
    p.add_argument(
        "--fill",
        metavar="F",
        type=float,
        default=defaults.fill,
        help="fraction of the frame the object's longer side spans (default: %(default)s)",
    )
    p.add_argument(
        "--size", metavar="N", type=int, default=defaults.size, help="output side in pixels (default: %(default)s)"
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N (default: %(default)s)"
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command on ``argv`` (``sys.argv[1:]`` by default); the exit status."""
    return exit_status(run, argv)


def run(argv: list[str]) -> None:
    from .pipeline import PhotoPreprocessor

    args = parser().parse_args(argv)
    cfg: dict[str, Any] = {
        "size": args.size,
        "fill": args.fill,
        "segment": args.segment,
        "caption": not args.no_caption,
        "depth": not args.no_depth,
        "elevation_deg": args.elevation,
        "segmenter": {"model": args.sam, "device": args.device, "edge_radius": args.edge_radius},
        "captioner": {"model": args.blip, "device": args.device},
        "depth_estimator": {"model": args.depth, "device": args.device},
    }
    quiet_transformers()
    estimator = None
    if args.zero123 is not None and args.elevation is None:
        from .elevation import ElevationEstimator

        estimator = ElevationEstimator({"model": args.zero123, "device": args.device}, where="--zero123")
    PhotoPreprocessor(cfg, log=_progress, estimate_elevation=estimator).run(args.photo, args.out, args.point, args.box)


def _progress(message: str) -> None:
    print(f"preprocess: {message}", file=sys.stderr, flush=True)


def _numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    parts = text.split(",")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != count or len(parts) != count:
        raise argparse.ArgumentTypeError(f"takes {what} ({count} numbers separated by commas), got '{text}'")
    return values


def _point(text: str) -> tuple[float, float]:
    x, y = _numbers(text, 2, "X,Y")
    return x, y


def _box(text: str) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = _numbers(text, 4, "X0,Y0,X1,Y1")
    return x0, y0, x1, y1
