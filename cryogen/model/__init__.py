"""The imaging model and what it is made of: the wedge and A, rotations, the noise model, the networks."""
