"""Ops, each with a pure-torch twin and, where one exists, an optional CUDA backend chosen by
``backend.py``: encodings (one factory, ``encodings.py``), rasterization, marching cubes/tets,
CLIP image preprocessing."""
