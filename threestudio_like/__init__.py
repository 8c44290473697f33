"""threestudio_like: text or image to a textured 3D asset by score distillation."""

__version__ = "0.1.0"
