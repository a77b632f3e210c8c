"""The quality filter's reasons, their order and its two gates (near a real face, identity
collision), on a small manifest built by hand."""

import numpy as np
import pyarrow as pa
import pytest

from digi2real.dataset import Thresholds, apply_filter
from digi2real.shard_store import MANIFEST_SCHEMA

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(17)
NAN = float("nan")


def unit(vector):
    return vector / np.linalg.norm(vector)


def random_unit():
    return unit(RNG.normal(size=512))


def near(vector, spread=0.2):
    return unit(vector + spread * random_unit())


def manifest(rows) -> pa.Table:
    """rows: (identity, image_index, status, det_score, cos_prototype); every other column of
    the manifest filled in as a shard writes it."""
    columns = {name: [] for name in MANIFEST_SCHEMA.names}
    for identity, index, status, det, cos in rows:
        generated = status not in ("skipped", "failed")
        values = {
            "identity": identity,
            "image_index": index,
            "shard": 0,
            "seed": 1000 + index,
            "t": 0.5,
            "source_image": f"{identity}/0.png",
            "status": status,
            "message": "" if status == "ok" else status,
            "archive": "shards/0/images.zip" if generated else "",
            "raw_path": f"raw/{identity}/{index}.jpg" if generated else "",
            "aligned_path": f"aligned/{identity}/{index}.png" if status == "ok" else "",
            "det_score": det,
            "cos_prototype": cos,
            "cos_condition": cos,
            "image_key": f"key-{identity}-{index}",
        }
        for name, value in values.items():
            columns[name].append(value)
    return pa.table(columns, schema=MANIFEST_SCHEMA)


VA, VE, VF = random_unit(), random_unit(), random_unit()
ZERO = np.zeros(512)

# identity, index, status, det, cos, real_cos, embedding, reason with every gate on
ROWS = [
    ("A", 0, "no_face", NAN, NAN, NAN, ZERO, "no_face"),
    ("A", 1, "ok", 0.1, 0.8, 0.9, near(VA), "low_det_score"),  # low score and near real
    ("A", 2, "ok", 0.9, 0.1, 0.9, near(VA), "low_cos_prototype"),  # low cosine and near real
    ("A", 3, "ok", 0.9, 0.8, 0.2, near(VA), ""),
    ("A", 4, "ok", 0.9, 0.8, 0.1, near(VA), ""),
    # B: near real takes one image, the other is then alone.
    ("B", 0, "ok", 0.9, 0.8, 0.7, random_unit(), "near_real_face"),
    ("B", 1, "ok", 0.9, 0.8, 0.1, random_unit(), "too_few_images_in_identity"),
    # C: its centre is A's, and C comes later.
    ("C", 0, "ok", 0.9, 0.8, 0.1, near(VA), "identity_collision"),
    ("C", 1, "ok", 0.9, 0.8, 0.2, near(VA), "identity_collision"),
    ("C", 2, "ok", 0.1, 0.8, 0.2, near(VA), "low_det_score"),  # rejected before: stays so
    # D: all rejected earlier; its images are E's, yet D cannot collide with E.
    ("D", 0, "ok", 0.1, 0.8, 0.1, near(VE, 0.05), "low_det_score"),
    ("D", 1, "ok", 0.9, 0.1, 0.1, near(VE, 0.05), "low_cos_prototype"),
    ("D", 2, "skipped", NAN, NAN, NAN, ZERO, "skipped"),
    ("E", 0, "ok", 0.9, 0.8, 0.1, near(VE), ""),
    ("E", 1, "ok", 0.9, 0.8, 0.1, near(VE), ""),
    # F: two passing images of its own face; three rejected ones near A's, which would pull
    # its centre to cos 3 / sqrt(13) = 0.83 of A's were they counted.
    ("F", 0, "ok", 0.9, 0.8, 0.1, near(VF, 0.05), ""),
    ("F", 1, "ok", 0.9, 0.05, 0.1, near(VA, 0.05), "low_cos_prototype"),
    ("F", 2, "ok", 0.2, 0.8, 0.1, near(VA, 0.05), "low_det_score"),
    ("F", 3, "ok", 0.9, 0.8, 0.95, near(VA, 0.05), "near_real_face"),
    ("F", 4, "ok", 0.9, 0.8, NAN, near(VF, 0.05), ""),  # no real cosine: never near
    ("G", 0, "failed", NAN, NAN, NAN, ZERO, "failed"),
]

TABLE = manifest([row[:5] for row in ROWS])
REAL_COS = np.array([row[5] for row in ROWS])
EMBEDDINGS = np.stack([row[6] for row in ROWS]).astype(np.float32)
EXPECTED = [row[7] for row in ROWS]

BASE = {"min_det_score": 0.5, "min_cos_prototype": 0.3, "min_images_per_identity": 2}
ALL_GATES = Thresholds(**BASE, max_real_similarity=0.5, max_identity_similarity=0.8)


def check_columns(filtered, reasons):
    assert filtered.column("reject_reason").to_pylist() == reasons
    assert filtered.column("passed").to_pylist() == [r == "" for r in reasons]
    # The manifest's own columns are untouched (NaN scores compared as equal).
    assert filtered.schema.names == [
        *MANIFEST_SCHEMA.names,
        "passed",
        "reject_reason",
    ]
    for name in MANIFEST_SCHEMA.names:
        np.testing.assert_array_equal(
            filtered.column(name).to_numpy(zero_copy_only=False),
            TABLE.column(name).to_numpy(zero_copy_only=False),
        )


def test_the_planted_case_is_what_it_claims():
    # A and C share a face, E and D too; F's passing images are far from every other face.
    def centre(identity, rows=None):
        picked = [k for k, row in enumerate(ROWS) if row[0] == identity]
        picked = rows if rows is not None else picked
        return unit(EMBEDDINGS[picked].astype(np.float64).sum(axis=0))

    a, c = centre("A", [3, 4]), centre("C", [7, 8])
    assert a @ c >= 0.8
    assert centre("D", [10, 11]) @ centre("E") >= 0.8
    assert centre("F", [15, 16, 17, 18, 19]) @ a >= 0.8  # were the rejected counted
    assert centre("F", [15, 19]) @ a < 0.5


def test_every_reason_in_its_order():
    filtered = apply_filter(TABLE, ALL_GATES, REAL_COS, EMBEDDINGS)
    check_columns(filtered, EXPECTED)
    assert set(EXPECTED) == {
        "",
        "no_face",
        "skipped",
        "failed",
        "low_det_score",
        "low_cos_prototype",
        "near_real_face",
        "too_few_images_in_identity",
        "identity_collision",
    }


def test_gates_off_filter_as_before():
    before = [
        "no_face",
        "low_det_score",
        "low_cos_prototype",
        "",
        "",
        "",  # B: no near-real gate, two images pass
        "",
        "",  # C: no collision gate
        "",
        "low_det_score",
        "low_det_score",
        "low_cos_prototype",
        "skipped",
        "",
        "",
        "",
        "low_cos_prototype",
        "low_det_score",
        "",  # F 3: no near-real gate
        "",
        "failed",
    ]
    plain = Thresholds(**BASE)
    check_columns(apply_filter(TABLE, plain), before)
    # Given the inputs of the gates, with the gates off: still the same.
    check_columns(apply_filter(TABLE, plain, REAL_COS, EMBEDDINGS), before)


def test_each_gate_alone():
    real_only = Thresholds(**BASE, max_real_similarity=0.5)
    reasons = apply_filter(TABLE, real_only, REAL_COS).column("reject_reason").to_pylist()
    expected = [r if r != "identity_collision" else "" for r in EXPECTED]
    assert reasons == expected
    collision_only = Thresholds(**BASE, max_identity_similarity=0.8)
    reasons = apply_filter(TABLE, collision_only, embeddings=EMBEDDINGS)
    reasons = reasons.column("reject_reason").to_pylist()
    # B's first image and F's fourth pass now, so B is not too few; F's fourth (near A's face)
    # pulls F's centre to cos ~1/sqrt(5) of A's only: below 0.8, F stays.
    expected = list(EXPECTED)
    expected[5:7] = ["", ""]
    expected[18] = ""
    assert reasons == expected


def test_the_later_identity_of_a_collision_goes():
    # With C's rows before A's, A is the later identity and goes; C stays.
    order = [7, 8, 9, 0, 1, 2, 3, 4]
    table = TABLE.take(order)
    filtered = apply_filter(table, ALL_GATES, REAL_COS[order], EMBEDDINGS[order])
    assert filtered.column("reject_reason").to_pylist() == [
        "",
        "",
        "low_det_score",
        "no_face",
        "low_det_score",
        "low_cos_prototype",
        "identity_collision",
        "identity_collision",
    ]


def test_the_collision_gate_is_greedy_against_kept_identities():
    # Three identities in a chain: X ~ Y and Y ~ Z, X !~ Z. Y goes; Z, close only to the
    # dropped Y, stays.
    e = np.eye(3, 512)
    theta = np.arccos(0.6)
    x = e[0]
    y = np.cos(theta) * e[0] + np.sin(theta) * e[1]
    s = 0.6 / np.sin(theta)
    z = s * e[1] + np.sqrt(1 - s**2) * e[2]
    rows = [(name, k, "ok", 0.9, 0.8) for name in "XYZ" for k in range(2)]
    table = manifest(rows)
    embeddings = np.repeat(np.stack([x, y, z]), 2, axis=0).astype(np.float32)
    reasons = apply_filter(
        table, Thresholds(**BASE, max_identity_similarity=0.59), None, embeddings
    )
    assert (
        reasons.column("reject_reason").to_pylist()
        == [""] * 2 + ["identity_collision"] * 2 + [""] * 2
    )
    reasons = apply_filter(
        table, Thresholds(**BASE, max_identity_similarity=0.61), None, embeddings
    )
    assert reasons.column("passed").to_pylist() == [True] * 6


def test_a_gate_without_its_input_is_an_error():
    with pytest.raises(ValueError, match="real_cos"):
        apply_filter(TABLE, Thresholds(**BASE, max_real_similarity=0.5), embeddings=EMBEDDINGS)
    with pytest.raises(ValueError, match="embedding"):
        apply_filter(TABLE, Thresholds(**BASE, max_identity_similarity=0.8), REAL_COS)
