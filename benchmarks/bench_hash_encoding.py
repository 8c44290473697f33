"""Hash-grid encoding speed on CPU: the torch twin vs a plain autograd loop vs the memory floor.

Prints one JSON object: k points/s (median over interleaved repeats) of forward and
forward+backward (gradient w.r.t. the parameters, grad buffer allocation included) for

* ``twin``        — ``HashGridEncoding(implementation=torch)`` (custom autograd function);
* ``twin_input_grad`` — the same with ``input_grad: true`` (differentiable torch path);
* ``plain``       — a plain autograd implementation written here: loop over levels, 8 corner
                    indices, ``table[idx]`` gather, weighted sum, autograd backward;
* ``floor``       — per level only a gather of precomputed real indices from the flat float
                    table and ``scatter_add_`` into a zeroed flat gradient (indices and
                    scatter values precomputed, not timed);
* ``floor_entry`` — the same floor with one complex element per 2-feature entry (the
                    primitive the twin uses);
* ``tcnn``        — tiny-cuda-nn on CUDA, when importable (points/s on the GPU).

and ratios twin/plain and twin/floor measured in the same run, at 1 and 2 threads, with the
load average. Usage: ``python benchmarks/bench_hash_encoding.py [--n 65536] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from threestudio_like.ops.hash_encoding import HashGridEncoding, level_corners


def plain_autograd(x: torch.Tensor, table: torch.Tensor, levels) -> torch.Tensor:
    """Straightforward loop over levels and the 8 corners; ``table`` is ``(entries, F)``;
    gather with ``index_select`` (autograd backward: ``index_add_``)."""
    primes = (1, 2654435761, 805459861)
    outs = []
    for lv in levels:
        pos = x * lv.scale + 0.5
        cell = torch.floor(pos)
        frac = pos - cell
        cell = cell.long()
        idx, w = [], []
        for c in range(8):
            bits = [(c >> d) & 1 for d in range(3)]
            vert = [cell[:, d] + bits[d] for d in range(3)]
            if lv.dense:
                i = (vert[0] + vert[1] * lv.strides[1] + vert[2] * lv.strides[2]) % lv.size
            else:
                i = ((vert[0] * primes[0]) ^ (vert[1] * primes[1]) ^ (vert[2] * primes[2])) % lv.size
            idx.append(i)
            w.append(torch.prod(torch.stack([frac[:, d] if bits[d] else 1 - frac[:, d] for d in range(3)]), 0))
        idx = torch.stack(idx, 1)
        w = torch.stack(w, 1)
        feats = table[lv.offset : lv.offset + lv.size].index_select(0, idx.view(-1)).view(*idx.shape, -1)
        outs.append((feats * w[..., None]).sum(1))
    return torch.cat(outs, dim=1)


def make_floor(x: torch.Tensor, levels, params: torch.Tensor, n_features: int, entry: bool):
    """Precomputed per-level indices; returns (fwd, fwd_bwd) closures doing only gather/scatter."""
    with torch.no_grad():
        xt = x.t().contiguous()
        per_level = []
        for lv in levels:
            idx, _ = level_corners(xt, lv, False, True)
            idx = idx.long().reshape(-1) + lv.offset
            if not entry:
                idx = (idx[:, None] * n_features + torch.arange(n_features)).reshape(-1)
            per_level.append(idx)
    params = params.detach()
    table = torch.view_as_complex(params.view(-1, 2)) if entry else params
    srcs = [torch.ones(i.numel(), dtype=table.dtype) for i in per_level]

    def fwd():
        return [table.index_select(0, i) for i in per_level]

    def fwd_bwd():
        fwd()
        grad = torch.zeros_like(table)
        for i, s in zip(per_level, srcs):
            grad.scatter_add_(0, i, s)
        return grad

    return fwd, fwd_bwd


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(n: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.rand(n, 3)
    enc = HashGridEncoding({"implementation": "torch"})
    enc_ig = HashGridEncoding({"implementation": "torch", "input_grad": True})
    levels = enc.levels
    table = enc.params.detach().view(-1, 2).clone().requires_grad_()

    def twin_bwd():
        enc.params.grad = None
        enc(x).sum().backward()

    def twin_ig_bwd():
        enc_ig.params.grad = None
        enc_ig(x).sum().backward()

    def plain_bwd():
        table.grad = None
        plain_autograd(x, table, levels).sum().backward()

    floor_f, floor_fb = make_floor(x, levels, enc.params, 2, entry=False)
    entry_f, entry_fb = make_floor(x, levels, enc.params, 2, entry=True)
    cases = {
        "twin": (lambda: enc(x.detach()).detach(), twin_bwd),
        "twin_input_grad": (lambda: enc_ig(x).detach(), twin_ig_bwd),
        "plain": (lambda: plain_autograd(x, table, levels).detach(), plain_bwd),
        "floor": (floor_f, floor_fb),
        "floor_entry": (entry_f, entry_fb),
    }
    times = {name: {"fwd": [], "fwd_bwd": []} for name in cases}
    for f, fb in cases.values():  # warm-up
        f()
        fb()
    for _ in range(repeats):  # interleaved, so load changes hit all cases alike
        for name, (f, fb) in cases.items():
            with torch.no_grad():
                times[name]["fwd"].append(timed(f))
            times[name]["fwd_bwd"].append(timed(fb))
    kpts = {name: {k: round(n / statistics.median(v) / 1e3, 1) for k, v in t.items()} for name, t in times.items()}
    ratios = {}
    for k in ("fwd", "fwd_bwd"):
        for base in ("plain", "floor", "floor_entry"):
            ratios[f"twin_over_{base}_{k}"] = round(kpts["twin"][k] / kpts[base][k], 3)
    return {"threads": threads, "kpts_per_s": kpts, "ratios": ratios}


def run_tcnn(n: int, repeats: int) -> dict | None:
    from threestudio_like.ops.hash_encoding_tcnn import tcnn_available

    if not (torch.cuda.is_available() and tcnn_available()):
        return None
    enc = HashGridEncoding({"implementation": "tcnn"}).cuda()
    x = torch.rand(n, 3, device="cuda")

    def fb():
        enc.params.grad = None
        enc(x).sum().backward()

    result = {}
    for name, fn in (("fwd", lambda: enc(x)), ("fwd_bwd", fb)):
        fn()
        ts = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        result[name] = round(n / statistics.median(ts) / 1e3, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=65536, help="points per call")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per case")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to run")
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs = [run(args.n, args.repeats, t) for t in args.threads]
    print(
        json.dumps(
            {
                "benchmark": "hash_encoding",
                "config": {
                    "n_points": args.n,
                    "n_levels": 16,
                    "n_features_per_level": 2,
                    "log2_hashmap_size": 19,
                    "base_resolution": 16,
                    "per_level_scale": 1.447269237440378,
                    "dtype": "float32",
                },
                "torch": torch.__version__,
                "load_avg_before": [round(v, 2) for v in load_before],
                "load_avg_after": [round(v, 2) for v in os.getloadavg()],
                "runs": runs,
                "tcnn_cuda_kpts_per_s": run_tcnn(args.n, args.repeats),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
