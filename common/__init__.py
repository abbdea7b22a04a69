"""The floor below every other: atomic file writes, TensorFlow's quiet start-up, the error types, the CPU."""
