"""prune passes: non-structured magnitude pruning (ADMM-NN's constraint set) and its ADMM exporter."""
