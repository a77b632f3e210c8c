"""One generation shard: generate its planned images, check them, commit them.

A shard is a commit. While it runs, each generated image is a loose file written under a
temporary name and renamed, then recorded in the shard's journal (`records.jsonl`) with its
key. Its commit packs the images into one archive (`images.zip`, written aside and renamed),
then writes the manifest, the commit record, then removes the loose files: a committed shard
is a handful of files, and a kill at any moment leaves either the loose files or the committed
archive. A rerun reuses every image whose key still matches, loose (by its record) or in the
archive (by the member's comment), and since every image's latents come from its own seed, it
ends with the same images as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from digi2real.faces import FacePipeline, FaceResult, UnreadableImage, decode_image
from digi2real.formats import (
    IMAGE_ARCHIVE,
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    GeneratedEmbeddings,
    ImageArchives,
    ImageFormats,
    ShardPlan,
    aligned_path,
    append_record,
    encode_image,
    image_archive,
    raw_path,
    read_records,
    save_image,
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

LOOSE_FOLDERS = ("raw", "aligned")  # a running shard's loose images, gone once it commits


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
    image_formats: ImageFormats,
) -> str:
    """sha256 of everything a shard's stored raw images depend on besides each image's own
    condition and seed: the code version, the generating models' file hashes, the settings
    that change pixels (the device type and dtype as resolved), Δ and λ, and the raw image's
    storage format (a JPEG is other bytes, and the check reads the bytes as stored). Not the
    batch size: on the CPU an image differs across batch sizes by at most 1/255 per pixel
    (README, Faithfulness), and a short last batch is padded, so a resumed shard is bitwise
    the same anyway. Not the crop's format: crops are remade at every commit."""
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
        "raw_image": image_formats.raw_key(),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def image_key(shard_settings_key: str, condition: np.ndarray, seed: int) -> str:
    """The key of one image: its shard's settings key, its condition and its seed."""
    digest = hashlib.sha256(shard_settings_key.encode())
    digest.update(np.ascontiguousarray(condition, np.float32).tobytes())
    digest.update(str(int(seed)).encode())
    return digest.hexdigest()


@dataclass
class RawImages:
    """Where each planned image's raw bytes are: a loose file of this run or an earlier one
    (its record has the image's key), a member of the archive a previous commit left (its
    comment is the key), or nowhere yet (to generate)."""

    shard_dir: Path
    plan: ShardPlan
    formats: ImageFormats
    loose: set[int]
    archived: set[int]
    archives: ImageArchives

    def loose_name(self, i: int) -> str:
        plan = self.plan
        return raw_path(plan.image_identity[i], plan.image_index[i], self.formats.loose_raw)

    def member(self, i: int) -> str:
        return raw_path(self.plan.image_identity[i], self.plan.image_index[i], self.formats.raw)

    def read(self, i: int) -> bytes:
        if i in self.loose:
            return (self.shard_dir / self.loose_name(i)).read_bytes()
        return self.archives.read(self.shard_dir / IMAGE_ARCHIVE, self.member(i))

    def missing(self) -> list[int]:
        return [i for i in range(len(self.plan)) if i not in self.loose and i not in self.archived]


def remove_leftovers(shard_dir: Path) -> None:
    """Temporary files a killed job left (an archive, a manifest or an image half written)."""
    for leftover in shard_dir.rglob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def locate_raw_images(
    plan: ShardPlan, keys: list[str], shard_dir: Path, formats: ImageFormats
) -> RawImages:
    """Find each planned image's raw bytes made with its key; a loose image made with other
    settings is removed: nothing old is passed off as new."""
    records = read_records(shard_dir)
    archives = ImageArchives()
    comments = archives.comments(shard_dir / IMAGE_ARCHIVE) if formats.keeps_raw else {}
    found = RawImages(shard_dir, plan, formats, set(), set(), archives)
    stale = 0
    for i in range(len(plan)):
        record = records.get((plan.image_identity[i], plan.image_index[i]))
        loose = shard_dir / found.loose_name(i)
        if record is not None and record.get("image_key") == keys[i] and loose.is_file():
            found.loose.add(i)
            continue
        if loose.is_file():
            stale += 1
            loose.unlink()
        if formats.keeps_raw and comments.get(found.member(i)) == keys[i]:
            found.archived.add(i)
    todo = len(found.missing())
    log.info(
        "shard %d: %d of %d images reused (their keys match; %d loose, %d in %s), %d to "
        "generate (%d loose made with other settings or models)",
        plan.shard,
        len(plan) - todo,
        len(plan),
        len(found.loose),
        len(found.archived),
        IMAGE_ARCHIVE,
        todo,
        stale,
    )
    return found


def generate_missing(
    generator: Arc2FaceGenerator,
    raw: RawImages,
    keys: list[str],
    should_stop,
    faults: Faults,
) -> dict[int, str]:
    """Generate the planned images no raw bytes were found for, each a loose file recorded in
    the journal; the messages of those that failed."""
    plan, todo = raw.plan, raw.missing()
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
            quality = raw.formats.raw_quality
            save_image(
                encode_image(to_uint8(image), raw.formats.loose_raw, quality),
                raw.shard_dir / raw.loose_name(i),
            )
            append_record(
                raw.shard_dir,
                {
                    "identity": plan.image_identity[i],
                    "image_index": plan.image_index[i],
                    "image_key": keys[i],
                    "raw_path": raw.loose_name(i),
                },
            )
            raw.loose.add(i)
            faults.image_written()
        progress.advance(len(batch))
    return failures


def check_and_pack(
    faces: FacePipeline,
    raw: RawImages,
    keys: list[str],
    failures: dict[int, str],
    faults: Faults,
) -> list[FaceResult]:
    """Detect, align and embed every generated image from its bytes as stored, writing the
    shard's archive aside as it goes: each raw image (unless not kept; its comment the image's
    key), then its aligned 112x112 crop. The archive is renamed into place at the end."""
    plan, formats = raw.plan, raw.formats
    results: list[FaceResult] = [
        FaceResult(Status.FAILED, failures.get(i, "")) for i in range(len(plan))
    ]
    done = [i for i in range(len(plan)) if i not in failures]
    progress = Progress(f"shard {plan.shard} check and pack", len(done))
    with image_archive(raw.shard_dir / IMAGE_ARCHIVE) as archive:
        for start in range(0, len(done), faces.batch_size):
            batch = done[start : start + faces.batch_size]
            stored = [raw.read(i) for i in batch]
            checked = faces.process_images(
                _decode_or_error(data, f"{raw.shard_dir.name}/{raw.loose_name(i)}")
                for data, i in zip(stored, batch, strict=True)
            )
            for i, data, result in zip(batch, stored, checked, strict=True):
                results[i] = result
                if formats.keeps_raw:
                    archive.add(raw.member(i), data, comment=keys[i])
                if result.aligned is not None:
                    crop = encode_image(
                        result.aligned[..., ::-1], formats.aligned, formats.aligned_quality
                    )
                    archive.add(_aligned(plan, i, formats), crop)
                faults.image_packed()
            progress.advance(len(batch))
        raw.archives.close()  # the archive this one replaces
    return results


def remove_loose_images(shard_dir: Path) -> None:
    """After the commit: the loose images are in the archive now."""
    for folder in LOOSE_FOLDERS:
        shutil.rmtree(shard_dir / folder, ignore_errors=True)


def _aligned(plan: ShardPlan, i: int, formats: ImageFormats) -> str:
    return aligned_path(plan.image_identity[i], plan.image_index[i], formats.aligned)


def _decode_or_error(data: bytes, name: str) -> np.ndarray | Exception:
    try:
        return decode_image(data, name)
    except UnreadableImage as error:
        return error


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


def manifest_table(
    plan: ShardPlan,
    results: list[FaceResult],
    keys: list[str],
    images_per_identity: int,
    formats: ImageFormats,
) -> pa.Table:
    rows: dict[str, list] = {column: [] for column in MANIFEST_COLUMNS}
    prototype = dict(zip(plan.identities, plan.prototypes, strict=True))
    for i, result in enumerate(results):
        identity, index = plan.image_identity[i], plan.image_index[i]
        embedding = result.embedding
        ok = result.status is Status.OK and embedding is not None
        generated = result.status is not Status.FAILED
        raw = raw_path(identity, index, formats.raw) if generated and formats.keeps_raw else ""
        aligned = _aligned(plan, i, formats) if result.aligned is not None else ""
        row = {
            "identity": identity,
            "image_index": index,
            "shard": plan.shard,
            "seed": plan.seed[i],
            "t": plan.t[i],
            "source_image": plan.source_path[i],
            "status": result.status.label,
            "message": result.message,
            "archive": IMAGE_ARCHIVE if raw or aligned else "",
            "raw_path": raw,
            "aligned_path": aligned,
            "det_score": result.det_score,
            "cos_prototype": float(embedding @ prototype[identity]) if ok else float("nan"),
            "cos_condition": float(embedding @ plan.condition[i]) if ok else float("nan"),
            "image_key": keys[i] if generated else "",
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
