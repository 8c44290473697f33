"""Camera sampling and rays."""
