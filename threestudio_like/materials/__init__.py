"""Materials: raw colour, diffuse shading, PBR."""
