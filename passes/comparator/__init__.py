"""comparator passes."""
