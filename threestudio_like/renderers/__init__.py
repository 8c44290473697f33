"""Volume, raster and splat renderers."""
