"""Feature Regularization: input-dependent activation sparsity (exporter) and its measurement (graph pass)."""
