"""Feature Regularization: threshold gates + channel-L1 penalty on conv inputs (``pimc export feature-reg``)."""
