"""Frequency encoding vs its formula, and the ``make_encoding`` factory (every encoding type)."""

from __future__ import annotations

import math

import pytest
import torch

from threestudio_like.core.errors import UserError
from threestudio_like.ops.dense_grid import DenseGridEncoding
from threestudio_like.ops.encodings import FrequencyEncoding, ProgressiveBandHashGrid, make_encoding
from threestudio_like.ops.hash_encoding import HashGridEncoding
from threestudio_like.ops.triplane import TriplaneEncoding


@pytest.mark.parametrize("include_input", [False, True])
def test_frequency_encoding_matches_formula_and_tcnn_layout(include_input):
    enc = FrequencyEncoding({"n_frequencies": 3, "include_input": include_input}, n_input_dims=2)
    x = torch.tensor([[0.25, -0.7], [1.5, 0.1]])
    out = enc(x)
    assert out.shape == (2, enc.n_output_dims) and enc.n_output_dims == 2 * (6 + include_input)
    for n in range(2):
        expected = list(x[n].tolist()) if include_input else []
        for d in range(2):  # tcnn: j -> dim j // (2K), octave (j // 2) % K, sin for even j, cos for odd
            for k in range(3):
                a = (2.0**k) * math.pi * x[n, d].item()
                expected += [math.sin(a), math.cos(a)]
        assert torch.allclose(out[n], torch.tensor(expected), atol=1e-5)


def test_frequency_encoding_keeps_leading_dims_and_dtype():
    enc = make_encoding({"otype": "Frequency", "n_frequencies": 4}, 3)
    x = torch.rand(2, 3, 5, 3, dtype=torch.float64)
    out = enc(x)
    assert out.shape == (2, 3, 5, 24) and out.dtype == torch.float64


def test_factory_builds_each_type_with_matching_output_dims():
    cases = [
        ({"otype": "HashGrid", "n_levels": 4, "log2_hashmap_size": 12}, HashGridEncoding, 8),
        (
            {
                "otype": "ProgressiveBandHashGrid",
                "n_levels": 4,
                "n_features_per_level": 4,
                "log2_hashmap_size": 12,
                "start_level": 1,
            },
            ProgressiveBandHashGrid,
            16,
        ),
        ({"otype": "Frequency", "n_frequencies": 5, "include_input": True}, FrequencyEncoding, 33),
        ({"otype": "Triplane", "resolution": 4, "n_channels": 3, "reduction": "concat"}, TriplaneEncoding, 9),
        ({"otype": "DenseGrid", "resolution": 4, "n_channels": 5}, DenseGridEncoding, 5),
    ]
    for cfg, cls, dims in cases:
        enc = make_encoding(cfg, 3)
        assert type(enc) is cls and enc.n_output_dims == dims
        assert enc(torch.rand(7, 3)).shape == (7, dims)


def test_factory_errors_name_the_problem():
    with pytest.raises(UserError, match="otype"):
        make_encoding({"otype": "SphericalHarmonics"}, 3)
    with pytest.raises(UserError, match="otype"):
        make_encoding({"n_levels": 4}, 3)
    with pytest.raises(UserError, match="n_frequency"):
        make_encoding({"otype": "Frequency", "n_frequency": 4}, 3)
    with pytest.raises(UserError, match="3-D points"):
        make_encoding({"otype": "Triplane"}, 2)
    with pytest.raises(UserError, match="reduction must be one of sum\\|concat"):
        make_encoding({"otype": "Triplane", "reduction": "mean"}, 3)


def test_input_grad_switches_hash_grids_to_their_differentiable_path():
    cfg = {"otype": "HashGrid", "n_levels": 2, "log2_hashmap_size": 10}
    assert make_encoding(cfg, 3, input_grad=True).cfg.input_grad
    assert not make_encoding(cfg, 3).cfg.input_grad
    assert not make_encoding({**cfg, "input_grad": False}, 3, input_grad=True).cfg.input_grad  # explicit wins
    x = torch.rand(5, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(make_encoding(cfg, 3, input_grad=True)(x).sum(), x)
    assert grad.abs().sum() > 0


def test_factory_accepts_omegaconf_nodes():
    from omegaconf import OmegaConf

    enc = make_encoding(OmegaConf.create({"otype": "HashGrid", "n_levels": 2, "log2_hashmap_size": 10}), 2)
    assert enc.n_input_dims == 2 and enc(torch.rand(3, 2)).shape == (3, 4)
