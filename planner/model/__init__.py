"""Model toolkit: read, cut, tile, slice and verify .tflite files (no sockets, no planning)."""
