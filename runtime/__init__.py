"""Runtime: datasets, onnxruntime sessions, evaluation and benchmarking."""
