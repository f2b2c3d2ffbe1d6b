"""avloc: find which object is making the sound in a video."""

__version__ = "0.1.0"
