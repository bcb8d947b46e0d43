"""cim passes."""
