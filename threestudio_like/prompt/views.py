"""View-dependent prompting (DreamFusion): which view a camera sees, and the suffixed prompt.

A camera is ``overhead`` if its elevation is above ``overhead_threshold``; otherwise ``front``
if ``|azimuth| ≤ front_threshold``, ``back`` if ``|azimuth| ≥ 180 − back_threshold``, else
``side``. Azimuth 0 is the front (+X, see ``data/cameras.py``). The suffixed prompt is
``"<prompt>, <view> view"`` — the same rule captions the toy world's training images.
"""

from __future__ import annotations

from torch import Tensor

VIEWS = ("front", "side", "back", "overhead")


def view_names(
    elevation_deg: Tensor,
    azimuth_deg: Tensor,
    front_threshold: float = 45.0,
    back_threshold: float = 45.0,
    overhead_threshold: float = 60.0,
) -> list[str]:
    """(B,) elevations and azimuths in degrees → B view names from :data:`VIEWS`."""
    az = ((azimuth_deg + 180.0) % 360.0 - 180.0).abs()
    names = []
    for e, a in zip(elevation_deg.tolist(), az.tolist()):
        if e > overhead_threshold:
            names.append("overhead")
        elif a <= front_threshold:
            names.append("front")
        elif a >= 180.0 - back_threshold:
            names.append("back")
        else:
            names.append("side")
    return names


def view_prompt(prompt: str, view: str) -> str:
    """``"<prompt>, <view> view"``."""
    return f"{prompt}, {view} view"
