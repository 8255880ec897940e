"""Annotators that draw masks, boxes and the HUD onto a copy of a frame."""
