"""Priors that score renders: SDS, VSD, ISM, Zero123, CLIP."""
