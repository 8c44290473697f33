"""Volume and raster renderers."""
