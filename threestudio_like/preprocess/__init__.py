"""Preprocessing for image-to-3D: segmentation, captioning, depth, recentering."""
