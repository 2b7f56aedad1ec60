"""Networks and the symmetry machinery they are built with (all torch; exported to ONNX later)."""
