"""lipsync-fix: find and fix audio/video desynchronisation with VocaLiST."""

__version__ = "0.1.0"
