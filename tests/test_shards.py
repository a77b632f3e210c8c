"""A generation shard's commit: its images packed into one archive, the loose files gone, a
kill at any moment resumed to the uninterrupted shard, the image formats as configured.

These run the `generate` stage itself on a tiny plan with the demo's random models (64x64, 3
steps): in this process where nothing is killed, as `python -m digi2real generate` where a
SIGKILL must land in the middle of packing.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from digi2real.config import load_config
from digi2real.faces import FaceSettings, decode_image, face_pipeline
from digi2real.formats import Delta, ShardPlan, write_delta, write_model_hashes, write_plan
from digi2real.shard_store import read_generated_embeddings
from digi2real.stages import generate
from tests.conftest import write_demo_config

pytestmark = pytest.mark.unit

IDENTITIES, PER_IDENTITY = 2, 3
COMMITTED = {"images.zip", "manifest.parquet", "manifest.csv", "embeddings.h5", "records.jsonl"}


def quality_pipeline(config):
    """The face pipeline a generation job checks its images with (quality.face)."""
    from digi2real.models import ARCFACE, ModelPaths

    settings = FaceSettings.from_config(config, "quality")
    return face_pipeline(settings, ModelPaths.from_config(config, *settings.models(ARCFACE)))


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """plan.h5 (two identities, three images each, and one skipped identity), delta.h5 and
    models.json: what a generation job reads."""
    folder = tmp_path_factory.mktemp("shard-inputs")
    rng = np.random.default_rng(3)
    plan = ShardPlan(shard=0, attrs={"seed": 7, "n_shards": 1, "images_per_identity": 3})
    for identity in ("a", "b", "skipped"):
        prototype = unit(rng.normal(size=512))
        planned = identity != "skipped"
        plan.identities.append(identity)
        plan.prototypes.append(prototype if planned else np.zeros(512, np.float32))
        plan.n_sources_ok.append(2 if planned else 0)
        plan.identity_status.append("planned" if planned else "skipped")
        plan.identity_reason.append("" if planned else "0 usable source images, 2 needed")
        for k in range(PER_IDENTITY if planned else 0):
            plan.image_identity.append(identity)
            plan.image_index.append(k)
            plan.source_path.append(f"{identity}/{k}.png")
            plan.t.append(0.5)
            plan.seed.append(1000 + 10 * len(plan.identities) + k)
            plan.condition.append(unit(prototype + 0.3 * rng.normal(size=512)))
    write_plan(folder / "plan.h5", plan)
    delta = np.zeros((77, 576), np.float32)  # the demo encoder's width
    write_delta(folder / "delta.h5", Delta(delta, delta, delta, 1, 1, "per_token"))
    write_model_hashes(folder / "models.json", {"arc2face_unet": "0" * 64})
    return folder


def shard_config(folder: Path, demo_root: Path, **images) -> Path:
    overrides = {f"images.{key}": value for key, value in images.items()}
    folder.mkdir(parents=True, exist_ok=True)
    return write_demo_config(
        folder,
        demo_root,
        **{"generation.height": 64, "generation.width": 64, "generation.steps": 3},
        **{"generation.batch_size": 2, "plan.images_per_identity": PER_IDENTITY},
        **overrides,
    )


def run_in_process(config: Path, inputs: Path, out: Path) -> int:
    return generate.run(
        load_config(config),
        inputs / "plan.h5",
        inputs / "delta.h5",
        inputs / "models.json",
        out / "manifest.parquet",
    )


def job_command(config: Path, inputs: Path, out: Path) -> list[str]:
    """`digi2real generate` as the workflow runs it, a process of its own."""
    command = [sys.executable, "-m", "digi2real", "generate", "--config", str(config)]
    command += ["--plan", str(inputs / "plan.h5"), "--delta", str(inputs / "delta.h5")]
    return command + [
        "--models",
        str(inputs / "models.json"),
        "--out",
        str(out / "manifest.parquet"),
    ]


def run_as_job(config: Path, inputs: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        job_command(config, inputs, out),
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )


def assert_same_manifest(ours: Path, theirs: Path) -> None:
    import pandas.testing

    pandas.testing.assert_frame_equal(
        pq.read_table(ours / "manifest.parquet").to_pandas(),
        pq.read_table(theirs / "manifest.parquet").to_pandas(),
        check_exact=True,
    )


def jpeg(value: int, side: int = 16) -> bytes:
    """A small JPEG image of one grey level."""
    from digi2real.shard_store import encode_image

    return encode_image(np.full((side, side, 3), value, np.uint8), "jpeg", 90)


def files_of(shard: Path) -> set[str]:
    return {str(p.relative_to(shard)) for p in shard.rglob("*") if p.is_file()}


def members(shard: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(shard / "images.zip") as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture(scope="module")
def reference(inputs, demo_root, tmp_path_factory) -> Path:
    """The shard generated uninterrupted, at the default formats."""
    folder = tmp_path_factory.mktemp("reference")
    assert run_in_process(shard_config(folder, demo_root), inputs, folder / "shard") == 0
    return folder / "shard"


def test_a_committed_shard_is_a_few_files_its_archive_holding_every_image(reference):
    assert files_of(reference) == COMMITTED
    manifest = pq.read_table(reference / "manifest.parquet").to_pylist()
    generated = [r for r in manifest if r["status"] not in ("skipped", "failed")]
    assert len(generated) == IDENTITIES * PER_IDENTITY
    with zipfile.ZipFile(reference / "images.zip") as archive:
        assert archive.testzip() is None  # every member's CRC holds
        infos = {info.filename: info for info in archive.infolist()}
        assert all(info.compress_type == zipfile.ZIP_STORED for info in infos.values())
        expected = [r["raw_path"] for r in generated] + [
            r["aligned_path"] for r in generated if r["aligned_path"]
        ]
        assert sorted(infos) == sorted(expected)
        for r in generated:
            assert r["archive"] == "images.zip"
            raw = infos[r["raw_path"]]
            assert raw.filename.endswith(".jpg") and raw.comment.decode() == r["image_key"]
            with Image.open(io.BytesIO(archive.read(raw))) as image:
                assert (image.format, image.size) == ("JPEG", (64, 64))
            if r["aligned_path"]:
                with Image.open(io.BytesIO(archive.read(r["aligned_path"]))) as crop:
                    assert (crop.format, crop.size) == ("PNG", (112, 112))
    skipped = [r for r in manifest if r["status"] == "skipped"]
    assert len(skipped) == PER_IDENTITY and all(r["archive"] == "" for r in skipped)


def test_the_check_reads_the_raw_image_as_stored(reference, demo_root, tmp_path):
    """Each embedding of the shard is the face pipeline's on the archived JPEG's bytes."""
    config = load_config(shard_config(tmp_path, demo_root))
    faces = quality_pipeline(config)
    stored = read_generated_embeddings(reference / "embeddings.h5")
    assert len(stored)
    archived = members(reference)
    for identity, index, embedding in zip(
        stored.identity, stored.image_index, stored.embedding, strict=True
    ):
        name = f"raw/{identity}/{index}.jpg"
        (result,) = faces.process_images([decode_image(archived[name], name)])
        np.testing.assert_allclose(result.embedding, embedding, atol=1e-6)


@pytest.mark.parametrize("packed", [1, 5])
def test_a_shard_killed_while_packing_resumes_to_the_uninterrupted_one(
    packed, reference, inputs, demo_root, tmp_path
):
    config = shard_config(tmp_path, demo_root)
    shard = tmp_path / "shard"
    killed = run_as_job(config, inputs, shard, DIGI2REAL_KILL_AFTER_PACKED=str(packed))
    assert killed.returncode == -9, killed.stderr[-2000:]
    # Killed mid-archive: the loose images and a half-written temporary archive, no commit.
    left = files_of(shard)
    assert "manifest.parquet" not in left and "images.zip" not in left
    assert len([f for f in left if f.startswith("raw/") and f.endswith(".jpg")]) == 6
    assert [f for f in left if Path(f).name.startswith(".images.zip.")], left
    resumed = run_as_job(config, inputs, shard)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "6 of 6 images reused (their keys match; 6 loose, 0 in images.zip)" in resumed.stderr
    assert files_of(shard) == COMMITTED  # the leftovers and the loose files went
    assert (shard / "images.zip").read_bytes() == (reference / "images.zip").read_bytes()
    assert_same_manifest(shard, reference)


def test_a_committed_shard_whose_manifest_was_lost_reuses_its_archive(
    reference, inputs, demo_root, tmp_path, monkeypatch
):
    """Snakemake deletes the output of a job that failed after its commit (killed while it
    removed the loose files): the rerun finds every image in the archive, generates none, and
    loads no diffusion model."""
    from digi2real import generation

    def no_pipeline(*args):
        raise AssertionError("the pipeline was built with no image to generate")

    monkeypatch.setattr(generation, "build_pipeline", no_pipeline)
    config = shard_config(tmp_path, demo_root)
    shard = tmp_path / "shard"
    shard.mkdir()
    for name in ("images.zip", "records.jsonl", "embeddings.h5"):
        (shard / name).write_bytes((reference / name).read_bytes())
    (shard / "raw/a").mkdir(parents=True)
    (shard / "raw/a/0.jpg").write_bytes(members(reference)["raw/a/0.jpg"])  # one left loose
    assert run_in_process(config, inputs, shard) == 0
    assert files_of(shard) == COMMITTED
    assert (shard / "images.zip").read_bytes() == (reference / "images.zip").read_bytes()
    assert_same_manifest(shard, reference)


def test_a_rerun_with_other_settings_replaces_the_archived_images(
    reference, inputs, demo_root, tmp_path, caplog
):
    config = shard_config(tmp_path, demo_root, raw_jpeg_quality=50)
    shard = tmp_path / "shard"
    shard.mkdir()
    for name in ("images.zip", "records.jsonl"):
        (shard / name).write_bytes((reference / name).read_bytes())
    with caplog.at_level("INFO", logger="digi2real"):
        assert run_in_process(config, inputs, shard) == 0
    assert "0 of 6 images reused" in caplog.text and "6 to generate" in caplog.text
    # The log says the archived images were replaced, not only that none was reused.
    assert "to be replaced: 0 loose, 6 in images.zip" in caplog.text
    ours, theirs = members(shard), members(reference)
    assert ours.keys() == theirs.keys()
    assert all(len(ours[n]) < len(theirs[n]) for n in ours if n.startswith("raw/"))


@pytest.mark.parametrize(
    "raw_format, aligned_format, raw_image",
    [("png", "jpeg", ("PNG", ".png")), ("none", "jpeg", None), ("jpeg", "png", ("JPEG", ".jpg"))],
)
def test_image_formats_are_the_configured_ones(
    raw_format, aligned_format, raw_image, reference, inputs, demo_root, tmp_path
):
    config = shard_config(tmp_path, demo_root, raw_format=raw_format, aligned_format=aligned_format)
    shard = tmp_path / "shard"
    assert run_in_process(config, inputs, shard) == 0
    assert files_of(shard) == COMMITTED
    manifest = pq.read_table(shard / "manifest.parquet").to_pylist()
    archived = members(shard)
    reference_members = members(reference)
    generated = [r for r in manifest if r["status"] != "skipped"]
    for row in generated:
        if raw_image is None:
            assert row["raw_path"] == ""
        else:
            with Image.open(io.BytesIO(archived[row["raw_path"]])) as image:
                assert (image.format, Path(row["raw_path"]).suffix) == raw_image
        if row["aligned_path"]:
            suffix = {"png": ".png", "jpeg": ".jpg"}[aligned_format]
            assert row["aligned_path"].endswith(suffix)
            with Image.open(io.BytesIO(archived[row["aligned_path"]])) as crop:
                assert crop.format == aligned_format.upper()
    if raw_format == "png":
        # Lossless: the stored image is the generated one, which the default JPEG approximates.
        for row in generated:
            exact = np.asarray(Image.open(io.BytesIO(archived[row["raw_path"]])), np.float64)
            jpeg_name = row["raw_path"].replace(".png", ".jpg")
            lossy = np.asarray(Image.open(io.BytesIO(reference_members[jpeg_name])), np.float64)
            assert 0 < np.abs(exact - lossy).mean() < 8
    names = [n for n in archived if n.startswith("raw/")]
    assert len(names) == (0 if raw_image is None else len(generated))
    # The embeddings are of the crops as stored (a JPEG crop decoded, not the lossless one).
    from digi2real.faces import FacePipeline

    faces = quality_pipeline(load_config(config))
    recognizer = FacePipeline(None, faces.recognizer, prealigned=True)
    stored = read_generated_embeddings(shard / "embeddings.h5")
    assert len(stored)
    for identity, index, embedding in zip(
        stored.identity, stored.image_index, stored.embedding, strict=True
    ):
        name = f"aligned/{identity}/{index}{'.jpg' if aligned_format == 'jpeg' else '.png'}"
        (result,) = recognizer.process_images([decode_image(archived[name], name)])
        np.testing.assert_allclose(result.embedding, embedding, atol=1e-6)
    records = (shard / "records.jsonl").read_text().splitlines()
    assert len(records) == len(generated) and all(json.loads(line) for line in records)


# --- the generation loop: storing and checking in the background ----------------------------


def test_a_failure_in_the_background_fails_the_shard(inputs, demo_root, tmp_path, monkeypatch):
    """An error while storing or checking a batch (here the third image's check) fails the
    job: no archive, no manifest, the images stored so far kept for the rerun."""
    from digi2real import shard_generation

    real_detect, calls = shard_generation.detect_stored, []

    def failing_detect(faces, raw, i, data):
        calls.append(i)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_detect(faces, raw, i, data)

    monkeypatch.setattr(shard_generation, "detect_stored", failing_detect)
    shard = tmp_path / "shard"
    failed = "storing or checking generated images failed at .*/raw/a/2.jpg: OSError.*disk full"
    with pytest.raises(RuntimeError, match=failed):
        run_in_process(shard_config(tmp_path, demo_root), inputs, shard)
    left = files_of(shard)
    assert "manifest.parquet" not in left and "images.zip" not in left
    assert len([f for f in left if f.startswith("raw/")]) == 3


def test_the_store_holds_at_most_its_depth_of_batches(demo_root, tmp_path, monkeypatch):
    """While the background is busy, the generator waits once `depth` batches are pending:
    memory stays flat however far ahead the GPU is."""
    import threading

    from digi2real import shard_generation, shard_store

    release = threading.Event()
    monkeypatch.setattr(shard_generation, "detect_stored", lambda *args: release.wait(30) and None)
    plan = ShardPlan(shard=0, image_identity=["a"] * 8, image_index=list(range(8)))
    formats = shard_store.ImageFormats("png", 90, "png", 95)
    raw = shard_store.RawImages(tmp_path, plan, formats, set(), set(), shard_store.ImageArchives())
    image = np.zeros((8, 8, 3), np.uint8)
    with shard_generation.BackgroundStore(
        None, raw, ["k"] * 8, shard_generation.Faults(0), depth=2
    ) as store:
        handed = []

        def generator() -> None:
            for i in range(6):
                store.submit([i], [image])
                handed.append(i)

        thread = threading.Thread(target=generator)
        thread.start()
        thread.join(timeout=2)
        # One batch in the worker, two in the queue, the fourth waiting to be put.
        assert thread.is_alive() and handed == [0, 1, 2]
        release.set()
        thread.join(timeout=30)
    assert handed == list(range(6)) and sorted(store.checks) == list(range(6))


def test_sigterm_stops_the_shard_within_20_seconds_losing_nothing(
    reference, inputs, demo_root, tmp_path
):
    """SLURM's SIGTERM (a preemption, the time limit): the job stops before its next batch,
    stores what was generated, exits 143 well within SLURM's KillWait of 30 s, and its rerun
    ends with the uninterrupted shard. (That a stop request also ends a batch between its
    denoising steps is tests/test_generation.py's.)"""
    import signal
    import time

    config = shard_config(tmp_path, demo_root)
    shard = tmp_path / "shard"
    # After its first batch (2 images of 6) the job waits for the signal: it comes mid-shard.
    env = {**os.environ, "DIGI2REAL_WAIT_AFTER_BATCHES": "1"}
    job = subprocess.Popen(
        job_command(config, inputs, shard), stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while len(list(shard.glob("raw/*/*.jpg"))) < 2:
        assert job.poll() is None and time.monotonic() < deadline, "no image was written"
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 143, stderr[-2000:]
    assert time.monotonic() - signalled < 20
    assert "stopped; images on disk are kept" in stderr
    left = files_of(shard)
    kept = [f for f in left if f.startswith("raw/")]
    assert len(kept) == 2 and "manifest.parquet" not in left
    assert len((shard / "records.jsonl").read_text().splitlines()) == len(kept)
    assert run_in_process(config, inputs, shard) == 0
    assert (shard / "images.zip").read_bytes() == (reference / "images.zip").read_bytes()
    assert_same_manifest(shard, reference)


def test_a_stale_loose_image_is_unrecorded_before_it_is_removed(inputs, tmp_path):
    """Settings change (new keys): the loose image is removed, and its record with it, so that
    a kill before its replacement is recorded cannot revive the old record for a new file."""
    from digi2real.formats import read_plan
    from digi2real.shard_store import ImageFormats, locate_raw_images, read_records

    plan = read_plan(inputs / "plan.h5")
    formats = ImageFormats("jpeg", 90, "png", 95)
    old, new = ["old"] * len(plan), ["new"] * len(plan)
    shard = tmp_path / "shard"
    (shard / "raw/a").mkdir(parents=True)
    (shard / "raw/a/0.jpg").write_bytes(jpeg(0))  # made with the old settings
    (shard / "records.jsonl").write_text(
        json.dumps({"identity": "a", "image_index": 0, "image_key": "old", "raw_path": "x"}) + "\n"
    )
    assert locate_raw_images(plan, old, shard, formats).loose == {0}
    assert locate_raw_images(plan, new, shard, formats).missing() == list(range(len(plan)))
    assert not (shard / "raw/a/0.jpg").exists()
    assert read_records(shard)[("a", 0)]["image_key"] == ""
    # The kill: a file of the new settings written, its record not yet appended.
    (shard / "raw/a/0.jpg").write_bytes(jpeg(255))
    assert 0 not in locate_raw_images(plan, old, shard, formats).loose


# --- what a crash or a stop leaves ------------------------------------------------------------


def test_an_images_bytes_reach_the_disk_before_its_name_and_its_record(
    inputs, tmp_path, monkeypatch
):
    """A node crash must not leave a record whose image's bytes never reached the disk: the
    bytes are flushed before the rename that names them, and both happen before the record
    is appended (and flushed)."""
    from digi2real import shard_generation, shard_store
    from digi2real.faces import FaceResult
    from digi2real.formats import read_plan
    from digi2real.status import Status

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(handle: int) -> None:
        events.append(("flush", os.readlink(f"/proc/self/fd/{handle}")))
        real_fsync(handle)

    def replace(source, target) -> None:
        events.append(("rename", str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shard_generation, "detect_stored", lambda *args: FaceResult(Status.NO_FACE))
    plan = read_plan(inputs / "plan.h5")
    formats = shard_store.ImageFormats("jpeg", 90, "png", 95)
    raw = shard_store.RawImages(tmp_path, plan, formats, set(), set(), shard_store.ImageArchives())
    store = shard_generation.BackgroundStore(
        None, raw, ["key"] * len(plan), shard_generation.Faults(0)
    )
    store._store(0, np.zeros((16, 16, 3), np.uint8))
    image = str(tmp_path / "raw/a/0.jpg")
    flushed = [n for n, (kind, path) in enumerate(events) if kind == "flush"]
    temporary = [n for n in flushed if Path(events[n][1]).name.startswith(".0.jpg.")]
    journal = [n for n in flushed if events[n][1] == str(tmp_path / "records.jsonl")]
    named = events.index(("rename", image))
    assert temporary and journal, events
    assert temporary[0] < named < journal[0], events


@pytest.mark.parametrize("damage", ["truncated", "empty", "missing"])
def test_a_recorded_image_that_does_not_read_back_is_generated_again(inputs, tmp_path, damage):
    """Whatever its record says: a crash can leave a record whose file holds part of its bytes,
    none, or is not there."""
    from digi2real.formats import read_plan
    from digi2real.shard_store import ImageFormats, locate_raw_images, read_records

    plan = read_plan(inputs / "plan.h5")
    formats = ImageFormats("jpeg", 90, "png", 95)
    keys = [f"key{i}" for i in range(len(plan))]
    shard = tmp_path / "shard"
    (shard / "raw/a").mkdir(parents=True)
    lines = []
    for index in (0, 1):
        (shard / f"raw/a/{index}.jpg").write_bytes(jpeg(40 * index))
        record = {"identity": "a", "image_index": index, "image_key": keys[index]}
        lines.append(json.dumps({**record, "raw_path": f"raw/a/{index}.jpg"}))
    (shard / "records.jsonl").write_text("\n".join(lines) + "\n")
    whole = (shard / "raw/a/0.jpg").read_bytes()
    if damage == "missing":
        (shard / "raw/a/0.jpg").unlink()
    else:
        (shard / "raw/a/0.jpg").write_bytes(
            whole[: len(whole) // 2] if damage == "truncated" else b""
        )
    found = locate_raw_images(plan, keys, shard, formats)
    assert found.loose == {1} and found.missing() == [0, *range(2, len(plan))]
    assert not (shard / "raw/a/0.jpg").exists()
    assert read_records(shard)[("a", 0)]["image_key"] in ("", keys[0])
    if damage != "missing":  # unrecorded before it was removed
        assert read_records(shard)[("a", 0)]["image_key"] == ""


def test_an_archived_image_that_fails_its_crc_is_generated_again(inputs, tmp_path):
    from digi2real.formats import read_plan
    from digi2real.shard_store import ImageFormats, image_archive, locate_raw_images, member_spans

    plan = read_plan(inputs / "plan.h5")
    formats = ImageFormats("jpeg", 90, "png", 95)
    keys = [f"key{i}" for i in range(len(plan))]
    shard = tmp_path / "shard"
    with image_archive(shard / "images.zip") as archive:
        for i in range(len(plan)):
            name = f"raw/{plan.image_identity[i]}/{plan.image_index[i]}.jpg"
            archive.add(name, jpeg(30 * i), comment=keys[i])
    span = member_spans(shard / "images.zip", ["raw/a/1.jpg"])["raw/a/1.jpg"]
    with open(shard / "images.zip", "r+b") as stream:  # one byte of the member changed
        stream.seek(span.offset + span.size // 2)
        byte = stream.read(1)
        stream.seek(span.offset + span.size // 2)
        stream.write(bytes([byte[0] ^ 0xFF]))
    found = locate_raw_images(plan, keys, shard, formats)
    assert found.missing() == [1] and found.archived == set(range(len(plan))) - {1}


def test_a_shard_whose_recorded_image_was_lost_in_a_crash_ends_as_the_uninterrupted_one(
    reference, inputs, demo_root, tmp_path
):
    """Killed after 4 images; then, as a node crash can, one recorded image's bytes are cut
    short. The rerun makes that image again: nothing is marked unreadable, nothing dropped."""
    config = shard_config(tmp_path, demo_root)
    shard = tmp_path / "shard"
    killed = run_as_job(config, inputs, shard, DIGI2REAL_KILL_AFTER_IMAGES="4")
    assert killed.returncode == -9, killed.stderr[-2000:]
    stored = sorted(shard.glob("raw/*/*.jpg"))
    assert len(stored) == 4
    stored[1].write_bytes(stored[1].read_bytes()[:100])
    assert run_in_process(config, inputs, shard) == 0
    assert (shard / "images.zip").read_bytes() == (reference / "images.zip").read_bytes()
    assert_same_manifest(shard, reference)


def test_the_background_store_fails_the_job_within_seconds_whatever_fails(tmp_path, monkeypatch):
    """A failure outside one image's storing and checking (here: a batch that names two images
    and hands over one) must not leave the generator waiting forever on a full queue: it is
    raised in the generating thread, naming the image."""
    import re
    import threading
    import time

    from digi2real import shard_generation, shard_store
    from digi2real.faces import FaceResult
    from digi2real.status import Status

    monkeypatch.setattr(shard_generation, "detect_stored", lambda *args: FaceResult(Status.NO_FACE))
    plan = ShardPlan(shard=0, image_identity=["a"] * 8, image_index=list(range(8)))
    formats = shard_store.ImageFormats("png", 90, "png", 95)
    raw = shard_store.RawImages(tmp_path, plan, formats, set(), set(), shard_store.ImageArchives())
    image = np.zeros((8, 8, 3), np.uint8)
    raised: list[BaseException] = []

    def generator() -> None:
        try:
            with shard_generation.BackgroundStore(
                None, raw, ["k"] * 8, shard_generation.Faults(0), depth=1
            ) as store:
                store.submit([2, 3], [image])
                for i in range(4, 8):
                    store.submit([i], [image])
        except Exception as error:  # noqa: BLE001 - what the job would die of
            raised.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=generator, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the generator waits forever on a store that gave up"
    assert time.monotonic() - started < 10
    assert len(raised) == 1
    assert re.search(r"failed at \S+/raw/a/[23]\.png: ValueError", str(raised[0])), raised[0]


def test_the_stop_flag_restores_the_signal_handlers_it_replaced():
    import signal
    import time

    from digi2real.progress import StopFlag

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        before = {s: signal.getsignal(s) for s in StopFlag.SIGNALS}
        with StopFlag() as stop:
            assert signal.getsignal(signal.SIGTERM) != mine
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            assert stop()
        assert {s: signal.getsignal(s) for s in StopFlag.SIGNALS} == before
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_generate_stage_leaves_the_signal_handlers_as_it_found_them(
    inputs, demo_root, tmp_path
):
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    assert run_in_process(shard_config(tmp_path, demo_root), inputs, tmp_path / "shard") == 0
    assert {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} == before


def test_a_resumed_shard_makes_each_image_in_the_batch_it_was_planned_in(tmp_path):
    """CPU kernels may round an image differently beside other images: a resumed shard
    generates whole plan batches, so every image has the companions it would have had."""
    from types import SimpleNamespace

    from digi2real import shard_generation, shard_store

    plan = ShardPlan(
        shard=0,
        image_identity=["a"] * 6,
        image_index=list(range(6)),
        seed=[100 + i for i in range(6)],
        condition=[np.full(512, i, np.float32) for i in range(6)],
    )
    formats = shard_store.ImageFormats("png", 90, "png", 95)
    raw = shard_store.RawImages(
        tmp_path, plan, formats, {0, 1, 2}, set(), shard_store.ImageArchives()
    )
    generated, stored = [], []

    class Generator:
        settings = SimpleNamespace(batch_size=4)

        def generate(self, conditions, seeds, should_stop):
            generated.append(list(seeds))
            return np.zeros((len(seeds), 8, 8, 3), np.float32)

    class Store:
        def submit(self, batch, images):
            stored.append(batch)

    shard_generation.generate_missing(
        Generator(), raw, Store(), lambda: False, shard_generation.Faults(0)
    )
    assert generated == [[100, 101, 102, 103], [104, 105, 105, 105]]
    assert stored == [[3], [4, 5]]


def test_a_job_computes_alike_whatever_threads_its_machine_offers(
    reference, inputs, demo_root, tmp_path
):
    """generation.cpu_threads, not OMP_NUM_THREADS or the machine's cores, sets the threads
    PyTorch and onnxruntime compute with: a job given one thread ends bitwise as the
    reference (made in this process, at the machine's thread count)."""
    config = shard_config(tmp_path, demo_root)
    shard = tmp_path / "shard"
    one = run_as_job(config, inputs, shard, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    assert one.returncode == 0, one.stderr[-2000:]
    assert (shard / "images.zip").read_bytes() == (reference / "images.zip").read_bytes()
    assert_same_manifest(shard, reference)
