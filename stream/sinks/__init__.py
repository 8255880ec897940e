"""Sinks: where rendered frames go (browser viewer, video file, ...)."""
