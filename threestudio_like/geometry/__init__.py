"""Representations: implicit volume (hash grid / triplane), DMTet, explicit mesh."""
