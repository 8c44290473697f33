"""Prompt processing: text embeddings, view-dependent prompts, negatives, Perp-Neg."""
