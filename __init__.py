"""pimc: an ONNX graph-rewriting compiler for compressed CNNs."""

__version__ = "0.1.0"
