"""Training a recognizer: the export read back, the data order, and stop-and-resume.

A run stopped (SIGTERM, as SLURM sends before a time limit) or killed (SIGKILL, a node lost)
after k steps and run again ends with weights bitwise equal to an uninterrupted run's, on the
CPU at a fixed thread count: in one process, and in two DDP processes on gloo under torchrun.
The runs are real processes of `digi2real train`, as the workflow starts them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from digi2real.config import resolve_config
from digi2real.exports import SYNTHETIC, Classes, write_labelled_recordio
from digi2real.training import TrainingSet
from digi2real.training_data import EpochPlan, RecordIOFaces, TrainingImages, WebDatasetFaces

CLASSES, PER_CLASS = 4, 6
STEPS = 8  # 24 images, batch 4: an epoch is 6 steps in one process, 3 in two


def face_jpeg(label: int, k: int) -> bytes:
    """A 112x112 face-sized image whose content depends on its class and index."""
    rng = np.random.default_rng([label, k])
    base = np.full((112, 112, 3), 40 * label + 30, np.uint8)
    pixels = np.clip(base + rng.integers(0, 60, (112, 112, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_recordio(folder: Path, images: list[tuple[int, bytes]], identities: list[str]) -> None:
    folder.mkdir(parents=True)
    write_labelled_recordio(folder, Classes(identities, [SYNTHETIC] * len(identities)), images)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "recordio"
    images = [(label, face_jpeg(label, k)) for label in range(CLASSES) for k in range(PER_CLASS)]
    write_recordio(folder, images, [f"id{label}" for label in range(CLASSES)])
    return folder


@pytest.mark.unit
def test_recordio_reader_gives_each_image_and_label_back(export):
    records = RecordIOFaces(export)
    assert len(records) == CLASSES * PER_CLASS
    assert records.identities == ["id0", "id1", "id2", "id3"]
    assert records.labels.tolist() == [label for label in range(CLASSES) for _ in range(PER_CLASS)]
    assert records.encoded(7) == face_jpeg(1, 1)


@pytest.mark.unit
def test_a_record_holding_the_magic_word_reads_back_whole(tmp_path):
    # dmlc-core splits a record where its data holds the magic word at an aligned offset.
    payload = face_jpeg(0, 0)
    payload = payload[:8] + (0xCED7230A).to_bytes(4, "little") + payload[8:]
    write_recordio(tmp_path / "rec", [(0, payload)], ["only"])
    assert RecordIOFaces(tmp_path / "rec").encoded(0) == payload


@pytest.mark.unit
def test_webdataset_reader_matches_the_recordio_reader(tmp_path, export):
    folder = tmp_path / "webdataset"
    folder.mkdir()
    records = RecordIOFaces(export)
    order = np.random.default_rng(0).permutation(len(records))
    with tarfile.open(folder / "shard-000000.tar", "w") as tar:
        for position in order:
            label = int(records.labels[position])
            for suffix, data in (
                ("jpg", records.encoded(int(position))),
                ("cls", str(label).encode()),
            ):
                member = tarfile.TarInfo(f"{label:07d}_{position:05d}.{suffix}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    index = {"shardlist": [{"url": "shard-000000.tar", "nsamples": len(records)}]}
    (folder / "index.json").write_text(json.dumps(index))
    shutil.copy(export / "labels.csv", folder / "labels.csv")
    tars = WebDatasetFaces(folder)
    assert len(tars) == len(records)
    for k, position in enumerate(order):
        assert tars.encoded(k) == records.encoded(int(position))
        assert tars.labels[k] == records.labels[position]


@pytest.mark.unit
def test_epoch_order_comes_from_the_seed_and_epoch_alone():
    plan = EpochPlan(np.arange(100), batch_size=8, world=2, seed=3)
    assert plan.steps == 6  # 100 // 16, the last incomplete global batch dropped
    assert plan.order(1).tolist() == EpochPlan(np.arange(100), 8, 2, 3).order(1).tolist()
    assert plan.order(1).tolist() != plan.order(2).tolist()
    # Two processes together take each image of the epoch's first 96 once, and a resume at
    # step 4 takes exactly the batches the uninterrupted epoch had from there.
    both = plan.batches(1, 0) + plan.batches(1, 1)
    taken = sorted(i for batch in both for i in batch)
    assert taken == sorted(plan.order(1)[:96].tolist())
    assert plan.batches(1, 1, start=4) == plan.batches(1, 1)[4:]


@pytest.mark.unit
def test_flips_and_pixels_depend_on_the_image_not_the_worker(export):
    records = RecordIOFaces(export)
    data = TrainingSet.without(records, set())
    dataset = TrainingImages(records, data.classes, seed=0, flip=True)
    dataset.set_epoch(2)
    once = [dataset[i][0] for i in range(len(records))]
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, num_workers=2)
    again = torch.cat([faces for faces, _ in loader])
    assert all(torch.equal(a, b) for a, b in zip(once, again, strict=True))
    unflipped = TrainingImages(records, data.classes, seed=0, flip=False)
    flipped = [not torch.equal(dataset[i][0], unflipped[i][0]) for i in range(len(records))]
    assert 0 < sum(flipped) < len(records)
    for i in range(len(records)):
        if flipped[i]:
            assert torch.equal(dataset[i][0], unflipped[i][0].flip(-1))


@pytest.mark.unit
def test_left_out_identities_leave_contiguous_classes(export):
    records = RecordIOFaces(export)
    data = TrainingSet.without(records, {(SYNTHETIC, "id1")})
    assert data.num_classes == 3
    assert sorted(set(data.classes.tolist())) == [-1, 0, 1, 2]
    assert (data.classes[records.labels == 1] == -1).all()
    assert (data.classes[records.labels == 2] == 1).all()
    assert len(data.images) == 3 * PER_CLASS


# --- Stop and resume, in real processes -------------------------------------------------------


def training_config(folder: Path, **train) -> Path:
    settings = {
        "train": {
            "network": "iresnet18",
            "embedding_size": 64,
            "batch_size": 4,
            "epochs": 2,
            "lr_steps": [1],
            "max_steps": STEPS,
            "gpus": 0,
            "loader_workers": 0,
            "cpu_threads": 1,
            "log_every_steps": 1,
            **train,
        }
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(resolve_config(settings)))
    return path


def train_command(folder: Path, export: Path) -> list[str]:
    return [
        sys.executable, "-m", "digi2real", "train", "--config", str(folder / "config.yaml"),
        "--export", str(export), "--work", str(folder / "work"),
        "--backbone", str(folder / "backbone.pt"), "--metrics", str(folder / "metrics.jsonl"),
    ]  # fmt: skip


def train(folder: Path, export: Path, **faults: str):
    env = {**os.environ, **faults, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        train_command(folder, export), env=env, capture_output=True, text=True, timeout=600
    )


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "backbone.pt", weights_only=True)


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, first {different[:3]}"


def metrics_steps_of(path: Path) -> list[int]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)]


def metrics_steps(folder: Path) -> list[int]:
    return metrics_steps_of(folder / "metrics.jsonl")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, export) -> Path:
    folder = tmp_path_factory.mktemp("uninterrupted")
    training_config(folder)
    result = train(folder, export)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.mark.unit
def test_uninterrupted_run_writes_arcface_torch_layout_and_metrics(uninterrupted):
    from digi2real.iresnet import iresnet

    state = weights(uninterrupted)
    reference = iresnet("iresnet18", 64).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == [
        (k, tuple(v.shape)) for k, v in reference.items()
    ]
    assert metrics_steps(uninterrupted) == list(range(1, STEPS + 1))
    records = [
        json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()
    ]
    # lr x0.1 after epoch 1 (lr_steps [1]): 6 steps of 4 from 24 images is one epoch
    assert [r["lr"] for r in records if "lr" in r] == pytest.approx([0.1] * 6 + [0.01] * 2)
    assert all(r["images_per_second"] > 0 for r in records if "loss" in r)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fault", "step"),
    [("DIGI2REAL_TRAIN_TERM_AFTER_STEPS", "7"), ("DIGI2REAL_TRAIN_KILL_AFTER_STEPS", "3")],
)
def test_stopped_or_killed_then_resumed_equals_uninterrupted(
    tmp_path, export, uninterrupted, fault, step
):
    # A checkpoint after every step (the interval is a fraction of a second): the kill loses
    # nothing since the last one, whichever step it hits. Step 7 is in the second epoch.
    training_config(tmp_path, checkpoint_minutes=1e-6)
    first = train(tmp_path, export, **{fault: step})
    if fault.endswith("TERM_AFTER_STEPS"):
        assert first.returncode == 143, first.stderr[-3000:]
        assert "stopped; the checkpoint" in first.stderr
    else:
        assert first.returncode == -signal.SIGKILL
    assert not (tmp_path / "backbone.pt").exists()
    second = train(tmp_path, export)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed at step" in second.stderr
    assert_bitwise_equal(weights(tmp_path), weights(uninterrupted))
    assert metrics_steps(tmp_path) == list(range(1, STEPS + 1))


@pytest.mark.unit
def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path, export, uninterrupted):
    training_config(tmp_path, checkpoint_minutes=1e-6, lr=0.05)
    assert train(tmp_path, export, DIGI2REAL_TRAIN_TERM_AFTER_STEPS="2").returncode == 143
    training_config(tmp_path)  # the settings of the uninterrupted run
    second = train(tmp_path, export)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "other settings or data: starting over" in second.stderr
    assert_bitwise_equal(weights(tmp_path), weights(uninterrupted))


def start_training(folder: Path, export: Path) -> subprocess.Popen:
    """`digi2real train` as the workflow runs it, in a session of its own: with train.gpus 2
    (on the CPU: gloo) it starts torchrun, which starts the two processes."""
    return subprocess.Popen(
        train_command(folder, export),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_step(folder: Path, step: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if step in metrics_steps_of(folder / "work/metrics.jsonl"):
            return
        time.sleep(0.2)
    raise AssertionError(f"no step {step} in {folder}/work/metrics.jsonl")


@pytest.mark.unit
def test_two_gloo_processes_stopped_and_resumed_equal_uninterrupted(tmp_path, export):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    for folder in (whole, stopped):
        folder.mkdir()
        training_config(folder, checkpoint_minutes=1e-6, gpus=2)
    result = start_training(whole, export)
    _, stderr = result.communicate(timeout=600)
    assert result.returncode == 0, stderr[-3000:]
    # SIGTERM to every process of the job, as SLURM sends it before a time limit.
    first = start_training(stopped, export)
    wait_for_step(stopped, 2, first)
    os.killpg(first.pid, signal.SIGTERM)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 143, stderr[-3000:]
    assert "stopped; the checkpoint" in stderr
    second = start_training(stopped, export)
    _, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr[-3000:]
    assert "resumed at step" in stderr
    assert_bitwise_equal(weights(stopped), weights(whole))
    # two processes of 4 images: 3 steps an epoch, lr x0.1 from step 4 on, 2 epochs
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records if "lr" in r] == pytest.approx([0.1] * 3 + [0.01] * 3)
    assert records[0]["processes"] == 2
