"""Evaluation and prediction: metrics over a split, overlays for people."""
