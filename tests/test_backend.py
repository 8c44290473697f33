"""The one rule that picks a CUDA backend or its pure-torch twin (ops/backend.py), and its users."""

import pytest
import torch

from threestudio_like.core.errors import UserError
from threestudio_like.ops.backend import INSTALL_HINT, choose_backend
from threestudio_like.ops.hash_encoding import HashGridEncoding
from threestudio_like.ops.rasterize import Rasterizer
from threestudio_like.renderers.volume import VolumeRenderer

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def installed() -> bool:
    return True


def missing() -> bool:
    return False


def test_torch_is_always_torch():
    for available in (installed, missing):
        for device in (CPU, CUDA, None):
            assert choose_backend("torch", "fast", available, device, "x.implementation") == "torch"


def test_auto_picks_the_fast_backend_only_when_installed_and_on_cuda():
    assert choose_backend("auto", "fast", installed, CUDA, "x") == "fast"
    assert choose_backend("auto", "fast", missing, CUDA, "x") == "torch"
    assert choose_backend("auto", "fast", installed, CPU, "x") == "torch"
    assert choose_backend("auto", "fast", installed, None, "x") == "torch"


def test_asking_for_the_fast_backend():
    assert choose_backend("fast", "fast", installed, CUDA, "x") == "fast"
    assert choose_backend("fast", "fast", installed, None, "x") == "fast"  # construction-time check
    for device in (CUDA, CPU, None):
        with pytest.raises(UserError, match=r"x.implementation: fast .*not installed.*pip install -e \.\[cuda\]"):
            choose_backend("fast", "fast", missing, device, "x.implementation")
    with pytest.raises(UserError, match="needs CUDA tensors, got cpu"):
        choose_backend("fast", "fast", installed, CPU, "x.implementation")


def test_unknown_choice_and_custom_hint():
    with pytest.raises(UserError, match=r"x must be one of auto\|torch\|fast, got 'cuda'"):
        choose_backend("cuda", "fast", installed, CPU, "x")
    with pytest.raises(UserError, match="pip install fast-thing"):
        choose_backend("fast", "fast", missing, CUDA, "x", install_hint="pip install fast-thing")
    assert INSTALL_HINT == "pip install -e .[cuda]"


def test_the_three_fast_paths_use_the_rule(monkeypatch):
    """Hash grid (tcnn), rasterizer (nvdiffrast) and volume sampler (nerfacc) answer the same
    for the same situation: torch on CPU under auto, the install extra when the fast one is missing."""
    import threestudio_like.ops.hash_encoding as hash_encoding
    import threestudio_like.ops.rasterize as rasterize
    import threestudio_like.renderers.volume as volume

    monkeypatch.setattr(hash_encoding, "tcnn_available", missing)
    monkeypatch.setattr(rasterize, "nvdiffrast_available", missing)
    monkeypatch.setattr(volume, "nerfacc_available", missing)
    assert HashGridEncoding({"n_levels": 2, "log2_hashmap_size": 10})._backend(CPU) == "torch"
    assert Rasterizer("auto").backend_for(CPU) == "torch"
    assert VolumeRenderer({})._backend(CPU) == "torch"
    assert Rasterizer("auto").backend_for(CUDA) == "torch"  # auto never picks a missing backend
    with pytest.raises(UserError, match=r"geometry.implementation: tcnn .*pip install -e \.\[cuda\]"):
        HashGridEncoding({"implementation": "tcnn"}, where="geometry")
    with pytest.raises(UserError, match=r"nvdiffrast .*pip install -e \.\[cuda\]"):
        Rasterizer("nvdiffrast")
    with pytest.raises(UserError, match=r"renderer.implementation: nerfacc .*pip install -e \.\[cuda\]"):
        VolumeRenderer({"implementation": "nerfacc"})
