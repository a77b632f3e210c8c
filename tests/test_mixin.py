"""The real-data mix-in (export.mixin): the draw, its errors, the labels every export gives the
real identities, their leak search and the fine-tuning on them. The demo's workflow run reads
its exports back with MXNet, webdataset and wids (tests/test_exports.py's shared check)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from digi2real import mixin
from digi2real.config import resolve_config
from digi2real.errors import ConfigError, DataError
from digi2real.evaluation import EvaluationSettings, Gallery
from digi2real.exports import (
    REAL,
    SYNTHETIC,
    Classes,
    export_samples,
    write_imagefolder,
    write_labelled_recordio,
    write_recordio,
    write_webdataset,
)
from digi2real.shard_store import image_archive
from digi2real.stages import mixin_leaks, sample_mixin
from digi2real.training import TrainingSet
from digi2real.training_data import RecordIOFaces, WebDatasetFaces
from tests.test_training import face_jpeg

pytestmark = pytest.mark.unit


def face_png(identity: int, k: int, size: int = 112) -> bytes:
    rng = np.random.default_rng([identity, k, 7])
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def source_folder(root: Path, images: dict[str, int]) -> Path:
    """Identity folders `<root>/<name>/<k>.png`, `images[name]` of each."""
    for n, (name, count) in enumerate(images.items()):
        (root / name).mkdir(parents=True)
        for k in range(count):
            (root / name / f"{k}.png").write_bytes(face_png(n, k))
    return root


def mixin_config(source: Path, identities: int, per_identity: int, seed: int | None = None):
    settings = {
        "source": str(source),
        "identities": identities,
        "images_per_identity": per_identity,
    }
    if seed is not None:
        settings["seed"] = seed
    return resolve_config({"export": {"mixin": settings}})


# --- the draw --------------------------------------------------------------------------------


def test_the_same_seed_draws_the_same_sample_and_another_seed_another(tmp_path):
    source = source_folder(tmp_path / "real", {f"p{n:02d}": 5 for n in range(12)})
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        summary = sample_mixin.run(mixin_config(source, 4, 3, seed), tmp_path / name)
        assert summary["identities"] == 4 and summary["images"] == 12
        runs[name] = (tmp_path / name / "faces.csv").read_text()
        assert (tmp_path / name / "faces.zip").is_file()
    assert runs["a"] == runs["b"]
    assert (tmp_path / "a/faces.zip").read_bytes() == (tmp_path / "b/faces.zip").read_bytes()
    assert runs["a"] != runs["c"]
    # Listing order does not matter: the draw sorts by name.
    identities = mixin.open_source(source).identities()
    assert mixin.draw(identities, 4, 3, 3) == mixin.draw(identities[::-1], 4, 3, 3)


def test_the_draw_takes_only_identities_with_enough_images_and_keeps_their_bytes(tmp_path):
    source = source_folder(tmp_path / "real", {"few": 2, "x": 3, "y": 4, "z": 3})
    sample_mixin.run(mixin_config(source, 3, 3), tmp_path / "out")
    faces = mixin.read_faces(tmp_path / "out")
    assert [f.identity for f in faces] == ["x"] * 3 + ["y"] * 3 + ["z"] * 3
    assert [f.position for f in faces] == [0] * 3 + [1] * 3 + [2] * 3
    with zipfile.ZipFile(tmp_path / "out/faces.zip") as archive:
        table = (tmp_path / "out/faces.csv").read_text().splitlines()[1:]
        for face, row in zip(faces, table, strict=True):
            origin = row.split(",")[-1]
            assert archive.read(face.member) == (source / origin).read_bytes()
    summary = json.loads((tmp_path / "out/sample.json").read_text())
    assert summary["source_identities"] == 4 and summary["eligible_identities"] == 3


def test_a_recordio_source_without_names_gives_its_classes_by_number(tmp_path):
    folder = tmp_path / "casia"
    folder.mkdir()
    images = [(label, face_jpeg(label, k)) for label in range(3) for k in range(4)]
    write_labelled_recordio(folder, Classes(["a", "b", "c"], [REAL] * 3), images)
    (folder / "labels.csv").unlink()  # as insightface's releases: train.rec, .idx, property
    source = mixin.open_source(folder)
    assert source.kind == "recordio"
    assert [i.name for i in source.identities()] == ["0", "1", "2"]
    sample_mixin.run(mixin_config(folder, 2, 3, seed=1), tmp_path / "out")
    faces = mixin.read_faces(tmp_path / "out")
    assert len(faces) == 6 and all(f.member.endswith(".jpg") for f in faces)
    # Each copied face is the record's JPEG as stored.
    with zipfile.ZipFile(tmp_path / "out/faces.zip") as archive:
        stored = {archive.read(f.member) for f in faces}
    assert stored <= {jpeg for _, jpeg in images}


@pytest.mark.parametrize(
    "case, error, named",
    [
        ("missing", ConfigError, "export.mixin.source"),
        ("wrong size", DataError, "big/0.png"),
        ("empty identity", DataError, "hollow"),
        ("too few identities", ConfigError, "export.mixin.identities"),
        ("not an image", DataError, "broken/0.png"),
    ],
)
def test_a_bad_source_is_one_error_naming_it(tmp_path, case, error, named):
    root = source_folder(tmp_path / "real", {"a": 3, "b": 3})
    wanted = 2
    if case == "missing":
        root = tmp_path / "nowhere"
    elif case == "wrong size":
        (root / "big").mkdir()
        for k in range(3):
            (root / "big" / f"{k}.png").write_bytes(face_png(9, k, size=128))
        wanted = 3
    elif case == "empty identity":
        (root / "hollow").mkdir()
    elif case == "too few identities":
        wanted = 3
    elif case == "not an image":
        (root / "broken").mkdir()
        for k in range(3):
            (root / "broken" / f"{k}.png").write_bytes(b"not a png")
        wanted = 3
    with pytest.raises(error, match=named) as raised:
        sample_mixin.run(mixin_config(root, wanted, 3), tmp_path / "out")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()  # nothing half-written


# --- labels in every export ------------------------------------------------------------------


@pytest.fixture
def mixed_export_inputs(tmp_path):
    """A results folder with a shard archive of synthetic identities "0" and "1" (2 images
    each) and a mix-in sample of real identities "1", "0" and "7" (3 images each): two real
    ones bear synthetic names."""
    results = tmp_path / "results"
    (results / "shards/0").mkdir(parents=True)
    rows = []
    with image_archive(results / "shards/0/images.zip") as archive:
        for identity in ("0", "1"):
            for k in range(2):
                member = f"aligned/{identity}/{k}.png"
                archive.add(member, face_png(100 + int(identity), k))
                rows.append((identity, k, "shards/0/images.zip", member))
    manifest = pa.table(
        {
            "identity": [r[0] for r in rows],
            "image_index": [r[1] for r in rows],
            "archive": [r[2] for r in rows],
            "aligned_path": [r[3] for r in rows],
            "seed": [1] * len(rows),
            "t": [0.5] * len(rows),
            "det_score": [0.9] * len(rows),
            "cos_prototype": [0.7] * len(rows),
            "passed": [True] * len(rows),
        }
    )
    source = source_folder(tmp_path / "real", {"1": 3, "0": 3, "7": 3})
    sample_mixin.run(mixin_config(source, 3, 3), results / "mixin/sample")
    return manifest, results


def test_every_export_labels_real_identities_after_the_synthetic_ones(mixed_export_inputs):
    manifest, results = mixed_export_inputs
    classes, samples = export_samples(manifest, results, results / "mixin/sample")
    assert classes.identities == ["0", "1", "0", "1", "7"]
    assert classes.sources == [SYNTHETIC] * 2 + [REAL] * 3
    folders = {}
    for name, write in (
        ("recordio", lambda f: write_recordio(f, classes, samples, 95)),
        ("webdataset", lambda f: write_webdataset(f, classes, samples, 95, 4, 0)),
        ("imagefolder", lambda f: write_imagefolder(f, classes, samples)),
    ):
        folders[name] = results / "export" / name
        folders[name].mkdir(parents=True)
        write(folders[name])
    expected = "label,identity,images,source\n" + "".join(
        f"{k},{identity},{n},{source}\n"
        for k, (identity, n, source) in enumerate(
            [
                ("0", 2, SYNTHETIC),
                ("1", 2, SYNTHETIC),
                ("0", 3, REAL),
                ("1", 3, REAL),
                ("7", 3, REAL),
            ]
        )
    )
    for folder in folders.values():
        assert (folder / "labels.csv").read_text() == expected
    # Read back: labels 0..4, contiguous, each class its own images whatever its name.
    for reader in (RecordIOFaces(folders["recordio"]), WebDatasetFaces(folders["webdataset"])):
        assert sorted(set(reader.labels.tolist())) == [0, 1, 2, 3, 4]
        assert np.bincount(reader.labels).tolist() == [2, 2, 3, 3, 3]
        assert reader.sources == classes.sources
    names = sorted(p.name for p in folders["imagefolder"].iterdir() if p.is_dir())
    assert names == ["0_0", "1_1", "2_0", "3_1", "4_7"]  # torchvision: five classes
    # The real "0"'s faces are the source's "0", not the synthetic "0"'s.
    real_zero = sorted((folders["imagefolder"] / "2_0").iterdir())
    assert [p.read_bytes() for p in real_zero] == [
        (results.parent / "real/0" / f"{k}.png").read_bytes() for k in range(3)
    ]


def test_leaving_out_a_real_identity_keeps_the_synthetic_one_of_its_name(mixed_export_inputs):
    manifest, results = mixed_export_inputs
    classes, samples = export_samples(manifest, results, results / "mixin/sample")
    folder = results / "export/recordio"
    folder.mkdir(parents=True)
    write_recordio(folder, classes, samples, 95)
    records = RecordIOFaces(folder)
    data = TrainingSet.without(records, {(REAL, "0")})
    assert data.num_classes == 4
    assert (data.classes[records.labels == 0] == 0).all()  # the synthetic "0" stays
    assert (data.classes[records.labels == 2] == -1).all()  # the real "0" is left out
    synthetic = TrainingSet.without(records, set(), frozenset({SYNTHETIC}))
    assert synthetic.num_classes == 2 and len(synthetic.images) == 4
    real = TrainingSet.without(records, set(), frozenset({REAL}))
    assert real.num_classes == 3 and real.classes[records.labels == 2].tolist() == [0, 0, 0]


# --- leaks against the benchmarks ------------------------------------------------------------


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def test_a_real_identity_close_to_a_benchmark_face_is_flagged():
    rng = np.random.default_rng(0)
    benchmark = np.stack([unit(rng.normal(size=512)) for _ in range(6)])
    gallery = Gallery(benchmark, [f"benchmarks:lfw/{k}" for k in range(6)])
    # "anna": three faces around benchmark face 4 (centre cosine ~0.9); "ben": unrelated.
    anna = [unit(benchmark[4] + 0.25 * unit(rng.normal(size=512))) for _ in range(3)]
    ben = [unit(rng.normal(size=512)) for _ in range(3)]
    embeddings = np.stack(anna + ben)
    labels = ["anna"] * 3 + ["ben"] * 3
    settings = EvaluationSettings.from_config(
        resolve_config({"evaluation": {"leak_threshold": 0.5}})
    )
    rows = mixin_leaks.leaking_identities(embeddings, labels, gallery, settings)
    assert [(name, bench, image) for name, bench, image, _ in rows] == [("anna", "lfw", 4)]
    assert rows[0][3] > 0.9
    strict = EvaluationSettings.from_config(
        resolve_config({"evaluation": {"leak_threshold": 0.99}})
    )
    assert mixin_leaks.leaking_identities(embeddings, labels, gallery, strict) == []


def test_the_card_and_the_certificate_say_first_that_real_faces_are_in(tmp_path):
    source = source_folder(tmp_path / "real", {"a": 3, "b": 3})
    sample_mixin.run(mixin_config(source, 2, 3), tmp_path / "sample")
    leaks = tmp_path / "leaks.csv"
    leaks.write_text("identity,benchmark,image,cosine\nb,lfw,3,0.812345\n")
    section = mixin.card_section(tmp_path / "sample", leaks)
    assert section["identities"] == 2 and section["images"] == 6
    assert section["benchmark_leaks"] == 1
    assert section["statement"].startswith("Real faces mixed in")
    assert "6 images of 2 real people" in section["statement"]
    assert str(source) in section["statement"]
    assert mixin.card_section(None) is None

    from digi2real.pages import render
    from digi2real.stages.card import write_card_page

    del render  # the page writer is the card's own; its first line after the title is read
    card = {
        "mixin": section,
        "identities": {"selected": 2, "skipped_by_plan": 0, "planned": 2, "kept": 2},
        "images": {
            "planned": 4,
            "generated": 4,
            "detected": 4,
            "passed": 4,
            "per_kept_identity": 2,
            "rejected_by_reason": {},
        },  # fmt: skip
        "certificate": {"status": "computed"},
        "similarity": {},
        "storage": {},
        "job_seconds": {"by_rule": {}, "jobs_by_rule": {}, "total": 0},
        "config_sha256": "x",
        "image_keys_sha256": "y",
        "model_sha256": {},
    }
    write_card_page(tmp_path / "card.html", card)
    text = (tmp_path / "card.html").read_text()
    after_title = text.split("</h1>", 1)[1].lstrip()
    assert after_title.startswith('<p class="warning"')
    assert "Real faces mixed in" in after_title.split("</p>", 1)[0]


# --- fine-tuning -----------------------------------------------------------------------------


def test_fine_tuning_starts_from_the_backbone_at_the_scaled_learning_rates(tmp_path):
    from digi2real import training
    from digi2real.iresnet import iresnet

    folder = tmp_path / "recordio"
    folder.mkdir()
    images = [(label, face_jpeg(label, k)) for label in range(4) for k in range(4)]
    classes = Classes(["0", "1", "0", "1"], [SYNTHETIC, SYNTHETIC, REAL, REAL])
    write_labelled_recordio(folder, classes, images)
    config = resolve_config(
        {
            "train": {
                "network": "iresnet18", "embedding_size": 64, "batch_size": 4, "epochs": 1,
                "lr": 0.2, "gpus": 0, "loader_workers": 0, "cpu_threads": 1,
                "log_every_steps": 1, "finetune": {"head_lr_scale": 0.5, "backbone_lr_scale": 0.05},
            }
        }
    )  # fmt: skip
    torch.manual_seed(5)
    pretrained = iresnet("iresnet18", 64).state_dict()
    init = tmp_path / "backbone.pt"
    torch.save(pretrained, init)

    from digi2real.stages import train

    out = tmp_path / "out"
    code = train.run(
        config, folder, out / "work", out / "backbone.pt", out / "metrics.jsonl",
        classes="real", init=init,
    )  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["classes"] == 2 and lines[0]["images"] == 8  # the real identities alone
    steps = [line for line in lines if "loss" in line]
    assert len(steps) == 2
    assert all(line["lr"] == pytest.approx(0.2 * 0.05) for line in steps)
    assert all(line["head_lr"] == pytest.approx(0.2 * 0.5) for line in steps)
    # It started from the pre-trained backbone: two steps at lr 0.01 move its weights (not
    # the BatchNorm statistics, which follow the data whatever the rate) far less than the
    # distance to the network the seed would have started from.
    weights = [name for name, _ in iresnet("iresnet18", 64).named_parameters()]
    tuned = torch.load(out / "backbone.pt", weights_only=True)
    moved = max((tuned[k] - pretrained[k]).abs().max() for k in weights)
    torch.manual_seed(config["seed"])
    fresh = iresnet("iresnet18", 64).state_dict()
    assert 0 < moved < 0.1 * max((fresh[k] - pretrained[k]).abs().max() for k in weights)
    # The settings say so too, and a checkpoint of the scratch settings is not resumed.
    settings = training.TrainSettings.from_config(config)
    assert (settings.backbone_lr_scale, settings.head_lr_scale) == (1.0, 1.0)
    tuning = settings.fine_tuning(config)
    assert (tuning.backbone_lr_scale, tuning.head_lr_scale) == (0.05, 0.5)
    data = TrainingSet.without(RecordIOFaces(folder), set(), frozenset({REAL}))
    assert settings.fingerprint(data, 1) != tuning.fingerprint(data, 1)
    assert tuning.fingerprint(data, 1) != tuning.fingerprint(data, 1, pretrained)


def test_the_dry_run_names_a_missing_mix_in_source(tmp_path):
    from digi2real.preflight import _check_training

    config = mixin_config(tmp_path / "nowhere", 2, 3)
    with pytest.raises(ConfigError, match="export.mixin.source: .*nowhere is not a folder"):
        _check_training(config)
    config = mixin_config(source_folder(tmp_path / "real", {"a": 3}), 1, 3)
    _check_training(config)  # there: nothing said
