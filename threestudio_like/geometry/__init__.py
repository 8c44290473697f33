"""Representations: implicit volume (on a hash grid, triplane or dense grid), DMTet, explicit mesh."""
