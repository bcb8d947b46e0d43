"""decompose passes."""
