"""One generation shard: generate its planned images, check them, commit its manifest.

A shard is a commit. Each image is written under a temporary name and renamed, and the shard's
manifest is written last, atomically: only once it exists does the shard count as done. A rerun
of a killed shard regenerates only the images missing on disk, and since every image's latents
come from its own seed, it ends with the same images as an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from PIL import Image

from digi2real.config import Config, get
from digi2real.delta import read_delta
from digi2real.errors import DataError
from digi2real.faces import FacePipeline, FaceResult, face_pipeline_from_config, read_image
from digi2real.formats import atomic_path
from digi2real.generation import (
    Arc2FaceGenerator,
    GenerationSettings,
    Interrupted,
    build_pipeline,
    to_uint8,
)
from digi2real.planning import ShardPlan, image_seed, read_plan
from digi2real.progress import Progress, log
from digi2real.status import Status

MANIFEST_SCHEMA = pa.schema(
    [
        ("identity", pa.string()),
        ("image_index", pa.int32()),
        ("shard", pa.int32()),
        ("seed", pa.int64()),
        ("t", pa.float64()),
        ("source_image", pa.string()),
        ("status", pa.string()),
        ("message", pa.string()),
        ("raw_path", pa.string()),
        ("aligned_path", pa.string()),
        ("det_score", pa.float32()),
        ("cos_prototype", pa.float32()),
        ("cos_condition", pa.float32()),
    ]
)
MANIFEST_COLUMNS = tuple(MANIFEST_SCHEMA.names)


def raw_path(identity: str, image_index: int) -> str:
    return f"raw/{identity}/{image_index}.png"


def aligned_path(identity: str, image_index: int) -> str:
    return f"aligned/{identity}/{image_index}.png"


def save_png(image: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 array as PNG under a temporary name, then rename it into place."""
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")


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


class Faults:
    """Fault injection for the tests, read from the environment; inert when unset."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.fail = str(shard) in os.environ.get("DIGI2REAL_FAIL_SHARDS", "").split(",")
        self.fail_once_dir = os.environ.get("DIGI2REAL_FAIL_ONCE_DIR")
        self.kill_after = int(os.environ.get("DIGI2REAL_KILL_AFTER_IMAGES", "0") or 0)
        self.written = 0

    def image_written(self) -> None:
        self.written += 1
        if self.kill_after and self.written >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def before_commit(self) -> None:
        if self.fail:
            raise RuntimeError(f"shard {self.shard}: failure injected by DIGI2REAL_FAIL_SHARDS")
        if self.fail_once_dir:
            marker = Path(self.fail_once_dir) / f"shard-{self.shard}"
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                raise RuntimeError(f"shard {self.shard}: one failure injected")


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


def write_manifest(table: pa.Table, manifest: Path) -> None:
    """The CSV copy first, the Parquet commit record last, each renamed into place."""
    with atomic_path(manifest.with_suffix(".csv")) as temporary:
        pacsv.write_csv(table, temporary)
    with atomic_path(manifest) as temporary:
        pq.write_table(table, temporary)


def generate_shard(config: Config, plan_path: Path, delta_path: Path, manifest: Path) -> int:
    """Run one shard into the folder of `manifest`; returns the process exit code."""
    plan = read_plan(plan_path)
    delta = read_delta(delta_path)
    settings = GenerationSettings.from_config(config)
    shard_dir = manifest.parent
    stop = StopFlag()
    stop.install()
    faults = Faults(plan.shard)
    failures: dict[int, str] = {}
    if len(plan):
        generator = Arc2FaceGenerator(build_pipeline(config, settings), settings, delta.delta)
        hidden = generator.projector.hidden_size
        if delta.delta.shape != (generator.projector.prompt_ids.shape[1], hidden):
            raise DataError(
                f"{delta_path}: delta has shape {delta.delta.shape}, the encoder gives "
                f"(77, {hidden}); was it estimated with another encoder?"
            )
        try:
            failures = generate_missing(generator, plan, shard_dir, stop, faults)
        except Interrupted:
            pass
        if stop():
            log.warning("shard %d: stopped; images on disk are kept for the rerun", plan.shard)
            return 143
    faces = face_pipeline_from_config(config, "quality")
    results = check_images(faces, plan, shard_dir, failures)
    faults.before_commit()
    images_per_identity = get(config, "plan.images_per_identity", 20, kind=int)
    write_manifest(manifest_table(plan, results, images_per_identity), manifest)
    log.info("shard %d: committed %s", plan.shard, manifest)
    return 0
