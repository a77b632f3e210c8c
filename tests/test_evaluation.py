"""The dataset's measures against independent computations: scikit-learn's ROC for EER and FNMR
at a fixed FMR, cases with known answers, closed forms, and brute force over small sets."""

import dataclasses
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


# --- nearest other identity, per-group spread, the greedy pass -------------------------------


@pytest.mark.parametrize("block", [1, 3, 4, 4096])
def test_nearest_other_equals_a_brute_force_loop(monkeypatch, block):
    monkeypatch.setattr(evaluation, "BLOCK_ROWS", block)
    centres = unit(RNG.normal(size=(10, 512)))
    centres[8] = unit([centres[2] + 0.3 * unit(RNG.normal(size=(1, 512)))[0]])[0]
    best, where = evaluation.nearest_other(centres)
    for i in range(len(centres)):
        others = [(float(centres[i] @ centres[j]), j) for j in range(len(centres)) if j != i]
        score, j = max(others)
        assert where[i] == j
        assert best[i] == pytest.approx(score, abs=1e-6)
    # Row 2 and 8 are each other's nearest, across a block boundary when block is 3 or 4.
    assert where[2] == 8 and where[8] == 2


def test_nearest_other_of_one_row_is_none():
    best, where = evaluation.nearest_other(unit(RNG.normal(size=(1, 512))))
    assert best.tolist() == [-np.inf] and where.tolist() == [-1]
    best, where = evaluation.nearest_other(np.zeros((0, 512), np.float32))
    assert len(best) == 0 and len(where) == 0


def test_std_per_group_equals_nanstd_per_group():
    values = RNG.normal(size=(40, 3)) * [10.0, 5.0, 2.0] + [30.0, -5.0, 1.0]
    group = RNG.integers(0, 6, 40)
    group[group == 5] = 4  # group 5 is empty
    group[:3] = [3, 7, 7]  # group 3 and 7 exist, 7 has two rows
    group[group == 6] = 0
    values[RNG.random(values.shape) < 0.2] = np.nan
    values[1, 0] = np.nan  # group 7's yaw: one finite value only
    values[group == 3, 1] = np.nan  # no finite pitch in group 3
    groups = 8
    out = evaluation.std_per_group(values, group, groups)
    assert out.shape == (groups, 3)
    for g in range(groups):
        for column in range(3):
            column_values = [
                v
                for v, k in zip(values[:, column], group, strict=True)
                if k == g and np.isfinite(v)
            ]
            if len(column_values) < 2:
                assert np.isnan(out[g, column]), (g, column)
            else:
                mean = sum(column_values) / len(column_values)
                std = np.sqrt(sum((v - mean) ** 2 for v in column_values) / len(column_values))
                assert out[g, column] == pytest.approx(std, rel=1e-9), (g, column)
    assert np.isnan(out[5]).all() and np.isnan(out[6]).all() and np.isnan(out[7, 0])


def brute_is_kept(centres, threshold):
    kept = []
    for i in range(len(centres)):
        if all(float(centres[i] @ centres[j]) < threshold for j in kept):
            kept.append(i)
    return [i in kept for i in range(len(centres))]


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_uniqueness_is_kept_equals_a_brute_force_greedy(monkeypatch, block):
    monkeypatch.setattr(evaluation, "BLOCK_ROWS", block)
    shared = unit(RNG.normal(size=(1, 512)))
    centres = unit(0.6 * shared + 0.4 * unit(RNG.normal(size=(30, 512))))
    names = [str(k) for k in range(30)]
    for threshold in (0.3, 0.5, 0.7, 0.8):
        expected = brute_is_kept(centres, threshold)
        result = uniqueness(names, centres, threshold)
        assert result.is_kept.tolist() == expected
        assert result.kept == sum(expected)
    names3, chained = chain()
    assert uniqueness(names3, chained, 0.3).is_kept.tolist() == [True, False, True]


# --- verification's distributions --------------------------------------------------------------


def test_verification_histograms_count_every_pair():
    embeddings, labels = image_set(identities=6, per_identity=5)
    result = evaluation.verification(embeddings, labels)
    n = len(labels)
    assert result["genuine_pairs"] == 6 * (5 * 4 // 2)
    assert result["impostor_pairs"] == n * (n - 1) // 2 - 6 * 10
    assert result["impostor_pairs_sampled"] is False
    for kind in ("genuine", "impostor"):
        counts = result[f"{kind}_histogram"]["counts"]
        assert len(counts) == evaluation.HISTOGRAM_BINS
        assert sum(counts) == result[f"{kind}_pairs"]
    sampled = evaluation.verification(embeddings, labels, exhaustive_up_to=10, sample=300)
    assert sampled["impostor_pairs_sampled"] is True
    assert sum(sampled["impostor_histogram"]["counts"]) == sampled["impostor_pairs"] <= 300


def test_histogram_bins_by_hand():
    # 4000 bins 0.0005 wide from -1: -1 and -0.99975 in bin 0, -0.99925 in bin 1, 0.00025 in
    # bin 2000, 0.99975 and 1 (and beyond, clipped) in the last, -1.5 clipped into the first.
    values = np.array([-1.5, -1.0, -0.99975, -0.99925, 0.00025, 0.99975, 1.0, 1.2])
    counts = evaluation.histogram(values)["counts"]
    expected = [0] * 4000
    for bin_ in (0, 0, 0, 1, 2000, 3999, 3999, 3999):
        expected[bin_] += 1
    assert counts == expected


def test_percentiles_ignore_non_finite_values():
    values = np.array([np.nan, 1.0, 2.0, 3.0, np.inf, 4.0, 5.0])
    result = evaluation.percentiles(values, (0, 50, 100))
    assert result == {"p0": 1.0, "p50": 3.0, "p100": 5.0}
    assert evaluation.percentiles(np.array([np.nan]), (50,)) == {"p50": None}


def test_percentiles_rounded_to_digits():
    # Two values: p0 and p100 are the values, p50 their mean (linear interpolation).
    values = np.array([1 / 3, 2 / 3], np.float32)
    assert evaluation.percentiles(values, (0, 50, 100), digits=4) == {
        "p0": 0.3333,
        "p50": 0.5,
        "p100": 0.6667,
    }
    assert evaluation.percentiles(values[:0], (5, 95), digits=4) == {"p5": None, "p95": None}


# --- a whole generated set, with planted leaks and collisions ---------------------------------

SETTINGS = evaluation.EvaluationSettings(
    leak_threshold=0.5,
    collision_threshold=0.5,
    top_pairs=10,
    exhaustive_impostors_up_to=20_000,
    impostor_sample=1000,
    seed=0,
)
LEAK, PAIR = "id04", ("id10", "id20")


def planted_set(rng=None):
    """30 identities of 5 images around well-separated centres; id04 near the real face
    "real:planted" of the gallery; id10 and id20 sharing a centre; "solo" with one image.
    A few identities are noisy, so that their images fall below 0.5 of their centre."""
    rng = rng or np.random.default_rng(21)
    gallery_vectors = unit(rng.normal(size=(201, 512)))
    gallery_labels = [f"real:{k}" for k in range(200)] + ["real:planted"]
    centres = unit(rng.normal(size=(30, 512)))
    centres[4] = unit([gallery_vectors[200] + 0.15 * unit(rng.normal(size=(1, 512)))[0]])[0]
    centres[20] = unit([centres[10] + 0.1 * unit(rng.normal(size=(1, 512)))[0]])[0]
    noise = np.full(30, 0.3)
    noise[[1, 7, 13, 25]] = [2.0, 3.0, 4.0, 6.0]
    rows, labels = [], []
    for k in range(30):
        for _ in range(5):
            rows.append(centres[k] + noise[k] * unit(rng.normal(size=(1, 512)))[0])
            labels.append(f"id{k:02d}")
    # The one-image identity, in the middle of the manifest.
    rows.insert(40, unit(rng.normal(size=(1, 512)))[0])
    labels.insert(40, "solo")
    angles = rng.normal(0, 15, size=(len(labels), 3))
    angles[rng.random(len(labels)) < 0.1] = np.nan
    gallery = evaluation.Gallery(embedding=gallery_vectors, label=gallery_labels)
    return labels, np.asarray(rows, np.float32), angles, gallery


def test_planted_set_flags_exactly_the_planted_leak_and_collision():
    labels, embeddings, angles, gallery = planted_set()
    summary, images, identities, pairs = evaluation.evaluate_generated(
        labels, embeddings, angles, gallery, SETTINGS
    )
    names = identities["identity"]
    assert names == list(dict.fromkeys(labels)) and len(names) == 31
    assert [n for n, hit in zip(names, identities["leak"], strict=True) if hit] == [LEAK]
    leakage = summary["leakage"]
    assert leakage["gallery"] == 201
    assert leakage["identities"]["flagged_identities"] == [LEAK]
    assert leakage["identities"]["flagged"] == 1
    assert identities["nearest_real"][names.index(LEAK)] == "real:planted"
    assert identities["nearest_real_cos"][names.index(LEAK)] >= 0.9
    # Every leaked image is found too, and nothing else is near a real face.
    image_leaks = {
        label
        for label, score in zip(images["identity"], images["nearest_real_cos"], strict=True)
        if score >= 0.5
    }
    assert image_leaks == {LEAK}
    assert [n for n, hit in zip(names, identities["collision"], strict=True) if hit] == list(PAIR)
    assert summary["uniqueness"]["flagged_pairs"] == 1
    assert summary["uniqueness"]["flagged_identities"] == 2
    assert (pairs["identity_a"][0], pairs["identity_b"][0]) == PAIR
    assert pairs["cosine"][0] > 0.9
    assert identities["nearest_identity"][names.index(PAIR[0])] == PAIR[1]
    assert identities["nearest_identity"][names.index(PAIR[1])] == PAIR[0]
    # The greedy pass keeps the earlier of the pair only.
    kept = dict(zip(names, identities["kept_at_0.5"], strict=True))
    assert [n for n in names if not kept[n]] == [PAIR[1]]
    assert summary["uniqueness"]["0.5"]["kept"] == 30
    # The flags follow the thresholds: just above the planted cosines, nothing is flagged.
    leak_cos = identities["nearest_real_cos"][names.index(LEAK)]
    pair_cos = identities["nearest_identity_cos"][names.index(PAIR[0])]
    assert pair_cos == pytest.approx(pairs["cosine"][0], abs=1e-5)
    for offset, flagged in ((-1e-3, True), (1e-3, False)):
        settings = dataclasses.replace(
            SETTINGS, leak_threshold=leak_cos + offset, collision_threshold=pair_cos + offset
        )
        summary, _, identities, _ = evaluation.evaluate_generated(
            labels, embeddings, angles, gallery, settings
        )
        assert identities["leak"][names.index(LEAK)] is flagged
        assert sum(identities["leak"]) == flagged
        assert sum(identities["collision"]) == 2 * flagged
        assert summary["uniqueness"]["flagged_pairs"] == flagged


def brute_centres(embeddings, labels):
    vectors = embeddings.astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    centres = {}
    for name in dict.fromkeys(labels):
        total = sum(v for v, label in zip(vectors, labels, strict=True) if label == name)
        centres[name] = total / np.linalg.norm(total)
    return vectors, centres


def test_planted_set_consistency_by_brute_force():
    labels, embeddings, angles, gallery = planted_set()
    summary, images, identities, _ = evaluation.evaluate_generated(
        labels, embeddings, angles, gallery, SETTINGS
    )
    vectors, centres = brute_centres(embeddings, labels)
    to_centre = [float(v @ centres[label]) for v, label in zip(vectors, labels, strict=True)]
    np.testing.assert_allclose(images["cos_to_centre"], to_centre, atol=1e-5)
    several = [labels.count(label) > 1 for label in labels]
    kept = [c for c, many in zip(to_centre, several, strict=True) if many]
    for s in evaluation.THRESHOLDS:
        expected = sum(c >= s for c in kept) / len(kept)
        assert summary["consistency"]["share_at"][str(s)] == pytest.approx(expected)
    assert 0 < summary["consistency"]["share_at"]["0.5"] < 1  # the noisy identities count
    assert summary["single_image_identities"] == 1
    assert summary["images"] == 151 and summary["identities"] == 31
    for name, size, mean in zip(
        identities["identity"],
        identities["images"],
        identities["mean_cos_to_centre"],
        strict=True,
    ):
        assert size == labels.count(name)
        if name == "solo":
            assert np.isnan(mean)
        else:
            own = [c for c, label in zip(to_centre, labels, strict=True) if label == name]
            assert mean == pytest.approx(sum(own) / len(own), abs=1e-5)
    finite_means = [m for m in identities["mean_cos_to_centre"] if np.isfinite(m)]
    assert summary["consistency"]["mean_cos_to_centre"]["p50"] == pytest.approx(
        float(np.median(finite_means)), abs=1e-6
    )
    # The pose spread per identity: a population std of the finite angles, by hand.
    for axis, column in (("yaw", 0), ("roll", 2)):
        for name, std in zip(identities["identity"], identities[f"{axis}_std"], strict=True):
            own = [a[column] for a, label in zip(angles, labels, strict=True) if label == name]
            own = [a for a in own if np.isfinite(a)]
            if len(own) < 2:
                assert np.isnan(std)
            else:
                assert std == pytest.approx(float(np.std(own)), rel=1e-9)
    verify = summary["verification"]
    assert verify["genuine_pairs"] == 30 * 10
    assert verify["impostor_pairs"] == 151 * 150 // 2 - 300


def test_planted_set_without_a_gallery_has_no_leakage():
    labels, embeddings, angles, _ = planted_set()
    empty = evaluation.Gallery(embedding=np.zeros((0, 512), np.float32), label=[])
    summary, images, identities, _ = evaluation.evaluate_generated(
        labels, embeddings, angles, empty, SETTINGS
    )
    assert summary["leakage"] is None
    assert np.isnan(identities["nearest_real_cos"]).all()
    assert np.isnan(identities["max_image_nearest_real_cos"]).all()
    assert np.isnan(images["nearest_real_cos"]).all()
    assert not any(identities["leak"])
    # The rest does not depend on the gallery.
    assert [
        n for n, hit in zip(identities["identity"], identities["collision"], strict=True) if hit
    ] == list(PAIR)


def test_sources_flag_planted_leaks_and_collisions_among_the_considered():
    rng = np.random.default_rng(5)
    gallery_vectors = unit(rng.normal(size=(150, 512)))
    gallery = evaluation.Gallery(embedding=gallery_vectors, label=[f"real:{k}" for k in range(150)])
    prototypes = unit(rng.normal(size=(20, 512)))

    def near(vector, spread=0.15):
        return unit([vector + spread * unit(rng.normal(size=(1, 512)))[0]])[0]

    prototypes[3] = near(gallery_vectors[42])  # a leak, considered
    prototypes[9] = near(gallery_vectors[77])  # a leak, not considered
    prototypes[15] = near(prototypes[6])  # a collision with 6, considered
    prototypes[17] = near(prototypes[11])  # would collide with 11, not considered
    prototypes[12] = 0  # no prototype at all
    names = [f"s{k}" for k in range(20)]
    considered = np.ones(20, bool)
    considered[[9, 17, 12]] = False
    summary, table, pairs = evaluation.evaluate_sources(
        names, prototypes, considered, gallery, SETTINGS
    )
    expected_names = [n for n, keep in zip(names, considered, strict=True) if keep]
    assert table["identity"] == expected_names and summary["identities"] == 17
    assert [n for n, hit in zip(expected_names, table["leak"], strict=True) if hit] == ["s3"]
    assert table["nearest_real"][expected_names.index("s3")] == "real:42"
    assert summary["leakage"]["flagged_identities"] == ["s3"]
    assert summary["leakage"]["flagged"] == 1
    assert [n for n, hit in zip(expected_names, table["collision"], strict=True) if hit] == [
        "s6",
        "s15",
    ]
    assert summary["uniqueness"]["flagged_pairs"] == 1
    assert (pairs["identity_a"][0], pairs["identity_b"][0]) == ("s6", "s15")
    # Every nearest-real cosine equals a brute-force search over the considered rows.
    for name, score in zip(expected_names, table["nearest_real_cos"], strict=True):
        vector = prototypes[names.index(name)]
        assert score == pytest.approx(max(float(vector @ g) for g in gallery_vectors), abs=1e-5)
    # With every row considered, the excluded leak and collision are found.
    everything = np.ones(20, bool)
    everything[12] = False
    summary, table, _ = evaluation.evaluate_sources(
        names, prototypes, everything, gallery, SETTINGS
    )
    assert summary["leakage"]["flagged_identities"] == ["s3", "s9"]
    assert summary["uniqueness"]["flagged_pairs"] == 2


# --- flagged pairs and flagged identities, right at the threshold -----------------------------


def float32_steps(value: float, steps: int) -> list[float]:
    """The float32 numbers from `steps` below float32(value) to `steps` above it."""
    down = up = np.float32(value)
    below, above = [], []
    for _ in range(steps):
        down, up = np.nextafter(down, np.float32(-2)), np.nextafter(up, np.float32(2))
        below.append(float(down))
        above.append(float(up))
    return below[::-1] + [float(np.float32(value))] + above


@pytest.mark.parametrize("block", [1, 3, 4096])
def test_flagged_pairs_and_identities_agree_at_every_threshold_near_a_pair(monkeypatch, block):
    # One near-duplicate pair, every other pair far apart. Its cosine can differ in the last
    # bits between two float32 products of different shapes (with one row a block, by 7e-8 on
    # the BLAS this was written on): at a threshold between those values, pairs counted from
    # one product and identities flagged from another disagreed (the identities flagged, no
    # pair), so every float32 threshold around the cosine is tried.
    monkeypatch.setattr(evaluation, "BLOCK_ROWS", block)
    rng = np.random.default_rng(13)
    centres = unit(rng.normal(size=(12, 512)))
    centres[2] = unit([centres[1] + 0.3 * unit(rng.normal(size=(1, 512)))[0]])[0]
    names = [f"s{k}" for k in range(12)]
    exact = float(centres[2].astype(np.float64) @ centres[1])
    assert 0.9 < exact and np.delete(centres @ centres.T - np.eye(12), [1, 2], 0).max() < 0.5
    for threshold in float32_steps(exact, 16):
        settings = dataclasses.replace(SETTINGS, collision_threshold=threshold)
        summary, table, _ = evaluation.evaluate_sources(
            names, centres, np.ones(12, bool), evaluation.Gallery(centres[:0], []), settings
        )
        flagged = [n for n, hit in zip(names, table["collision"], strict=True) if hit]
        assert summary["uniqueness"]["flagged_pairs"] in (0, 1)
        assert flagged == (["s1", "s2"] if summary["uniqueness"]["flagged_pairs"] else [])
        assert summary["uniqueness"]["flagged_identities"] == len(flagged)
        for name in ("s1", "s2"):
            nearest_cos = table["nearest_identity_cos"][names.index(name)]
            assert (nearest_cos >= np.float32(threshold)) == (name in flagged)


@pytest.mark.parametrize("block", [1, 4, 4096])
def test_every_flagged_identity_is_in_a_flagged_pair_and_back(monkeypatch, block):
    # Many collisions, thresholds exactly at cosines the evaluation itself reports.
    monkeypatch.setattr(evaluation, "BLOCK_ROWS", block)
    monkeypatch.setattr(evaluation, "THRESHOLDS", ())  # the pairs table: the flagged pairs
    rng = np.random.default_rng(17)
    shared = unit(rng.normal(size=(1, 512)))
    centres = unit(0.7 * shared + 0.3 * unit(rng.normal(size=(30, 512))))
    names = [f"s{k}" for k in range(30)]
    _, table, _ = evaluation.evaluate_sources(
        names, centres, np.ones(30, bool), evaluation.Gallery(centres[:0], []), SETTINGS
    )
    cosines = sorted(table["nearest_identity_cos"])
    for threshold in cosines[::3]:
        settings = dataclasses.replace(SETTINGS, collision_threshold=threshold, top_pairs=10**6)
        summary, table, pairs = evaluation.evaluate_sources(
            names, centres, np.ones(30, bool), evaluation.Gallery(centres[:0], []), settings
        )
        flagged = {n for n, hit in zip(names, table["collision"], strict=True) if hit}
        assert flagged == set(pairs["identity_a"]) | set(pairs["identity_b"])
        assert len(flagged) == summary["uniqueness"]["flagged_identities"]
        assert len(pairs["cosine"]) == summary["uniqueness"]["flagged_pairs"] > 0
        # Each identity's nearest other is at or above the threshold exactly when it is flagged.
        for name, cos in zip(names, table["nearest_identity_cos"], strict=True):
            assert (cos >= np.float32(threshold)) == (name in flagged)


# --- the EER found by bisection is the argmin over the whole curves ------------------------------


def brute_eer(genuine, impostor):
    """The definition, over every observed score as threshold, in plain Python."""
    thresholds = sorted(set(genuine.tolist()) | set(impostor.tolist()))
    best = None
    for t in thresholds:
        fmr = sum(s >= t for s in impostor) / len(impostor)
        fnmr = sum(s < t for s in genuine) / len(genuine)
        if best is None or abs(fmr - fnmr) < best[0]:
            best = (abs(fmr - fnmr), (fmr + fnmr) / 2, t)
    return best[1], best[2]


@pytest.mark.parametrize("seed", range(12))
def test_eer_by_bisection_equals_the_brute_force_argmin_even_with_ties(seed):
    rng = np.random.default_rng(seed)
    # Scores on a coarse grid: long runs of ties, plateaus of equal |FMR - FNMR|.
    genuine = np.round(rng.normal(0.5, 0.2, rng.integers(1, 40)), 1)
    impostor = np.round(rng.normal(0.1, 0.2, rng.integers(1, 60)), 1)
    eer, threshold = equal_error_rate(genuine, impostor)
    expected_eer, expected_threshold = brute_eer(genuine, impostor)
    assert eer == pytest.approx(expected_eer, abs=1e-12)
    assert threshold == pytest.approx(expected_threshold)


def test_fnmr_at_an_fmr_no_observed_threshold_reaches_is_one():
    # 10 of 1,000 impostor scores at the top: FMR is exactly 1% above the zeros.
    impostor = np.r_[np.zeros(990), np.ones(10)]
    assert fnmr_at_fmr(np.array([0.5, 0.6]), impostor, 1e-3) is None  # too few pairs
    assert fnmr_at_fmr(np.array([0.5, 0.6]), impostor, 1e-2) == 0.0
    # 20 tie at the top: no observed threshold gets FMR to 1%, only one above every score.
    assert fnmr_at_fmr(np.array([0.5, 0.6]), np.r_[np.zeros(980), np.ones(20)], 1e-2) == 1.0


def test_consistency_leaves_out_single_image_identities():
    embeddings = unit(np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32))
    result = consistency(embeddings, ["a", "a", "b"])
    # a's two images are 0.894 from their centre; b's one image (cosine 1) does not count.
    assert result["share_at"]["0.5"] == 1.0 and result["share_at"]["0.3"] == 1.0
    assert np.isnan(result["mean_cos_to_centre"]["b"])
    assert result["mean_cos_to_centre"]["a"] == pytest.approx(np.cos(np.arctan2(0.8, 1.6)))
    single = consistency(embeddings[2:], ["b"])
    assert single["share_at"]["0.3"] is None


def test_the_evaluation_refuses_real_faces_embedded_by_another_model(tmp_path):
    """Cosines across two models' spaces mean nothing: a real faces' file embedded by another
    recognizer than DigiFace's is named, with both hashes."""
    from types import SimpleNamespace

    from digi2real.errors import DataError
    from digi2real.stages.evaluate import check_one_space

    digiface = SimpleNamespace(attrs={"arcface_sha256": "aaa"})
    same = SimpleNamespace(attrs={"arcface_sha256": "aaa"})
    other = SimpleNamespace(attrs={"arcface_sha256": "bbb"})
    check_one_space(tmp_path / "digiface.h5", digiface, {tmp_path / "ffhq.h5": same})
    with pytest.raises(DataError, match=r"gallery.h5: embedded by another recognizer \(sha256 bbb"):
        check_one_space(
            tmp_path / "digiface.h5",
            digiface,
            {tmp_path / "ffhq.h5": same, tmp_path / "gallery.h5": other},
        )
