"""Speed measurements of the pipeline, the training step and the attacks; `make bench` runs them all."""
