"""One generation shard: generate its planned images, check them, commit its manifest.

A shard is a commit. Each image is written under a temporary name and renamed, and the shard's
manifest is written last, atomically: only once it exists does the shard count as done. A rerun
of a killed shard regenerates only the images missing on disk, and since every image's latents
come from its own seed, it ends with the same images as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import numpy as np
import pyarrow as pa

from digi2real.faces import FacePipeline, FaceResult, read_image
from digi2real.formats import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    GeneratedEmbeddings,
    ShardPlan,
    aligned_path,
    append_record,
    raw_path,
    read_records,
    save_png,
)
from digi2real.generation import (
    GENERATION_CODE_VERSION,
    PIXEL_MODELS,
    Arc2FaceGenerator,
    GenerationSettings,
    to_uint8,
)
from digi2real.planning import image_seed
from digi2real.progress import Progress, log
from digi2real.status import Status
from digi2real.testing import Faults


class StopFlag:
    """Set by SIGTERM (SLURM's warning before a kill or a preemption) and SIGINT."""

    def __init__(self) -> None:
        self.stopped = False

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum, _frame) -> None:
        log.warning("received %s: stopping after the current step", signal.Signals(signum).name)
        self.stopped = True

    def __call__(self) -> bool:
        return self.stopped


def settings_key(
    model_hashes: dict[str, str],
    settings: GenerationSettings,
    device_type: str,
    dtype: str,
    delta: np.ndarray | None,
) -> str:
    """sha256 of everything a shard's pixels depend on besides each image's own condition and
    seed: the code version, the generating models' file hashes, the settings that change
    pixels (the device type and dtype as resolved), Δ and λ. Not the batch size: on the CPU an
    image differs across batch sizes by at most 1/255 per pixel (README, Faithfulness), and a
    short last batch is padded, so a resumed shard is bitwise the same anyway."""
    content = {
        "code": GENERATION_CODE_VERSION,
        "models": {key: model_hashes[key] for key in sorted(PIXEL_MODELS & set(model_hashes))},
        "steps": settings.steps,
        "guidance": settings.guidance,
        "height": settings.height,
        "width": settings.width,
        "scheduler": settings.scheduler,
        "device": device_type,
        "dtype": dtype,
        "delta_sha256": None
        if delta is None
        else hashlib.sha256(np.ascontiguousarray(delta, np.float32).tobytes()).hexdigest(),
        "delta_scale": settings.delta_scale,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def image_key(shard_settings_key: str, condition: np.ndarray, seed: int) -> str:
    """The key of one image: its shard's settings key, its condition and its seed."""
    digest = hashlib.sha256(shard_settings_key.encode())
    digest.update(np.ascontiguousarray(condition, np.float32).tobytes())
    digest.update(str(int(seed)).encode())
    return digest.hexdigest()


def generate_missing(
    generator: Arc2FaceGenerator,
    plan: ShardPlan,
    keys: list[str],
    shard_dir: Path,
    should_stop,
    faults: Faults,
) -> dict[int, str]:
    """Generate the planned images that have no record with their key; the messages of those
    that failed. An image on disk made with other settings is removed first: nothing old is
    passed off as new."""
    records = read_records(shard_dir)
    todo, stale = [], 0
    for i in range(len(plan)):
        record = records.get((plan.image_identity[i], plan.image_index[i]))
        raw = shard_dir / _raw(plan, i)
        if record is not None and record.get("image_key") == keys[i] and raw.is_file():
            continue
        if raw.is_file():
            stale += record is not None
            raw.unlink()
        todo.append(i)
    log.info(
        "shard %d: %d of %d images reused (their keys match), %d to generate (%d made with "
        "other settings or models, %d new)",
        plan.shard,
        len(plan) - len(todo),
        len(plan),
        len(todo),
        stale,
        len(todo) - stale,
    )
    progress = Progress(f"shard {plan.shard} generate", len(todo))
    failures: dict[int, str] = {}
    batch_size = generator.settings.batch_size
    for start in range(0, len(todo), batch_size):
        if should_stop():
            break
        batch = todo[start : start + batch_size]
        # A short last batch is padded with copies of its last image: every image is then made
        # in a batch of exactly batch_size, so on the CPU it is bitwise the same whatever the
        # shard size and however often the shard was resumed.
        padded = batch + [batch[-1]] * (batch_size - len(batch))
        images = generator.generate(
            np.stack([plan.condition[i] for i in padded]),
            [plan.seed[i] for i in padded],
            should_stop,
        )
        for i, image in zip(batch, images[: len(batch)], strict=True):
            if not np.all(np.isfinite(image)):
                failures[i] = "generated image has non-finite pixels"
                continue
            save_png(to_uint8(image), shard_dir / _raw(plan, i))
            append_record(
                shard_dir,
                {
                    "identity": plan.image_identity[i],
                    "image_index": plan.image_index[i],
                    "image_key": keys[i],
                    "raw_path": _raw(plan, i),
                },
            )
            faults.image_written()
        progress.advance(len(batch))
    return failures


def _raw(plan: ShardPlan, i: int) -> str:
    return raw_path(plan.image_identity[i], plan.image_index[i])


def check_images(
    faces: FacePipeline, plan: ShardPlan, shard_dir: Path, failures: dict[int, str]
) -> list[FaceResult]:
    """Detect, align and embed every generated image, saving the aligned 112x112 crops."""
    results: list[FaceResult] = [
        FaceResult(Status.FAILED, failures.get(i, "")) for i in range(len(plan))
    ]
    done = [i for i in range(len(plan)) if i not in failures]
    progress = Progress(f"shard {plan.shard} check", len(done))
    for start in range(0, len(done), faces.batch_size):
        batch = done[start : start + faces.batch_size]
        checked = faces.process_images(_read_or_error(shard_dir / _raw(plan, i)) for i in batch)
        for i, result in zip(batch, checked, strict=True):
            results[i] = result
            if result.aligned is not None:
                identity, index = plan.image_identity[i], plan.image_index[i]
                save_png(result.aligned[..., ::-1], shard_dir / aligned_path(identity, index))
        progress.advance(len(batch))
    return results


def checked_embeddings(plan: ShardPlan, results: list[FaceResult]) -> GeneratedEmbeddings:
    """The embedding and landmarks of every image of the shard whose check found a face."""
    rows = [i for i, result in enumerate(results) if result.embedding is not None]
    no_landmarks = np.full((5, 2), np.nan, np.float32)
    return GeneratedEmbeddings(
        identity=[plan.image_identity[i] for i in rows],
        image_index=np.asarray([plan.image_index[i] for i in rows], np.int32),
        embedding=np.asarray([results[i].embedding for i in rows], np.float32).reshape(-1, 512),
        landmarks=np.asarray(
            [
                results[i].landmarks if results[i].landmarks is not None else no_landmarks
                for i in rows
            ],
            np.float32,
        ).reshape(-1, 5, 2),
    )


def _read_or_error(path: Path) -> np.ndarray | Exception:
    try:
        return read_image(path)
    except Exception as error:
        return error


def manifest_table(
    plan: ShardPlan, results: list[FaceResult], keys: list[str], images_per_identity: int
) -> pa.Table:
    rows: dict[str, list] = {column: [] for column in MANIFEST_COLUMNS}
    prototype = dict(zip(plan.identities, plan.prototypes, strict=True))
    for i, result in enumerate(results):
        identity, index = plan.image_identity[i], plan.image_index[i]
        embedding = result.embedding
        ok = result.status is Status.OK and embedding is not None
        row = {
            "identity": identity,
            "image_index": index,
            "shard": plan.shard,
            "seed": plan.seed[i],
            "t": plan.t[i],
            "source_image": plan.source_path[i],
            "status": result.status.label,
            "message": result.message,
            "raw_path": _raw(plan, i) if result.status is not Status.FAILED else "",
            "aligned_path": aligned_path(identity, index) if result.aligned is not None else "",
            "det_score": result.det_score,
            "cos_prototype": float(embedding @ prototype[identity]) if ok else float("nan"),
            "cos_condition": float(embedding @ plan.condition[i]) if ok else float("nan"),
            "image_key": keys[i] if result.status is not Status.FAILED else "",
        }
        for column in MANIFEST_COLUMNS:
            rows[column].append(row[column])
    for identity, status, reason in zip(
        plan.identities, plan.identity_status, plan.identity_reason, strict=True
    ):
        if status != "skipped":
            continue
        for index in range(images_per_identity):
            row = dict.fromkeys(MANIFEST_COLUMNS, "")
            row.update(
                identity=identity,
                image_index=index,
                shard=plan.shard,
                seed=image_seed(int(plan.attrs.get("seed", 0)), identity, index),
                t=float("nan"),
                status=Status.SKIPPED.label,
                message=reason,
                det_score=float("nan"),
                cos_prototype=float("nan"),
                cos_condition=float("nan"),
            )
            for column in MANIFEST_COLUMNS:
                rows[column].append(row[column])
    return pa.table(rows, schema=MANIFEST_SCHEMA)
