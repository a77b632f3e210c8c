"""The realism shift: Δ = mean over real faces − mean over DigiFace, in Arc2Face's CLIP space."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from digi2real.errors import DataError
from digi2real.formats import Delta

MODES = ("per_token", "pooled")


class StreamingMean:
    """Mean of arrays seen a chunk at a time, accumulated in float64."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def update(self, batch: np.ndarray) -> None:
        batch_sum = np.asarray(batch, dtype=np.float64).sum(axis=0)
        self.total = batch_sum if self.total is None else self.total + batch_sum
        self.count += len(batch)

    @property
    def mean(self) -> np.ndarray:
        if self.total is None or self.count == 0:
            raise DataError("no embeddings with status ok to average")
        return self.total / self.count


def projected_mean(project, chunks: Iterable[np.ndarray]) -> StreamingMean:
    mean = StreamingMean()
    for chunk in chunks:
        projected = project(torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)))
        mean.update(projected.double().cpu().numpy())
    return mean


def compute_delta(real: StreamingMean, synthetic: StreamingMean, mode: str = "per_token") -> Delta:
    if mode not in MODES:
        raise ValueError(f"unknown delta mode {mode!r}; expected one of {MODES}")
    mean_real, mean_synthetic = real.mean, synthetic.mean
    delta = mean_real - mean_synthetic
    if mode == "pooled":
        delta = np.broadcast_to(delta.mean(axis=0, keepdims=True), delta.shape)
    return Delta(
        delta=np.ascontiguousarray(delta, dtype=np.float32),
        mean_real=mean_real.astype(np.float32),
        mean_synthetic=mean_synthetic.astype(np.float32),
        n_real=real.count,
        n_synthetic=synthetic.count,
        mode=mode,
    )
