"""Fast ops, each with a pure-torch twin: hash encoding, rasterization, marching cubes/tets."""
