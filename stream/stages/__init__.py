"""Stage processes: grab, infer, render."""
