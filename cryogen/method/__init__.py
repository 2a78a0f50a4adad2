"""The method: training the prior (the step, the loop, checkpoints), the MAP/Langevin solver, training patches."""
