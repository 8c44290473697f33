"""The embedded default world: toy shapes, dataset, tiny priors and their training."""
