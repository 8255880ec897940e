"""medstream runtime: frames, wire codec, transport, budgets, stats, stages, sources, render, sinks."""

__version__ = "0.1.0"
