"""Restoring tomograms under a trained prior: reconstruct (serial and Dask) and the one-tomogram pipeline."""
