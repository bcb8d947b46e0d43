"""The compiler core: loading, passes, pass manager, workload extraction, targets, reports and CLI."""
