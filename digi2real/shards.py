"""One generation shard: generate its planned images, check them, commit its manifest.

A shard is a commit. Each image is written under a temporary name and renamed, and the shard's
manifest is written last, atomically: only once it exists does the shard count as done. A rerun
of a killed shard regenerates only the images missing on disk, and since every image's latents
come from its own seed, it ends with the same images as an uninterrupted run.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pyarrow as pa

from digi2real.faces import FacePipeline, FaceResult, read_image
from digi2real.formats import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    ShardPlan,
    aligned_path,
    raw_path,
    save_png,
)
from digi2real.generation import Arc2FaceGenerator, to_uint8
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


def generate_missing(
    generator: Arc2FaceGenerator,
    plan: ShardPlan,
    shard_dir: Path,
    should_stop,
    faults: Faults,
) -> dict[int, str]:
    """Generate the planned images not yet on disk; the messages of those that failed."""
    todo = [i for i in range(len(plan)) if not (shard_dir / _raw(plan, i)).is_file()]
    log.info("shard %d: %d of %d images to generate", plan.shard, len(todo), len(plan))
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


def _read_or_error(path: Path) -> np.ndarray | Exception:
    try:
        return read_image(path)
    except Exception as error:
        return error


def manifest_table(
    plan: ShardPlan, results: list[FaceResult], images_per_identity: int
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
