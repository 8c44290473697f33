"""Mesh extraction, UV atlas, texture bake, OBJ/GLB/PLY writers, videos, report."""
