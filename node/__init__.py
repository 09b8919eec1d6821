"""tilefleet node agent: runs sub-models on a board (see node/README_WIRE.md)."""

__version__ = "0.1.0"
