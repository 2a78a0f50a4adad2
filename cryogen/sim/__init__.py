"""Simulated tomograms with known truth: phantoms and forward models."""
