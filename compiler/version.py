"""The package version (one place; ``pimc.__version__`` and every report read it)."""

VERSION = "0.2.0"
