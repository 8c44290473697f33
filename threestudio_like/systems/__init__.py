"""Systems: one training-step skeleton composed into each method."""
