"""Δ by streaming means over chunks equals Δ computed in memory."""

import numpy as np
import pytest
import torch

from digi2real.delta import StreamingMean, compute_delta, projected_mean
from digi2real.errors import DataError
from digi2real.formats import (
    EmbeddingTable,
    iter_ok_embeddings,
    read_delta,
    read_embeddings,
    write_delta,
    write_embeddings,
)

pytestmark = pytest.mark.unit

HIDDEN = 24
WEIGHTS = torch.from_numpy(np.random.default_rng(0).normal(size=(512, 77 * HIDDEN))).float()


def project(arcface: torch.Tensor) -> torch.Tensor:
    """A nonlinear stand-in for the encoder: the mean must be taken after it, not before."""
    return torch.tanh(arcface @ WEIGHTS).reshape(len(arcface), 77, HIDDEN)


def embeddings_file(path, n, bad_every, seed):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 512))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    status = np.array([2 if k % bad_every == 0 else 0 for k in range(n)], np.int8)
    vectors[status != 0] = 0
    write_embeddings(
        path,
        EmbeddingTable(
            embedding=vectors.astype(np.float32),
            status=status,
            identity=[""] * n,
            path=[f"{k}.png" for k in range(n)],
            det_score=np.ones(n, np.float32),
            message=[""] * n,
        ),
    )
    return vectors[status == 0].astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("delta")
    real = embeddings_file(folder / "real.h5", 23, bad_every=5, seed=1)
    synthetic = embeddings_file(folder / "synthetic.h5", 31, bad_every=4, seed=2)
    return folder, real, synthetic


def in_memory_delta(real, synthetic):
    mean = lambda x: project(torch.from_numpy(x)).double().mean(0).numpy()  # noqa: E731
    return mean(real) - mean(synthetic)


@pytest.mark.parametrize("chunk", [1, 7, "N"])
def test_streaming_delta_equals_in_memory(files, chunk):
    folder, real, synthetic = files
    expected = in_memory_delta(real, synthetic)
    means = []
    for name, data in (("real", real), ("synthetic", synthetic)):
        path = folder / f"{name}.h5"
        rows = len(read_embeddings(path))  # N: every row, bad ones included, in one chunk
        size = rows if chunk == "N" else chunk
        chunks = list(iter_ok_embeddings(path, size))
        assert sum(map(len, chunks)) == len(data) and max(map(len, chunks)) <= size
        assert len(chunks) == 1 if chunk == "N" else len(chunks) > 1
        means.append(projected_mean(project, chunks))
    result = compute_delta(*means)
    assert result.n_real == len(real) == 18 and result.n_synthetic == len(synthetic) == 23
    np.testing.assert_allclose(result.delta, expected, rtol=0, atol=1e-6)
    assert result.delta.shape == (77, HIDDEN) and result.delta.dtype == np.float32


def test_pooled_delta_is_the_token_mean_on_every_token(files):
    folder, real, synthetic = files
    means = [
        projected_mean(project, iter_ok_embeddings(folder / f"{n}.h5", 5))
        for n in ("real", "synthetic")
    ]
    pooled = compute_delta(*means, mode="pooled").delta
    expected = in_memory_delta(real, synthetic).mean(axis=0)
    for token in range(77):
        np.testing.assert_allclose(pooled[token], expected, atol=1e-6)


def test_no_ok_embedding_is_a_clear_error():
    with pytest.raises(DataError, match="no embeddings with status ok"):
        _ = StreamingMean().mean


def test_unknown_mode_is_rejected(files):
    folder, _, _ = files
    means = [
        projected_mean(project, iter_ok_embeddings(folder / f"{n}.h5", 8))
        for n in ("real", "synthetic")
    ]
    with pytest.raises(ValueError, match="unknown delta mode"):
        compute_delta(*means, mode="cls")


def test_delta_file_round_trip(files, tmp_path):
    folder, _, _ = files
    means = [
        projected_mean(project, iter_ok_embeddings(folder / f"{n}.h5", 8))
        for n in ("real", "synthetic")
    ]
    result = compute_delta(*means)
    result.attrs = {"encoder_sha256": "abc"}
    write_delta(tmp_path / "delta.h5", result)
    back = read_delta(tmp_path / "delta.h5")
    np.testing.assert_array_equal(back.delta, result.delta)
    assert (back.n_real, back.n_synthetic, back.mode) == (18, 23, "per_token")
    assert back.attrs["encoder_sha256"] == "abc"
    assert not list(tmp_path.glob(".*tmp")), "no temporary file may be left behind"
