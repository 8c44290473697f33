"""Backgrounds: solid, random colour, neural environment map."""
