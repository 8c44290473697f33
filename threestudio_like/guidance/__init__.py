"""Priors that score renders: SDS, VSD, Zero123, CLIP, reference-view losses."""
