"""The realism shift: Δ = mean over real faces − mean over DigiFace, in Arc2Face's CLIP space."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from digi2real.errors import DataError
from digi2real.formats import atomic_path, open_h5

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


@dataclass
class Delta:
    delta: np.ndarray  # (77, hidden) float32; pooled mode repeats one vector on every token
    mean_real: np.ndarray
    mean_synthetic: np.ndarray
    n_real: int
    n_synthetic: int
    mode: str
    attrs: dict = field(default_factory=dict)


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


def write_delta(path: str | Path, delta: Delta) -> None:
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("delta", data=delta.delta)
        file.create_dataset("mean_real", data=delta.mean_real)
        file.create_dataset("mean_synthetic", data=delta.mean_synthetic)
        file.attrs.update(
            {"n_real": delta.n_real, "n_synthetic": delta.n_synthetic, "mode": delta.mode}
        )
        file.attrs.update(delta.attrs)


def read_delta(path: str | Path) -> Delta:
    with open_h5(path, "a delta file") as file:
        if "delta" not in file:
            raise DataError(f"{path}: not a delta file, lacks the dataset 'delta'")
        attrs = dict(file.attrs)
        return Delta(
            delta=file["delta"][()],
            mean_real=file["mean_real"][()],
            mean_synthetic=file["mean_synthetic"][()],
            n_real=int(attrs.pop("n_real")),
            n_synthetic=int(attrs.pop("n_synthetic")),
            mode=str(attrs.pop("mode")),
            attrs=attrs,
        )
