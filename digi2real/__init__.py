"""Digi2Real: photo-realistic synthetic face-recognition datasets from DigiFace-1M identities."""

import os

# Cluster nodes are often offline and nothing may be fetched at run time: make the Hugging Face
# libraries fail fast on a missing local file instead of trying the network. Set before they load.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
