"""The installed steer version (written into every file steer makes)."""

__version__ = "0.1.0"
