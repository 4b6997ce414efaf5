"""Public optimizer presets, the engine they share, and the registry that builds them by name."""
