"""mailserve: an all-in-one mail and collaboration server on Twisted."""

__version__ = "0.1.0.dev0"
