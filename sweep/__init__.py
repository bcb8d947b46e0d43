"""``pimc sweep``: design-space sweeps of compile options and hardware parameters on Ray Tune."""
