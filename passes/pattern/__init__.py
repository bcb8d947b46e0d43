"""pattern passes."""
