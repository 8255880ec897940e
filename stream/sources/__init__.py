"""Frame sources for the grab stage."""
