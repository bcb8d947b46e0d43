"""quantize passes."""
