"""edge-uploader: every captured file becomes a tagged Edge Impulse sample, and none is lost."""

__version__ = "0.1.0"
