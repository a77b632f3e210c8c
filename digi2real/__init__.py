"""Digi2Real: photo-realistic synthetic face-recognition datasets from DigiFace-1M identities."""

import logging
import os

# Cluster nodes are often offline and nothing may be fetched at run time: make the Hugging Face
# libraries fail fast on a missing local file instead of trying the network. Set before they load.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class _KnownHarmless(logging.Filter):
    """transformers 5 warns in every job that imports diffusers' pipeline that its image
    processors fall back to PIL without torchvision: no image processor runs here (the
    pipeline is built without a feature extractor), so the line is noise in every log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_KnownHarmless())

__version__ = "0.1.0"
