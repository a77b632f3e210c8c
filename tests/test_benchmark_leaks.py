"""No test-set leakage: the certificate's leakage search in the faces of the benchmarks a trained
recognizer is tested on. Planted embeddings (an identity's centre that is a benchmark face)
flagged in benchmark_leaks.csv and the certificate, and nothing else; the benchmark faces
embedded as the face pipeline embeds them read from disk; the workflow wiring, by dry run."""

import dataclasses
import io
import json
import os
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from digi2real import certificate, evaluation
from digi2real.config import config_slice, resolve_config, stage_keys
from digi2real.errors import ConfigError, DataError
from digi2real.evaluation import Gallery
from digi2real.formats import (
    EmbeddingTable,
    ShardPlan,
    read_embeddings,
    read_evaluation,
    read_real_faces,
    write_embeddings,
    write_plan,
)
from digi2real.shard_store import GeneratedEmbeddings, write_generated_embeddings
from digi2real.stages import embed_benchmarks, evaluate
from digi2real.status import Status
from tests.conftest import LOCAL_SNAKEMAKE_PATH, snakemake_argv, write_demo_config
from tests.test_evaluation import SETTINGS  # the same thresholds

pytestmark = pytest.mark.unit


IDENTITIES = [f"id{k:02d}" for k in range(6)]
# The identities whose centre is planted among the benchmark faces, and where.
PLANTED = {"id04": ("lfw", 3), "id01": ("agedb_30", 7)}
FACES = {"agedb_30": 20, "lfw": 30}
SHA = "same model"


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return evaluation.unit(rng.normal(size=(n, 512)).astype(np.float32))


def planted_set(seed: int = 5):
    """Six identities of four images around random centres; the benchmark faces (random, far
    from them) with the centre of each PLANTED identity at its place, as evaluate computes it.
    Returns the images' labels and embeddings, the true centres and the benchmark gallery."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng, len(IDENTITIES))
    labels = [name for name in IDENTITIES for _ in range(4)]
    noise = 0.3 * unit_rows(rng, len(labels))
    embeddings = evaluation.unit(centres[[IDENTITIES.index(n) for n in labels]] + noise)
    faces = {name: unit_rows(rng, count) for name, count in FACES.items()}
    for identity, (name, image) in PLANTED.items():
        mine = embeddings[[label == identity for label in labels]]
        faces[name][image] = evaluation.centre(mine).astype(np.float32)
    gallery = Gallery(
        np.concatenate([faces[name] for name in FACES]),
        [f"benchmarks:{name}/{k}" for name, count in FACES.items() for k in range(count)],
    )
    return labels, embeddings, centres, gallery


def angles_of(labels: list[str]) -> np.ndarray:
    return np.zeros((len(labels), 3))


def test_the_identities_whose_centre_is_a_benchmark_face_are_flagged_and_no_other():
    labels, embeddings, _, benchmarks = planted_set()
    rng = np.random.default_rng(9)
    real = Gallery(unit_rows(rng, 40), [f"ffhq:{k:05d}.png" for k in range(40)])
    summary, _, identities, _ = evaluation.evaluate_generated(
        labels, embeddings, angles_of(labels), real, SETTINGS, benchmarks
    )
    names = identities["identity"]
    flagged = [n for n, hit in zip(names, identities["benchmark_leak"], strict=True) if hit]
    assert sorted(flagged) == sorted(PLANTED)
    for identity, (name, image) in PLANTED.items():
        row = names.index(identity)
        assert identities["nearest_benchmark"][row] == f"benchmarks:{name}/{image}"
        assert identities["nearest_benchmark_cos"][row] == pytest.approx(1.0, abs=1e-5)
    unplanted = [
        cosine
        for name, cosine in zip(names, identities["nearest_benchmark_cos"], strict=True)
        if name not in PLANTED
    ]
    assert len(unplanted) == 4 and max(unplanted) < 0.3  # far from every benchmark face
    found = summary["benchmark_leakage"]
    assert found["faces"] == 50
    assert found["identities"]["flagged"] == 2
    assert sorted(found["identities"]["flagged_identities"]) == sorted(PLANTED)
    assert found["identities"]["max"] == pytest.approx(1.0, abs=1e-5)
    # Apart from the real faces: their search, their flags, their figures are as without.
    without, _, plain, _ = evaluation.evaluate_generated(
        labels, embeddings, angles_of(labels), real, SETTINGS
    )
    assert "benchmark_leakage" not in without and "benchmark_leak" not in plain
    assert {k: v for k, v in summary.items() if k != "benchmark_leakage"} == without
    assert not any(identities["leak"])


def test_the_flag_follows_evaluation_leak_threshold():
    """An identity at cosine c from a benchmark face is flagged at a threshold of c, not above."""
    labels, embeddings, _, benchmarks = planted_set()
    real = Gallery(np.zeros((0, 512), np.float32), [])
    _, _, identities, _ = evaluation.evaluate_generated(
        labels, embeddings, angles_of(labels), real, SETTINGS, benchmarks
    )
    names = identities["identity"]
    cosine = identities["nearest_benchmark_cos"][names.index("id01")]
    # The cosines are float32, and so is a threshold compared with them.
    above = float(np.nextafter(np.float32(cosine), np.float32(2)))
    for threshold, flagged in ((cosine, True), (above, False)):
        settings = dataclasses.replace(SETTINGS, leak_threshold=threshold)
        summary, _, identities, _ = evaluation.evaluate_generated(
            labels, embeddings, angles_of(labels), real, settings, benchmarks
        )
        assert identities["benchmark_leak"][names.index("id01")] is flagged
        assert summary["benchmark_leakage"]["identities"]["flagged_identities"].count("id01") == (
            1 if flagged else 0
        )


# --- the evaluate stage, on files ---------------------------------------------------------------


def embeddings_file(path, dataset, vectors, paths, identity=None, status=None):
    n = len(paths)
    write_embeddings(
        path,
        EmbeddingTable(
            embedding=np.asarray(vectors, np.float32).reshape(-1, 512),
            status=np.zeros(n, np.int8) if status is None else np.asarray(status, np.int8),
            identity=identity or [""] * n,
            path=paths,
            det_score=np.full(n, np.nan, np.float32),
            message=[""] * n,
            attrs={"dataset": dataset, "arcface_sha256": SHA},
        ),
    )
    return path


def evaluate_inputs(folder, with_benchmarks: bool) -> dict:
    """The files `evaluate` reads for the planted set: every image passed, the true centres as
    the DigiFace prototypes, 40 random FFHQ faces; the benchmark faces, with one more that is
    not `ok` (zeros, never searched)."""
    labels, embeddings, centres, benchmarks = planted_set()
    rng = np.random.default_rng(11)
    folder.mkdir(parents=True, exist_ok=True)
    image_index = [k % 4 for k in range(len(labels))]
    write_generated_embeddings(
        folder / "generated.h5",
        GeneratedEmbeddings(
            identity=labels,
            image_index=np.asarray(image_index, np.int32),
            embedding=embeddings,
            landmarks=np.full((len(labels), 5, 2), np.nan, np.float32),
        ),
    )
    n = len(labels)
    manifest = {"identity": labels, "image_index": image_index, "passed": [True] * n}
    manifest |= {"status": ["ok"] * n, "reject_reason": [""] * n}
    pq.write_table(pa.table(manifest), folder / "manifest.parquet")
    write_plan(
        folder / "plan.h5",
        ShardPlan(
            shard=0,
            identities=IDENTITIES,
            prototypes=list(centres),
            n_sources_ok=[1] * len(IDENTITIES),
            identity_status=["planned"] * len(IDENTITIES),
            identity_reason=[""] * len(IDENTITIES),
        ),
    )
    paths = {
        "manifest_path": folder / "manifest.parquet",
        "generated_paths": [folder / "generated.h5"],
        "digiface_path": embeddings_file(
            folder / "digiface.h5",
            "digiface",
            centres,
            [f"{name}/0.png" for name in IDENTITIES],
            identity=IDENTITIES,
        ),
        "ffhq_path": embeddings_file(
            folder / "ffhq.h5", "ffhq", unit_rows(rng, 40), [f"{k:05d}.png" for k in range(40)]
        ),
        "plan_paths": [folder / "plan.h5"],
        "out": folder / "evaluation.json",
        "tables": folder / "evaluation",
    }
    if with_benchmarks:
        faces = [label.removeprefix("benchmarks:") for label in benchmarks.label]
        paths["benchmarks_path"] = embeddings_file(
            folder / "benchmarks.h5",
            "benchmarks",
            np.concatenate([benchmarks.embedding, np.zeros((1, 512), np.float32)]),
            [*faces, "lfw/30"],
            status=[Status.OK] * len(faces) + [Status.NONFINITE],
        )
    return paths


def evaluate_config() -> dict:
    return config_slice(resolve_config({}), evaluate.CONFIG_KEYS)


def run_evaluate_command(paths: dict) -> None:
    """The stage through its command, as the rule runs it."""
    from digi2real import cli

    argv = ["evaluate", "--config", json.dumps(evaluate_config())]
    argv += ["--manifest", str(paths["manifest_path"]), "--generated"]
    argv += [str(p) for p in paths["generated_paths"]]
    argv += ["--digiface", str(paths["digiface_path"]), "--ffhq", str(paths["ffhq_path"])]
    argv += ["--benchmarks", str(paths["benchmarks_path"]), "--plans"]
    argv += [str(p) for p in paths["plan_paths"]]
    argv += ["--out", str(paths["out"]), "--tables", str(paths["tables"])]
    assert cli.main(argv) == 0


def without_benchmark_columns(table: pa.Table) -> pa.Table:
    extra = {"nearest_benchmark_cos", "nearest_benchmark", "benchmark_leak"}
    return table.select([name for name in table.column_names if name not in extra])


def strip_benchmarks(value):
    """evaluation.json less what the benchmarks added."""
    if isinstance(value, dict):
        return {
            key: strip_benchmarks(item)
            for key, item in value.items()
            if key not in ("benchmarks", "benchmark_leakage")
        }
    return value


def test_evaluate_lists_the_planted_benchmark_leaks_and_certifies_them(tmp_path):
    from digi2real.stages.report import write_certificate_page

    paths = evaluate_inputs(tmp_path / "with", with_benchmarks=True)
    run_evaluate_command(paths)
    # The csv: each flagged identity with its nearest benchmark face, sorted by identity.
    lines = (paths["tables"] / evaluate.BENCHMARK_LEAKS).read_text().splitlines()
    assert lines[0] == "identity,benchmark,image,cosine"
    rows = [line.split(",") for line in lines[1:]]
    assert [row[:3] for row in rows] == [["id01", "agedb_30", "7"], ["id04", "lfw", "3"]]
    assert all(float(row[3]) == pytest.approx(1.0, abs=1e-5) for row in rows)
    # evaluation.json: the benchmark faces searched (the `ok` ones), the flags per file.
    summary = read_evaluation(paths["out"])
    assert summary["benchmarks"] == FACES
    found = summary["generated"]["benchmark_leakage"]
    assert found["identities"]["flagged"] == 2 and found["faces"] == 50
    assert found["by_benchmark"] == {
        "agedb_30": {"faces": 20, "flagged": 1},
        "lfw": {"faces": 30, "flagged": 1},
    }
    # The prototypes the identities were drawn around are near those faces too.
    assert summary["sources"]["benchmark_leakage"]["flagged"] == 2
    # Apart from the real faces: no FFHQ face is near any identity.
    assert summary["generated"]["leakage"]["identities"]["flagged"] == 0
    identities = pq.read_table(paths["tables"] / "identities.parquet").to_pydict()
    assert sorted(
        n
        for n, hit in zip(identities["identity"], identities["benchmark_leak"], strict=True)
        if hit
    ) == sorted(PLANTED)
    # The certificate: its headline and its page.
    figures = certificate.headline(summary)
    assert figures["identities flagged as benchmark leaks"] == 2
    assert figures["DigiFace sources flagged as benchmark leaks"] == 2
    assert figures["benchmark faces searched"] == 50
    assert figures["identities flagged as leaks"] == 0
    page = tmp_path / "certificate.html"
    write_certificate_page(page, figures, summary)
    html = page.read_text()
    assert '<td>identities flagged as benchmark leaks</td><td class="number">2</td>' in html

    # Without benchmarks: as before, and the csv's header alone.
    plain = evaluate_inputs(tmp_path / "without", with_benchmarks=False)
    before = evaluate.run(evaluate_config(), **plain)
    assert (plain["tables"] / evaluate.BENCHMARK_LEAKS).read_text() == (
        "identity,benchmark,image,cosine\n"
    )
    assert "benchmarks" not in before and "benchmark_leakage" not in before["generated"]
    assert "benchmark_leakage" not in before["sources"]
    assert strip_benchmarks(summary) == read_evaluation(plain["out"])
    assert not set(certificate.headline(before)) - set(figures)
    assert "benchmark" not in " ".join(certificate.headline(before))
    for name in evaluate.TABLES:
        ours = pq.read_table(paths["tables"] / f"{name}.parquet")
        theirs = pq.read_table(plain["tables"] / f"{name}.parquet")
        # pandas' equals: NaN (no pose without landmarks) equals NaN in the same place.
        assert without_benchmark_columns(ours).to_pandas().equals(theirs.to_pandas()), name


def test_evaluate_refuses_benchmark_faces_of_another_model(tmp_path):
    import h5py

    paths = evaluate_inputs(tmp_path, with_benchmarks=True)
    with h5py.File(paths["benchmarks_path"], "r+") as file:
        file.attrs["arcface_sha256"] = "another model"
    with pytest.raises(DataError, match=r"benchmarks.h5: embedded by another recognizer"):
        evaluate.run(evaluate_config(), **paths)


# --- embed_benchmarks ---------------------------------------------------------------------------


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def benchmark_config(tmp_path, bins: dict) -> dict:
    import onnx

    from digi2real.demo.onnx_models import recognizer_model

    model = tmp_path / "arcface.onnx"
    if not model.exists():
        onnx.save(recognizer_model(0), str(model))
    raw = {"models": {"arcface": str(model)}, "face": {"providers": "cpu", "batch_size": 3}}
    config = resolve_config({**raw, "benchmark": {"bins": bins}})
    keys = stage_keys(embed_benchmarks.CONFIG_KEYS, recognizer="models.arcface")
    return config_slice(config, keys)


def test_embed_benchmarks_embeds_each_face_as_the_pipeline_embeds_it_from_disk(tmp_path):
    """Each face as `embed` would embed it from an aligned file (read as BGR), in the real
    faces' contract, labelled by its file and position; a bin's RGB fed as it is would differ."""
    from digi2real import models
    from digi2real.faces import FaceSettings, face_pipeline, read_image
    from digi2real.verification import write_bin

    rng = np.random.default_rng(3)
    faces = {"lfw": rng.integers(0, 256, (4, 112, 112, 3), np.uint8)}
    faces["cfp_fp"] = rng.integers(0, 256, (6, 112, 112, 3), np.uint8)
    bins = {}
    for name, pixels in faces.items():
        bins[name] = str(tmp_path / f"{name}.bin")
        write_bin(tmp_path / f"{name}.bin", [png(p) for p in pixels], [True] * (len(pixels) // 2))
    config = benchmark_config(tmp_path, bins)
    out = tmp_path / "benchmarks.h5"
    embed_benchmarks.run(config, out)

    table = read_embeddings(out)
    order = ["cfp_fp", "lfw"]  # by name
    assert table.path == [f"{name}/{k}" for name in order for k in range(len(faces[name]))]
    assert set(table.status.tolist()) == {Status.OK}
    spec = models.ARCFACE
    paths = models.ModelPaths.from_config(config, spec)
    assert table.attrs["dataset"] == "benchmarks" and table.attrs["recognizer"] == spec.key
    assert table.attrs["arcface_sha256"] == models.model_sha256(paths[spec], spec)
    # The reference: each face written to a file and read as `embed` reads an aligned crop.
    pipeline = face_pipeline(FaceSettings.aligned("cpu", 8), paths, spec)
    files = []
    for name in order:
        for k, pixels in enumerate(faces[name]):
            files.append(tmp_path / f"{name}_{k}.png")
            files[-1].write_bytes(png(pixels))
    expected = np.stack([r.embedding for r in pipeline.process_images(map(read_image, files))])
    np.testing.assert_allclose(table.embedding, expected, atol=1e-6)
    as_rgb = pipeline.process_images([p for name in order for p in faces[name]])
    assert np.abs(np.stack([r.embedding for r in as_rgb]) - expected).max() > 1e-3
    # Evaluate reads it as one more real set.
    vectors, labels = read_real_faces([out])
    assert labels[0] == "benchmarks:cfp_fp/0" and labels[-1] == "benchmarks:lfw/3"
    assert embed_benchmarks.benchmark_face(labels[-1]) == ("lfw", 3)
    assert vectors.shape == (10, 512)


def test_embed_benchmarks_names_a_missing_file_and_an_empty_list(tmp_path):
    missing = tmp_path / "lfw.bin"
    config = benchmark_config(tmp_path, {"lfw": str(missing)})
    named = rf"{missing}: no such file \(config key benchmark.bins.lfw\)"
    with pytest.raises(DataError, match=named):
        embed_benchmarks.run(config, tmp_path / "out.h5")
    with pytest.raises(ConfigError, match="benchmark.bins: no verification files"):
        embed_benchmarks.run(benchmark_config(tmp_path, {}), tmp_path / "out.h5")


# --- the workflow ---------------------------------------------------------------------------


def dry_run(folder, demo_root, **overrides) -> str:
    folder.mkdir()
    write_demo_config(folder, demo_root, **overrides)
    result = subprocess.run(
        snakemake_argv(folder, "-n", "-p"),
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": LOCAL_SNAKEMAKE_PATH},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_evaluate_searches_the_benchmarks_only_when_a_recognizer_is_trained(tmp_path, demo_root):
    bins = {"benchmark.bins": {"demo": str(demo_root / "benchmarks" / "demo.bin")}}
    trained = dry_run(
        tmp_path / "trained", demo_root, **bins, **{"train.enabled": True, "train.gpus": 0}
    )
    assert "digi2real embed-benchmarks" in trained
    assert "--benchmarks results/embeddings/benchmarks.h5" in trained
    assert "--leaks results/evaluation/benchmark_leaks.csv" in trained
    untrained = dry_run(tmp_path / "untrained", demo_root, **bins, **{"train.enabled": False})
    assert "embed-benchmarks" not in untrained and "--benchmarks" not in untrained
    assert "results/evaluation/benchmark_leaks.csv" in untrained  # always an output
