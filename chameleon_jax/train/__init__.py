"""Training: sharding, state, jit-compiled steps, checkpoints and the loop."""
