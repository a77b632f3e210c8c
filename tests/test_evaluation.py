"""The dataset's measures against independent computations: scikit-learn's ROC for EER and FNMR
at a fixed FMR, cases with known answers, closed forms, and brute force over small sets."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from digi2real import evaluation
from digi2real.evaluation import (
    consistency,
    equal_error_rate,
    fisher_discriminant_ratio,
    fnmr_at_fmr,
    genuine_scores,
    identity_centres,
    impostor_scores,
    leakage_summary,
    nearest,
    uniqueness,
    unit,
)

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(9)


def scores(n_genuine=4000, n_impostor=30000):
    genuine = RNG.normal(0.55, 0.12, n_genuine).astype(np.float32)
    impostor = RNG.normal(0.05, 0.1, n_impostor).astype(np.float32)
    return genuine, impostor


def sklearn_rates(genuine, impostor):
    labels = np.r_[np.ones(len(genuine)), np.zeros(len(impostor))]
    fpr, tpr, thresholds = roc_curve(labels, np.r_[genuine, impostor], drop_intermediate=False)
    return fpr, 1 - tpr, thresholds


# --- verification ------------------------------------------------------------------------------


def test_eer_equals_scikit_learns_roc():
    genuine, impostor = scores()
    fmr, fnmr, _ = sklearn_rates(genuine, impostor)
    best = np.argmin(np.abs(fmr - fnmr))
    eer, _ = equal_error_rate(genuine, impostor)
    assert eer == pytest.approx((fmr[best] + fnmr[best]) / 2, abs=1e-3)
    assert 0.005 < eer < 0.2  # the case is neither trivial nor hopeless


def test_eer_of_a_case_with_a_known_answer():
    # Uniform genuine on [0.2, 1.0] and impostor on [0, 0.8]: FMR(τ) = (0.8 − τ)/0.8 and
    # FNMR(τ) = (τ − 0.2)/0.8 meet at τ = 0.5, EER = 0.375.
    genuine = np.linspace(0.2, 1.0, 8001, dtype=np.float64)
    impostor = np.linspace(0.0, 0.8, 8001, dtype=np.float64)
    eer, threshold = equal_error_rate(genuine, impostor)
    assert eer == pytest.approx(0.375, abs=1e-3) and threshold == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("target", evaluation.FMR_TARGETS[:2])
def test_fnmr_at_fmr_equals_scikit_learns_roc(target):
    genuine, impostor = scores()
    fmr, fnmr, _ = sklearn_rates(genuine, impostor)
    # roc_curve's thresholds fall, so its last point with FMR <= target has the lowest one.
    expected = fnmr[np.flatnonzero(fmr <= target)[-1]]
    assert fnmr_at_fmr(genuine, impostor, target) == pytest.approx(expected, abs=1e-3)


def test_fnmr_at_an_fmr_too_small_for_the_impostor_pairs_is_none():
    genuine, impostor = scores(n_impostor=30000)
    assert fnmr_at_fmr(genuine, impostor, 1e-4) is None  # 30,000 < 10 / 1e-4
    assert fnmr_at_fmr(genuine, impostor, 1e-3) is not None


def test_fisher_discriminant_ratio_closed_form():
    # μg = 2, σg² = 1 (population), μi = 0.5, σi² = 0.25: (1.5)² / 1.25 = 1.8.
    assert fisher_discriminant_ratio(np.array([1.0, 3.0]), np.array([0.0, 1.0])) == 1.8


def image_set(identities=5, per_identity=4, spread=0.6):
    centres = unit(RNG.normal(size=(identities, 512)))
    rows = np.repeat(centres, per_identity, axis=0) + spread * unit(
        RNG.normal(size=(identities * per_identity, 512))
    ) / np.sqrt(2)
    labels = [f"id{k}" for k in range(identities) for _ in range(per_identity)]
    return unit(rows), labels


@pytest.mark.parametrize("block", [1, 3, 4096])
def test_pair_scores_are_every_pair_once(monkeypatch, block):
    monkeypatch.setattr(evaluation, "BLOCK_ROWS", block)
    embeddings, labels = image_set()
    genuine, impostor = [], []
    for a, b in itertools.combinations(range(len(labels)), 2):
        score = float(embeddings[a] @ embeddings[b])
        (genuine if labels[a] == labels[b] else impostor).append(score)
    np.testing.assert_allclose(
        np.sort(genuine_scores(embeddings, labels)), sorted(genuine), atol=1e-6
    )
    ours = impostor_scores(embeddings, labels)
    assert len(ours) == 20 * 19 // 2 - 5 * 6
    np.testing.assert_allclose(np.sort(ours), sorted(impostor), atol=1e-6)


def test_impostor_scores_are_a_seeded_sample_past_the_exhaustive_size():
    embeddings, labels = image_set(identities=10, per_identity=5)
    sampled = impostor_scores(embeddings, labels, exhaustive_up_to=10, sample=500, seed=3)
    assert 400 < len(sampled) <= 500  # pairs of one identity are drawn, then dropped
    again = impostor_scores(embeddings, labels, exhaustive_up_to=10, sample=500, seed=3)
    np.testing.assert_array_equal(sampled, again)
    every = set(np.round(impostor_scores(embeddings, labels), 5))
    assert set(np.round(sampled, 5)) <= every


# --- consistency and uniqueness ------------------------------------------------------------


def test_centres_and_consistency_by_hand():
    e1, e2 = np.eye(2, 512, dtype=np.float32)
    tilted = unit([np.cos(1.0) * e1 + np.sin(1.0) * e2])[0]  # 1 rad from e1
    embeddings = np.stack([e1, tilted, e2, e2])
    names, centres, index = identity_centres(embeddings, ["a", "a", "b", "b"])
    assert names == ["a", "b"] and index.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(centres[0], unit([e1 + tilted])[0], atol=1e-6)
    result = consistency(embeddings, ["a", "a", "b", "b"])
    # Each image of a is 0.5 rad from a's centre: cos 0.5 = 0.878; b's images are its centre.
    assert result["share_at"] == {"0.3": 1.0, "0.4": 1.0, "0.5": 1.0}
    assert result["mean_cos_to_centre"]["a"] == pytest.approx(np.cos(0.5), abs=1e-6)
    assert result["mean_cos_to_centre"]["b"] == pytest.approx(1.0, abs=1e-6)


def chain():
    """a, b, c with cos(a, b) = cos(b, c) = 0.35 and cos(a, c) = 0."""
    theta = np.arccos(0.35)
    a = np.eye(3, 512, dtype=np.float32)[0]
    b = np.cos(theta) * a + np.sin(theta) * np.eye(3, 512)[1]
    x = 0.35 / np.sin(theta)
    c = x * np.eye(3, 512)[1] + np.sqrt(1 - x**2) * np.eye(3, 512)[2]
    return ["a", "b", "c"], unit(np.stack([a, b, c]))


def test_uniqueness_is_greedy_in_order():
    names, centres = chain()
    at_03 = uniqueness(names, centres, 0.3)
    # a kept; b collides with a, dropped; c collides only with the dropped b: kept.
    assert (at_03.kept, at_03.colliding_pairs) == (2, 2) and at_03.u_class == pytest.approx(2 / 3)
    assert [pair[:2] for pair in at_03.top_pairs] == [("b", "c"), ("a", "b")] or [
        pair[:2] for pair in at_03.top_pairs
    ] == [("a", "b"), ("b", "c")]
    assert all(pair[2] == pytest.approx(0.35, abs=1e-5) for pair in at_03.top_pairs)
    # In another order the greedy answer changes: b first drops both a and c.
    reordered = uniqueness(["b", "a", "c"], centres[[1, 0, 2]], 0.3)
    assert reordered.kept == 1
    assert uniqueness(names, centres, 0.4).kept == 3


def brute_uniqueness(centres, threshold):
    kept, colliding = [], 0
    for i in range(len(centres)):
        similar = [float(centres[i] @ centres[j]) for j in range(i)]
        colliding += sum(s >= threshold for s in similar)
        if all(similar[j] < threshold for j in kept):
            kept.append(i)
    return len(kept), colliding


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_uniqueness_in_blocks_equals_brute_force(monkeypatch, block):
    monkeypatch.setattr(evaluation, "BLOCK_ROWS", block)
    shared = unit(RNG.normal(size=(1, 512)))
    centres = unit(0.6 * shared + 0.4 * unit(RNG.normal(size=(40, 512))))  # many collisions
    names = [str(k) for k in range(40)]
    for threshold in evaluation.THRESHOLDS + (0.8,):
        result = uniqueness(names, centres, threshold, top=5)
        assert (result.kept, result.colliding_pairs) == brute_uniqueness(centres, threshold)
        assert len(result.top_pairs) == min(5, result.colliding_pairs)
        scores = [score for _, _, score in result.top_pairs]
        assert scores == sorted(scores, reverse=True)


# --- leakage ------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 4096])
def test_nearest_real_face_finds_a_planted_near_duplicate(monkeypatch, block):
    monkeypatch.setattr(evaluation, "BLOCK_ROWS", block)
    gallery = unit(RNG.normal(size=(300, 512)))
    queries = unit(RNG.normal(size=(20, 512)))
    queries[7] = unit([gallery[123] + 0.2 * unit(RNG.normal(size=(1, 512)))[0]])[0]
    best, where = nearest(queries, gallery)
    brute = queries @ gallery.T
    np.testing.assert_allclose(best, brute.max(axis=1), atol=1e-6)
    np.testing.assert_array_equal(where, brute.argmax(axis=1))
    assert where[7] == 123 and best[7] > 0.9 and np.delete(best, 7).max() < 0.3
    summary = leakage_summary(best)
    assert summary["max"] == pytest.approx(float(best[7]))
    assert summary["share_at_0.5"] == pytest.approx(1 / 20)
    assert summary["p50"] == pytest.approx(float(np.median(best)))
