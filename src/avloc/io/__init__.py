"""Video and audio input/output (PyAV)."""
