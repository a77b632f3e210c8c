"""Digi2Real: photo-realistic synthetic face-recognition datasets from DigiFace-1M identities."""

__version__ = "0.1.0"
