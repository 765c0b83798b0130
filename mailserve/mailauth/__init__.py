"""mailauth."""
