"""Per-item status codes, shared by every file the pipeline writes (int8 in HDF5 and Parquet)."""

from enum import IntEnum


class Status(IntEnum):
    OK = 0
    UNREADABLE = 1  # missing, empty, truncated or not an image
    NO_FACE = 2  # the detector found no face above its threshold
    NONFINITE = 3  # the embedding had NaN, inf or zero norm
    SKIPPED = 4  # not attempted: its identity was dropped before this stage
    FAILED = 5  # generation raised for this image; the message says why

    @property
    def label(self) -> str:
        return self.name.lower()


STATUS_TABLE = {status.value: status.label for status in Status}
