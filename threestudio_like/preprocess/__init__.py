"""Preprocessing for image-to-3D: a photo → the object cut out and recentred, its mask, monocular
depth and a caption (SAM, BLIP, DPT/Depth Anything through transformers), and a record of how.

The command is ``threestudio-like preprocess`` (:mod:`.cli`); the steps are in :mod:`.pipeline`.
"""
