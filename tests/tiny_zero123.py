"""Build and save tiny Zero123 checkpoints (random weights) through the real diffusers layout.

``make_tiny_zero123(path, pixel_space=False, layout="ours")`` writes a pipeline directory that
:meth:`Zero123Pipeline.from_pretrained` loads like a real one. ``layout`` also produces the two
third-party layouts: ``"kxic"`` (``cc_projection/`` with a ``projection`` Linear, config
without sizes) and ``"ashawkey"`` (``clip_camera_projection/`` with ``proj``).
"""

from __future__ import annotations

import json
import os
import shutil

from tiny_models import ZERO123_EMBED_DIM as EMBED_DIM


def make_tiny_zero123(path: str, pixel_space: bool = False, layout: str = "ours", seed: int = 0) -> str:
    """Save a tiny Zero123 pipeline to ``path`` (see module doc) and return ``path``."""
    from safetensors.torch import save_file
    from tiny_models import make_tiny_zero123_components

    from threestudio_like.guidance.zero123_pipeline import Zero123Pipeline

    pipe = Zero123Pipeline(**make_tiny_zero123_components(pixel_space, seed))
    pipe.save_pretrained(path)
    if layout == "ours":
        return path
    index_file = os.path.join(path, "model_index.json")
    with open(index_file) as f:
        index = json.load(f)
    weight = pipe.cc_projection.proj.weight.detach().contiguous()
    bias = pipe.cc_projection.proj.bias.detach().contiguous()
    shutil.rmtree(os.path.join(path, "cc_projection"))
    del index["cc_projection"]
    if layout == "kxic":
        folder, key, config = "cc_projection", "projection", {"_class_name": "CCProjection"}
        index[folder] = ["pipeline_zero1to3", "CCProjection"]
    elif layout == "ashawkey":
        folder, key = "clip_camera_projection", "proj"
        config = {"_class_name": "CLIPCameraProjection", "embedding_dim": EMBED_DIM, "additional_embeddings": 4}
        index[folder] = ["zero123", "CLIPCameraProjection"]
    else:
        raise ValueError(layout)
    os.makedirs(os.path.join(path, folder))
    save_file(
        {f"{key}.weight": weight, f"{key}.bias": bias},
        os.path.join(path, folder, "diffusion_pytorch_model.safetensors"),
    )
    with open(os.path.join(path, folder, "config.json"), "w") as f:
        json.dump(config, f)
    with open(index_file, "w") as f:
        json.dump(index, f)
    return path
