"""SLERP, prototypes, seeds and the identity plan, against closed-form math."""

import numpy as np
import pytest

from digi2real.config import resolve_config
from digi2real.formats import EmbeddingTable, read_plan, write_plan
from digi2real.planning import (
    PlanSettings,
    image_seed,
    normalize,
    plan_identities,
    prototype,
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
