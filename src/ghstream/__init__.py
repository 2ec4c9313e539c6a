"""ghstream: stream GitHub's public activity into real-time analytics."""

__version__ = "0.1.0"
