"""Graph passes, one algorithm per folder; each folder holds its ONNX rewrite(s) and its torch exporter."""
