"""Metrics (Chamfer, IoU, PSNR, CLIP similarity) and the evaluators that score a finished run."""
