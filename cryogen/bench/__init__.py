"""Benchmarks of quality and speed; they return results, the CLI prints them."""
