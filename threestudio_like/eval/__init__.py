"""Metrics: Chamfer, IoU, PSNR, CLIP score, reprojection error."""
