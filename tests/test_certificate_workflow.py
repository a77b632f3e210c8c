"""The certificate over the workflow's reference run (tests/conftest.py's `run`): the
evaluation's flags and coverage, the report, and the reruns a gate, a gallery or a second
recognizer makes. A module of its own, so that pytest-xdist runs it beside tests/test_workflow.py.
"""

import json
import subprocess
import sys

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.workflow_runs import (
    AFTER_AGGREGATE,
    EVALUATION,
    EXPORTS,
    IDENTITIES,
    IMAGES_PER_IDENTITY,
    MANIFEST,
    change_config,
    copy_run,
    planned_jobs,
    raw_images,
    read_table,
    reused_and_made,
    snakemake,
    stored,
)

pytestmark = pytest.mark.workflow


# --- the certificate: evaluation, gates and report -------------------------------------------

# Planted in the demo's data (digi2real/demo/faces.py): 7 is 6 again, 5 is FFHQ image 23's face.
PLANTED_LEAK, PLANTED_TWINS = "5", {"6", "7"}


def test_the_evaluation_flags_exactly_the_planted_sources(run):
    results = run / "results"
    evaluation = json.loads((results / "evaluation.json").read_text())
    sources = pq.read_table(results / "evaluation/sources.parquet").to_pylist()
    assert [r["identity"] for r in sources] == [str(k) for k in range(IDENTITIES)]
    assert [r["identity"] for r in sources if r["leak"]] == [PLANTED_LEAK]
    leak = next(r for r in sources if r["identity"] == PLANTED_LEAK)
    assert leak["nearest_real"] == "ffhq:00000/00023.png"
    assert {r["identity"] for r in sources if r["collision"]} == PLANTED_TWINS
    first_pair = pq.read_table(results / "evaluation/source_pairs.parquet").to_pylist()[0]
    assert {first_pair["identity_a"], first_pair["identity_b"]} == PLANTED_TWINS
    summary = evaluation["sources"]
    assert summary["leakage"]["flagged_identities"] == [PLANTED_LEAK]
    assert summary["uniqueness"]["flagged_pairs"] == 1
    # 8 has no usable image, 9 no face: no prototype, so no figures, but still listed.
    assert summary["identities"] == IDENTITIES - 2
    assert all(r["nearest_real"] == "" for r in sources if r["identity"] in ("8", "9"))


def test_the_evaluation_covers_exactly_the_passed_images(run):
    results = run / "results"
    evaluation = json.loads((results / "evaluation.json").read_text())
    rows = read_table(results / "manifest.parquet")
    passed = [(r["identity"], r["image_index"]) for r in rows if r["passed"]]
    images = pq.read_table(results / "evaluation/images.parquet").to_pylist()
    assert [(r["identity"], r["image_index"]) for r in images] == passed
    generated = evaluation["generated"]
    assert generated["images"] == len(passed)
    assert generated["identities"] == len({identity for identity, _ in passed})
    assert all(-90 <= r["yaw"] <= 90 for r in images)
    by_identity = {}
    for identity, _ in passed:
        by_identity[identity] = by_identity.get(identity, 0) + 1
    genuine = sum(n * (n - 1) // 2 for n in by_identity.values())
    assert generated["verification"]["genuine_pairs"] == genuine
    n = len(passed)
    assert generated["verification"]["impostor_pairs"] == n * (n - 1) // 2 - genuine
    # The yield accounts for every input and every planned image.
    inputs = evaluation["yield"]["inputs"]
    digiface = h5py.File(results / "embeddings/digiface.h5")["status"][()]
    assert sum(s["images"] for s in inputs["digiface"]["by_status"].values()) == len(digiface)
    assert inputs["digiface"]["by_status"]["unreadable"]["examples"]
    assert inputs["ffhq"]["by_status"]["unreadable"]["images"] == 2
    made = evaluation["yield"]["images"]
    planned = [r for r in rows if r["status"] != "skipped"]  # the plan's skipped identities'
    assert made["planned"] == len(planned) and len(rows) - len(planned) == 2 * IMAGES_PER_IDENTITY
    assert made["passed"] + sum(made["rejected_by_reason"].values()) == len(planned)


def test_the_report_builds_one_page_with_the_certificates_figures(run, tmp_path):
    from digi2real.stages.report import FIGURES

    workdir = copy_run(run, tmp_path / "report")
    snakemake(workdir, "--report", "report.html")
    page = (workdir / "report.html").read_text(errors="replace")
    for name in (*FIGURES, "certificate", "dataset_card", "samples"):
        assert name in page, name
    for figure in FIGURES:
        with Image.open(workdir / f"results/report/{figure}.png") as image:
            assert min(image.size) > 50, figure
    # The certificate and the card are on the page itself (HTML), their verdicts written out.
    certificate = (workdir / "results/report/certificate.html").read_text()
    evaluation = json.loads((workdir / "results/evaluation.json").read_text())
    eer = 100 * evaluation["generated"]["verification"]["eer"]
    assert f"{eer:.4g}" in certificate and "worse than every published figure" in certificate
    assert "Digi2Real-20K 1.07" in certificate
    assert "Dataset card" in (workdir / "results/report/dataset_card.html").read_text()
    card = json.loads((workdir / "results/dataset_card.json").read_text())
    assert card["certificate"]["DigiFace sources flagged as leaks"] == 1
    # Seconds the jobs ran, from their benchmarks: every job of the run before the card (each
    # an input of the card), all but the report's figures and the card itself.
    benchmarks = list((workdir / "results/benchmarks").rglob("*.tsv"))
    summed = [path for path in benchmarks if path.stem not in ("report", "card")]
    assert sum(card["job_seconds"]["jobs_by_rule"].values()) == len(summed)
    assert set(card["job_seconds"]["by_rule"]) >= {"plan", "generate", "aggregate", "evaluate"}


def test_the_plans_gates_drop_exactly_the_planted_identities(run, tmp_path):
    workdir = copy_run(run, tmp_path / "gates")
    before = raw_images(workdir)
    change_config(workdir, "plan.max_real_similarity", 0.99)
    change_config(workdir, "plan.max_prototype_similarity", 0.99)
    jobs = planned_jobs(workdir)
    assert {rule for rule in jobs if rule != "all"} == {
        "plan",
        "generate",
        "aggregate",
        "evaluate",
        "report",
        "card",
        *EXPORTS,
    }
    snakemake(workdir, EVALUATION)
    assert reused_and_made(workdir)[1] == 0  # the kept identities' images are reused
    rows = read_table(workdir / "results/manifest.parquet")
    dropped = {r["identity"]: r["message"] for r in rows if r["status"] == "skipped"}
    assert set(dropped) == {PLANTED_LEAK, "7", "8", "9"}
    assert "plan.max_real_similarity" in dropped[PLANTED_LEAK]
    assert "ffhq:00000/00023.png" in dropped[PLANTED_LEAK]
    assert "plan.max_prototype_similarity" in dropped["7"] and "identity 6" in dropped["7"]
    after = raw_images(workdir)
    assert all(after[key] == before[key] for key in after)
    assert set(before) - set(after) == {(i, k) for i in ("5", "7") for k in range(4)}
    # The evaluation still shows the dropped identities, flagged, with the plan's reason.
    sources = pq.read_table(workdir / "results/evaluation/sources.parquet").to_pylist()
    status = {r["identity"]: (r["status"], r["leak"], r["collision"]) for r in sources}
    assert status[PLANTED_LEAK] == ("skipped", True, False)
    assert status["7"] == ("skipped", False, True)


def test_the_quality_gates_reject_in_their_documented_order(run, tmp_path):
    workdir = copy_run(run, tmp_path / "quality")
    before = {
        (r["identity"], r["image_index"]): r["nearest_real_cos"]
        for r in pq.read_table(run / "results/evaluation/images.parquet").to_pylist()
    }
    limit = float(np.median(list(before.values())))
    change_config(workdir, "quality.max_real_similarity", limit)
    change_config(workdir, "quality.max_identity_similarity", 0.99)
    assert planned_jobs(workdir) == AFTER_AGGREGATE
    snakemake(workdir, MANIFEST)
    rows = read_table(workdir / "results/manifest.parquet")
    reason = {(r["identity"], r["image_index"]): r["reject_reason"] for r in rows}
    # Every image that passed before now fails for its nearest real face exactly when that
    # face is at least the limit close; the first rule to apply gives the reason.
    for key, cosine in before.items():
        assert (reason[key] == "near_real_face") == (cosine >= limit), (key, cosine)
    # Identity collisions, recomputed by brute force: over the images still passing, each
    # identity in manifest order is kept unless its centre is >= 0.99 to a kept one's.
    with h5py.File(run / "results/embeddings/generated.h5") as file:
        names = [n.decode() for n in file["identity"][()]]
        keys = zip(names, file["image_index"][()].tolist(), strict=True)
        embedding = dict(zip(keys, file["embedding"][()], strict=True))
    centres = {}
    for (identity, k), cosine in before.items():
        if cosine < limit:
            centres.setdefault(identity, []).append(embedding[(identity, k)].astype(float))
    kept_centres, expected = [], set()
    for identity, vectors in centres.items():
        centre = np.mean(vectors, axis=0)
        centre /= np.linalg.norm(centre)
        if all(centre @ other < 0.99 for other in kept_centres):
            kept_centres.append(centre)
            expected.add(identity)
    assert {r["identity"] for r in rows if r["passed"]} == expected
    collided = {i for (i, _), r in reason.items() if r == "identity_collision"}
    assert collided == set(centres) - expected and collided


def test_a_dataset_with_no_passed_image_gets_a_certificate_saying_so(run, tmp_path):
    workdir = copy_run(run, tmp_path / "empty")
    change_config(workdir, "quality.min_det_score", 1.0)
    snakemake(workdir)
    evaluation = json.loads((workdir / "results/evaluation.json").read_text())
    assert evaluation["status"] == "not computed: no passed images (see the yield)"
    assert "generated" not in evaluation
    assert evaluation["sources"]["leakage"]["flagged_identities"] == [PLANTED_LEAK]
    card = json.loads((workdir / "results/dataset_card.json").read_text())
    assert card["images"]["passed"] == 0 and card["certificate"]["verification EER (%)"] is None
    assert set(card["certificate"]["verdicts"].values()) == {"not computed"}


def test_a_real_gallery_is_searched_for_leaks_beside_ffhq(run, tmp_path):
    workdir = copy_run(run, tmp_path / "gallery")
    results = workdir / "results"
    # A "real person" whose one photo is a generated, passed crop: prealigned, it embeds to
    # exactly that image's embedding, so the search must find it at cosine 1.
    passed = next(r for r in read_table(results / "manifest.parquet") if r["passed"])
    gallery = tmp_path / "casia"
    (gallery / "0000045").mkdir(parents=True)
    (gallery / "0000045/001.jpg.png").write_bytes(stored(results, passed))
    Image.new("RGB", (112, 112), (90, 110, 160)).save(gallery / "0000045/002.png")  # no face
    change_config(workdir, "gallery.root", str(gallery))
    change_config(workdir, "gallery.face", {"prealigned": True})
    jobs = planned_jobs(workdir)
    assert jobs == {
        "index_real": 1,
        "embed": 1,
        "merge_embeddings": 1,
        "evaluate": 1,
        "report": 1,
        "card": 1,
        "all": 1,
    }
    snakemake(workdir, EVALUATION)
    evaluation = json.loads((results / "evaluation.json").read_text())
    assert evaluation["gallery"]["gallery"] == 2
    assert evaluation["yield"]["inputs"]["gallery"]["images"] == 2
    images = pq.read_table(results / "evaluation/images.parquet").to_pylist()
    image = next(
        r
        for r in images
        if (r["identity"], r["image_index"]) == (passed["identity"], passed["image_index"])
    )
    assert image["nearest_real"] == "gallery:0000045/001.jpg.png"
    assert image["nearest_real_cos"] > 0.9999


def test_a_second_recognizer_embeds_everything_the_evaluation_compares(run, tmp_path):
    import onnx

    from digi2real.demo import recognizer_model
    from digi2real.models import file_sha256

    workdir = copy_run(run, tmp_path / "recognizer")
    results = workdir / "results"
    recognizer = tmp_path / "w600k_r50.onnx"
    onnx.save(recognizer_model(seed=7), recognizer)  # another random projection: another space
    change_config(workdir, "evaluation.recognizer", str(recognizer))
    jobs = planned_jobs(workdir)
    shards = len(list((results / "shards").glob("*/manifest.parquet")))
    assert jobs == {
        "embed": len(list((results / "embeddings/digiface").glob("*.h5")))
        + len(list((results / "embeddings/ffhq").glob("*.h5"))),
        "merge_embeddings": 2,
        "embed_generated": shards,
        "evaluate": 1,
        "report": 1,
        "card": 1,
        "all": 1,
    }
    snakemake(workdir, EVALUATION)
    evaluation = json.loads((results / "evaluation.json").read_text())
    assert evaluation["recognizer"]["independent_of_generator"] is True
    assert evaluation["recognizer"]["sha256"] == file_sha256(recognizer)
    for name in ("digiface", "ffhq"):
        with h5py.File(results / f"evaluation/embeddings/{name}.h5") as file:
            assert file.attrs["arcface_sha256"] == file_sha256(recognizer)
    # The same passed images, measured in the other model's space.
    ours = pq.read_table(results / "evaluation/images.parquet").to_pylist()
    theirs = pq.read_table(run / "results/evaluation/images.parquet").to_pylist()
    assert [(r["identity"], r["image_index"]) for r in ours] == [
        (r["identity"], r["image_index"]) for r in theirs
    ]
    assert any(
        abs(a["cos_to_centre"] - b["cos_to_centre"]) > 1e-4
        for a, b in zip(ours, theirs, strict=True)
    )
    # Near-copies are near in any model: the planted flags hold in this one too.
    assert evaluation["sources"]["leakage"]["flagged_identities"] == [PLANTED_LEAK]
    assert evaluation["sources"]["uniqueness"]["flagged_pairs"] == 1


def test_a_recognizer_that_is_not_an_arcface_is_one_line_naming_the_key(run, demo_root, tmp_path):
    detector = demo_root / "models/antelopev2/scrfd_10g_bnkps.onnx"
    # The job's inline slice of the config, as the workflow hands it over.
    config = {
        "evaluation": {"recognizer": str(detector)},
        "quality": {"face": {"providers": "cpu", "batch_size": 8}},
    }
    job = subprocess.run(
        [sys.executable, "-m", "digi2real", "embed-generated", "--config", json.dumps(config)]
        + ["--manifest", str(run / "results/shards/0/manifest.parquet")]
        + ["--out", str(tmp_path / "out.h5")],
        capture_output=True,
        text=True,
    )
    named = f"config key evaluation.recognizer: {detector} is not an ArcFace recognition model"
    assert job.returncode == 2 and named in job.stderr, job.stderr[-2000:]
    assert "Traceback" not in job.stderr and not (tmp_path / "out.h5").exists()
