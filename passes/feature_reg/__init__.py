"""Feature Regularization: threshold gates + channel-L1 penalty on conv inputs (``pimc export feature-reg``)
and the measurement of activation zeros the targets skip (the ``activation-sparsity`` pass)."""
