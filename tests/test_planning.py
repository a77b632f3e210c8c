"""SLERP, prototypes, seeds and the identity plan, against closed-form math."""

import re

import numpy as np
import pytest

from digi2real import evaluation, planning
from digi2real.config import resolve_config
from digi2real.formats import EmbeddingTable, read_plan, write_embeddings, write_plan
from digi2real.planning import (
    PlanSettings,
    gate_identities,
    image_seed,
    normalize,
    plan_identities,
    prototype,
    prototypes_of,
    slerp,
)

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(1)


def plan_settings(seed: int = 0, **plan) -> PlanSettings:
    """Settings as a run resolves them: the schema's defaults, `plan` keys overridden."""
    t = {k.removeprefix("t_"): plan.pop(k) for k in list(plan) if k.startswith("t_")}
    if t:
        plan["t"] = t
    return PlanSettings.from_config(resolve_config({"seed": seed, "plan": plan}))


def unit(n=512):
    return normalize(RNG.normal(size=n))


def angle(a, b):
    return float(np.arccos(np.clip(normalize(a) @ normalize(b), -1, 1)))


def test_slerp_endpoints_are_the_two_vectors():
    p, e = unit(), unit()
    np.testing.assert_allclose(slerp(p, e, 0.0), p, atol=1e-12)
    np.testing.assert_allclose(slerp(p, e, 1.0), e, atol=1e-12)


@pytest.mark.parametrize("t", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_slerp_is_unit_and_angle_is_linear_in_t(t):
    p, e = unit(), unit()
    theta = angle(p, e)
    v = slerp(p, e, t)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-12)
    assert angle(p, v) == pytest.approx(t * theta, abs=1e-9)
    assert angle(v, e) == pytest.approx((1 - t) * theta, abs=1e-9)


def test_slerp_stays_on_the_plane_of_p_and_e():
    p, e = unit(), unit()
    v = slerp(p, e, 0.3)
    basis, _ = np.linalg.qr(np.stack([p, e], axis=1))
    np.testing.assert_allclose(basis @ (basis.T @ v), v, atol=1e-12)


def test_slerp_near_zero_angle_is_finite_and_unit():
    p = unit()
    e = normalize(p + 1e-12 * unit())
    for t in (0.0, 0.5, 1.0):
        v = slerp(p, e, t)
        assert np.all(np.isfinite(v))
        assert np.linalg.norm(v) == pytest.approx(1.0)
        np.testing.assert_allclose(v, p, atol=1e-9)


def test_slerp_at_antipodes_is_a_unit_great_circle():
    p = unit()
    for t in (0.0, 0.25, 0.5, 1.0):
        v = slerp(p, -p, t)
        assert np.all(np.isfinite(v))
        assert np.linalg.norm(v) == pytest.approx(1.0)
        assert angle(p, v) == pytest.approx(t * np.pi, abs=1e-7)


def test_prototype_is_the_renormalised_mean():
    vectors = np.stack([unit() for _ in range(5)])
    expected = vectors.mean(0) / np.linalg.norm(vectors.mean(0))
    np.testing.assert_allclose(prototype(vectors), expected, atol=1e-12)
    # Non-unit inputs are normalised first: scaling one input changes nothing.
    scaled = vectors.copy()
    scaled[0] *= 7.0
    np.testing.assert_allclose(prototype(scaled), expected, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 73])
def test_prototype_is_numpys_mean_of_unit_rows_to_the_bit(n):
    # The arithmetic the plans were always made with: a changed last bit changes a condition,
    # and so every image.
    def unit_rows(vectors):  # as the plans' prototypes have always been normalised
        vectors = vectors.astype(np.float64)
        return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)

    vectors = RNG.normal(size=(n, 512)).astype(np.float32)
    np.testing.assert_array_equal(prototype(vectors), unit_rows(unit_rows(vectors).mean(axis=0)))


def test_image_seed_is_stable_and_depends_on_every_part():
    seed = image_seed(0, "17", 3)
    assert seed == image_seed(0, "17", 3)
    assert 0 <= seed < 2**63
    others = {image_seed(1, "17", 3), image_seed(0, "18", 3), image_seed(0, "17", 4)}
    assert seed not in others and len(others) == 3
    # The first 8 bytes (little-endian, top bit cleared) of sha256("image/0/17/3"), computed by
    # hand: the seed must not drift between releases, machines or Python versions.
    assert seed == 8745502224342729122


def table_for(identities_images: dict[str, int], bad: set[tuple[str, int]] = frozenset()):
    rows = [(i, k) for i, n in identities_images.items() for k in range(n)]
    return EmbeddingTable(
        embedding=np.stack([unit() for _ in rows]).astype(np.float32),
        status=np.array([2 if row in bad else 0 for row in rows], np.int8),
        identity=[i for i, _ in rows],
        path=[f"{i}/{k}.png" for i, k in rows],
        det_score=np.ones(len(rows), np.float32),
        message=[""] * len(rows),
    )


def test_plan_is_independent_of_how_identities_are_sharded():
    table = table_for({"0": 3, "1": 4, "2": 2, "3": 5})
    settings = plan_settings(images_per_identity=5, t_mode="uniform", t_low=0.2, t_high=0.8)
    whole = plan_identities(table, ["0", "1", "2", "3"], settings, shard=0)
    halves = [
        plan_identities(table, ids, settings, s) for s, ids in enumerate([["0", "1"], ["2", "3"]])
    ]
    assert whole.seed == halves[0].seed + halves[1].seed
    assert whole.t == halves[0].t + halves[1].t
    assert whole.source_path == halves[0].source_path + halves[1].source_path
    np.testing.assert_array_equal(
        np.stack(whole.condition), np.stack(halves[0].condition + halves[1].condition)
    )


def test_plan_conditions_are_slerps_of_prototype_and_source():
    table = table_for({"7": 3})
    settings = plan_settings(images_per_identity=6, t_mode="list", t_values=[0.25, 0.75])
    plan = plan_identities(table, ["7"], settings, shard=0)
    center = prototype(table.embedding.astype(np.float64))
    assert plan.source_path == ["7/0.png", "7/1.png", "7/2.png"] * 2
    assert plan.t == [0.25, 0.75] * 3
    for k in range(6):
        source = table.embedding[k % 3].astype(np.float64)
        np.testing.assert_allclose(plan.condition[k], slerp(center, source, plan.t[k]), atol=1e-6)


def test_uniform_t_and_random_source_are_seeded_and_in_range():
    table = table_for({"a": 4})
    settings = plan_settings(
        images_per_identity=50, t_mode="uniform", t_low=0.3, t_high=0.6, source="random", seed=5
    )
    plan = plan_identities(table, ["a"], settings, shard=0)
    assert all(0.3 <= t <= 0.6 for t in plan.t)
    assert len(set(plan.t)) == 50
    assert set(plan.source_path) == {f"a/{k}.png" for k in range(4)}
    again = plan_identities(table, ["a"], settings, shard=0)
    assert again.t == plan.t and again.source_path == plan.source_path


def test_identities_with_too_few_ok_images_are_skipped_with_the_reason():
    table = table_for({"0": 3, "1": 3}, bad={("1", 0), ("1", 1)})
    settings = plan_settings(images_per_identity=2, min_source_images=2)
    plan = plan_identities(table, ["0", "1", "9"], settings, shard=0)
    assert plan.identity_status == ["planned", "skipped", "skipped"]
    assert "1 of 3 source images ok" in plan.identity_reason[1]
    assert "0 of 0" in plan.identity_reason[2]
    assert set(plan.image_identity) == {"0"}
    # Only ok embeddings enter the prototype and the sources.
    table2 = table_for({"x": 3}, bad={("x", 2)})
    plan2 = plan_identities(table2, ["x"], plan_settings(images_per_identity=4), shard=0)
    np.testing.assert_allclose(plan2.prototypes[0], prototype(table2.embedding[:2]), atol=1e-6)
    assert "x/2.png" not in plan2.source_path


def test_plan_file_round_trip(tmp_path):
    table = table_for({"0": 3, "1": 1})
    plan = plan_identities(
        table, ["0", "1"], plan_settings(images_per_identity=3, min_source_images=2), 4
    )
    plan.attrs = {"seed": 0, "n_shards": 5}
    write_plan(tmp_path / "4.h5", plan)
    back = read_plan(tmp_path / "4.h5")
    assert back.shard == 4 and back.attrs["n_shards"] == 5
    assert back.identities == ["0", "1"] and back.identity_status == ["planned", "skipped"]
    assert back.seed == plan.seed and back.source_path == plan.source_path
    np.testing.assert_array_equal(np.stack(back.condition), np.stack(plan.condition))


# --- the plan's gates ----------------------------------------------------------------------------


def near(vector, spread):
    return normalize(vector + spread * unit(len(vector)))


def gate(
    names, prototypes, eligible=None, real=None, real_labels=(), real_max=None, proto_max=None
):
    eligible = np.ones(len(names), bool) if eligible is None else np.asarray(eligible, bool)
    real = np.zeros((0, 512), np.float32) if real is None else np.asarray(real, np.float32)
    return gate_identities(
        names,
        np.asarray(prototypes, np.float32),
        eligible,
        real,
        list(real_labels),
        real_max,
        proto_max,
    )


def test_gates_off_drop_nothing():
    names = ["a", "b"]
    p = unit()
    prototypes = np.stack([p, p])  # identical, and identical to the real face
    assert gate(names, prototypes, real=p[None], real_labels=["r"]) == {}


def test_real_gate_drops_exactly_the_identities_near_a_real_face():
    real = np.stack([unit() for _ in range(30)])
    labels = [f"ffhq:{k:05d}.png" for k in range(30)]
    prototypes = np.stack([unit() for _ in range(12)])
    prototypes[2] = near(real[17], 0.2)
    prototypes[8] = near(real[4], 0.5)
    prototypes[10] = near(real[29], 2.0)  # far enough to stay
    names = [f"id{k}" for k in range(12)]
    for threshold in (0.5, 0.7, 0.95):
        dropped = gate(names, prototypes, real=real, real_labels=labels, real_max=threshold)
        expected = {}
        for k in range(12):
            scores = [float(prototypes[k] @ r) for r in real]
            if max(scores) >= threshold:
                expected[names[k]] = labels[int(np.argmax(scores))]
        assert set(dropped) == set(expected)
        for name, label in expected.items():
            assert label in dropped[name]
            assert f"plan.max_real_similarity={threshold}" in dropped[name]
    assert set(gate(names, prototypes, real=real, real_labels=labels, real_max=0.7)) == {
        "id2",
        "id8",
    }


def chain_of_three():
    """a, b, c with cos(a, b) = cos(b, c) = 0.6 and cos(a, c) = 0."""
    e = np.eye(3, 512)
    theta = np.arccos(0.6)
    a = e[0]
    b = np.cos(theta) * e[0] + np.sin(theta) * e[1]
    x = 0.6 / np.sin(theta)
    c = x * e[1] + np.sqrt(1 - x**2) * e[2]
    return np.stack([a, b, c])


def test_prototype_gate_is_greedy_against_kept_identities_only():
    vectors = chain_of_three()
    np.testing.assert_allclose(
        vectors @ vectors.T, [[1, 0.6, 0], [0.6, 1, 0.6], [0, 0.6, 1]], atol=1e-12
    )
    dropped = gate(["a", "b", "c"], vectors, proto_max=0.5)
    assert list(dropped) == ["b"]  # c is close only to the dropped b
    assert "identity a's" in dropped["b"]
    assert "plan.max_prototype_similarity=0.5" in dropped["b"]
    # In another order: b first drops both a and c.
    assert set(gate(["b", "a", "c"], vectors[[1, 0, 2]], proto_max=0.5)) == {"a", "c"}
    assert gate(["a", "b", "c"], vectors, proto_max=0.7) == {}


def brute_gate(prototypes, eligible, threshold):
    kept, dropped = [], []
    for k in range(len(prototypes)):
        if not eligible[k]:
            continue
        if any(float(prototypes[k] @ prototypes[j]) >= threshold for j in kept):
            dropped.append(k)
        else:
            kept.append(k)
    return dropped


@pytest.mark.parametrize("block", [1, 3, 2048])
def test_prototype_gate_equals_a_brute_force_greedy(monkeypatch, block):
    monkeypatch.setattr(evaluation, "BLOCK_ROWS", block)  # the gate is uniqueness's pass
    rng = np.random.default_rng(3)
    shared = normalize(rng.normal(size=512))
    prototypes = normalize(0.6 * shared + 0.4 * normalize(rng.normal(size=(25, 512))))
    prototypes = prototypes.astype(np.float32)
    eligible = rng.random(25) > 0.2
    names = [f"n{k}" for k in range(25)]
    for threshold in (0.7, 0.71, 0.72):
        expected = brute_gate(prototypes.astype(np.float64), eligible, threshold)
        assert 1 < len(expected) < eligible.sum() - 2  # neither nothing nor everything
        dropped = gate(names, prototypes, eligible=eligible, proto_max=threshold)
        assert sorted(dropped, key=names.index) == [names[k] for k in expected]
        every = brute_gate(prototypes.astype(np.float64), np.ones(25, bool), threshold)
        dropped = gate(names, prototypes, proto_max=threshold)
        assert sorted(dropped, key=names.index) == [names[k] for k in every]


def test_prototype_gate_names_the_most_similar_kept_identity_and_agrees_with_uniqueness():
    rng = np.random.default_rng(4)
    shared = normalize(rng.normal(size=512))
    prototypes = normalize(0.6 * shared + 0.4 * normalize(rng.normal(size=(25, 512))))
    prototypes = prototypes.astype(np.float32)
    names = [f"n{k}" for k in range(25)]
    dropped = gate(names, prototypes, proto_max=0.71)
    kept = []
    for k in range(25):
        scores = [float(prototypes[k].astype(np.float64) @ prototypes[j]) for j in kept]
        if scores and max(scores) >= 0.71:
            score, closest = re.match(
                r"prototype (\S+) cosine to identity (\S+)'s", dropped[names[k]]
            ).groups()
            assert closest == f"n{kept[int(np.argmax(scores))]}"
            assert float(score) == pytest.approx(max(scores), abs=1e-4)
        else:
            kept.append(k)
    assert len(kept) == 25 - len(dropped) and 1 < len(dropped) < 20
    # The certificate's U_class counts what the plan's gate kept.
    assert evaluation.uniqueness(names, prototypes, 0.71).kept == len(kept)


def test_real_gate_dropouts_do_not_block_the_prototype_gate():
    vectors = chain_of_three()
    real = vectors[[1]]  # b is a real face
    dropped = gate(
        ["a", "b", "c"], vectors, real=real, real_labels=["ffhq:b"], real_max=0.9, proto_max=0.5
    )
    assert list(dropped) == ["b"] and "ffhq:b" in dropped["b"]
    # b first: the real gate drops it, so a and c, which collide only with b, stay.
    dropped = gate(
        ["b", "a", "c"],
        vectors[[1, 0, 2]],
        real=real,
        real_labels=["ffhq:b"],
        real_max=0.9,
        proto_max=0.5,
    )
    assert list(dropped) == ["b"]
    assert "max_real_similarity" in dropped["b"]


def test_ineligible_identities_are_never_dropped_and_block_nothing():
    vectors = chain_of_three()
    real = vectors[[2]]  # c is a real face
    # b is ineligible: it neither drops a or c nor is dropped; c is ineligible: the real gate
    # passes over it.
    dropped = gate(
        ["b", "a", "c"],
        vectors[[1, 0, 2]],
        eligible=[False, True, False],
        real=real,
        real_labels=["ffhq:c"],
        real_max=0.9,
        proto_max=0.5,
    )
    assert dropped == {}
    same = np.stack([vectors[0], vectors[0], vectors[0]])
    assert list(gate(["x", "y", "z"], same, eligible=[False, True, True], proto_max=0.5)) == ["z"]


def test_prototypes_of_uses_ok_rows_only_and_zeros_without_any():
    table = table_for({"p": 3, "q": 2}, bad={("p", 1), ("q", 0), ("q", 1)})
    out = prototypes_of(table, ["q", "p", "missing"])
    assert out.shape == (3, 512) and out.dtype == np.float32
    mean = table.embedding[0].astype(np.float64) + table.embedding[2]
    np.testing.assert_allclose(out[1], mean / np.linalg.norm(mean), atol=1e-6)
    assert not out[0].any() and not out[2].any()


def shuffled_table(rng) -> EmbeddingTable:
    """Identities of 1 to 9 images, their rows interleaved, a few not ok (zero embeddings)."""
    identity = [f"i{k}" for k in range(8) for _ in range(int(rng.integers(1, 10)))]
    identity = [identity[k] for k in rng.permutation(len(identity))]
    status = np.where(rng.random(len(identity)) < 0.2, 2, 0).astype(np.int8)
    embedding = normalize(rng.normal(size=(len(identity), 512))).astype(np.float32)
    embedding[status != 0] = 0
    return EmbeddingTable(
        embedding=embedding,
        status=status,
        identity=identity,
        path=[f"{k}.png" for k in range(len(identity))],
        det_score=np.ones(len(identity), np.float32),
        message=[""] * len(identity),
    )


@pytest.mark.parametrize("chunk", [1, 4, 65_536])
def test_one_centre_everywhere_to_the_bit(monkeypatch, tmp_path, chunk):
    # The plan's prototypes, the gates', the certificate's centres and the streamed
    # prototypes of the evaluation are one computation: equal to the bit, whatever the chunks.
    from digi2real.stages.evaluate import streamed_prototypes

    monkeypatch.setattr(planning, "CHUNK_ROWS", chunk)
    monkeypatch.setattr(evaluation, "BLOCK_ROWS", max(1, chunk // 16))
    table = shuffled_table(np.random.default_rng(8))
    names = [f"i{k}" for k in range(8)] + ["missing"]
    gated = prototypes_of(table, names)
    settings = plan_settings(images_per_identity=1, min_source_images=1)
    planned = np.stack(plan_identities(table, names, settings, shard=0).prototypes)
    np.testing.assert_array_equal(gated, planned)
    assert not gated[-1].any()
    write_embeddings(tmp_path / "digiface.h5", table)
    streamed = streamed_prototypes(tmp_path / "digiface.h5", table, names)
    np.testing.assert_array_equal(streamed, gated)
    ok = table.status == 0
    labels = [name for name, good in zip(table.identity, ok, strict=True) if good]
    centre_names, centres, _ = evaluation.identity_centres(table.embedding[ok], labels)
    np.testing.assert_array_equal(centres, gated[[names.index(n) for n in centre_names]])
    # Against the definition, in float64 and plain Python.
    for name, got in zip(names[:-1], gated[:-1], strict=True):
        rows = [
            v.astype(np.float64) / np.linalg.norm(v.astype(np.float64))
            for v, n, good in zip(table.embedding, table.identity, ok, strict=True)
            if n == name and good
        ]
        mean = sum(rows) / len(rows)
        np.testing.assert_allclose(got, mean / np.linalg.norm(mean), atol=1e-7)


def test_dropped_identities_are_skipped_with_their_reason_and_prototype():
    table = table_for({"0": 3, "1": 4, "2": 2})
    settings = plan_settings(images_per_identity=4, t_mode="uniform", t_low=0.2, t_high=0.8)
    whole = plan_identities(table, ["0", "1", "2"], settings, shard=0)
    reason = "prototype 0.9000 cosine to the real face ffhq:x"
    gated = plan_identities(table, ["0", "1", "2"], settings, shard=0, dropped={"1": reason})
    assert gated.identities == ["0", "1", "2"]
    assert gated.identity_status == ["planned", "skipped", "planned"]
    assert gated.identity_reason == ["", reason, ""]
    assert gated.n_sources_ok == [3, 4, 2]
    assert "1" not in gated.image_identity and len(gated.image_identity) == 8
    expected = table.embedding[3:7].astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(gated.prototypes[1], expected / np.linalg.norm(expected), atol=1e-6)
    # The other identities' images are those of the ungated plan.
    keep = [k for k, identity in enumerate(whole.image_identity) if identity != "1"]
    assert gated.image_identity == [whole.image_identity[k] for k in keep]
    assert gated.image_index == [whole.image_index[k] for k in keep]
    assert gated.seed == [whole.seed[k] for k in keep]
    assert gated.t == [whole.t[k] for k in keep]
    assert gated.source_path == [whole.source_path[k] for k in keep]
    np.testing.assert_array_equal(
        np.stack(gated.condition), np.stack([whole.condition[k] for k in keep])
    )
    for k in (0, 2):
        np.testing.assert_array_equal(gated.prototypes[k], whole.prototypes[k])
