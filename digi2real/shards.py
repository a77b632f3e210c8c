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
import queue
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from digi2real.errors import Digi2RealError
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
    """Set by SIGTERM (SLURM's warning before a kill or a preemption) and SIGINT while the
    block it guards runs; the handlers before it are back once the block ends."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.stopped = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exception) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

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

    def reads_back(self, i: int) -> bool:
        """Whether image `i`'s stored bytes are whole: its archive member passes its CRC, and
        the bytes decode. A node that crashed can leave a record whose file never reached
        the disk, or reached it in part."""
        try:
            decode_image(self.read(i), self.loose_name(i))
        except (OSError, Digi2RealError, UnreadableImage):
            return False
        return True

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
    stale = broken = replaced = 0
    for i in range(len(plan)):
        record = records.get((plan.image_identity[i], plan.image_index[i]))
        loose = shard_dir / found.loose_name(i)
        if record is not None and record.get("image_key") == keys[i] and loose.is_file():
            found.loose.add(i)
            if found.reads_back(i):
                continue
            found.loose.discard(i)
            broken += 1
        elif loose.is_file():
            stale += 1
        if loose.is_file():
            # The record first: a kill between the two must not leave the old record naming
            # whatever file is written here next.
            append_record(shard_dir, {**_identify(plan, i), "image_key": "", "raw_path": ""})
            loose.unlink()
        comment = comments.get(found.member(i)) if formats.keeps_raw else None
        if comment == keys[i]:
            found.archived.add(i)
            if not found.reads_back(i):
                found.archived.discard(i)
                broken += 1
        elif comment is not None:
            replaced += 1
    todo = len(found.missing())
    log.info(
        "shard %d: %d of %d images reused (their keys match; %d loose, %d in %s), %d to "
        "generate (made with other settings or models, to be replaced: %d loose, %d in %s)",
        plan.shard,
        len(plan) - todo,
        len(plan),
        len(found.loose),
        len(found.archived),
        IMAGE_ARCHIVE,
        todo,
        stale,
        replaced,
        IMAGE_ARCHIVE,
    )
    if broken:
        log.warning(
            "shard %d: %d recorded images do not read back (a crash before their bytes "
            "reached the disk?): generated again",
            plan.shard,
            broken,
        )
    return found


def loose_crop(plan: ShardPlan, i: int) -> str:
    """A crop while its shard runs: lossless, the recognizer embeds it at the commit."""
    return aligned_path(plan.image_identity[i], plan.image_index[i], "png")


def detect_stored(faces: FacePipeline, raw: RawImages, i: int, data: bytes) -> FaceResult:
    """Detect and align the face of image `i` on its bytes as stored, writing its crop loose;
    the result keeps no pixels (the commit reads the crop back)."""
    name = f"{raw.shard_dir.name}/{raw.loose_name(i)}"
    try:
        image = decode_image(data, name)
    except UnreadableImage as error:
        return FaceResult(Status.UNREADABLE, str(error))
    result = faces.align(image)
    if result.aligned is not None:
        crop = encode_image(result.aligned[..., ::-1], "png", 0)
        save_image(crop, raw.shard_dir / loose_crop(raw.plan, i))
        result.aligned = None
    return result


class BackgroundStore:
    """Stores and checks each generated batch in a thread of its own while the generator makes
    the next one: encodes each image in the raw format, writes it (loose) and its record, then
    detects and aligns its face on the bytes as stored and writes the crop. The queue holds at
    most `depth` batches, so memory stays flat: the generator waits when the thread is behind.
    Any error in the thread, in an image's handling or around it, fails the shard: it is
    raised at the next batch handed over, or when the store closes, naming the image; from
    then on the thread only drains the queue, so the generator never waits on a thread that
    gave up. Closing waits for every batch handed over (a stop request too, so nothing
    generated is lost)."""

    def __init__(
        self,
        faces: FacePipeline,
        raw: RawImages,
        keys: list[str],
        faults: Faults,
        depth: int = 2,
    ) -> None:
        self.faces, self.raw, self.keys, self.faults = faces, raw, keys, faults
        self.results: dict[int, FaceResult] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._failed = ""  # the image it failed on
        self._thread = threading.Thread(target=self._work, name="store-and-check", daemon=True)

    def __enter__(self) -> BackgroundStore:
        self._thread.start()
        return self

    def submit(self, batch: list[int], images: list[np.ndarray]) -> None:
        """Hand over generated RGB uint8 images; blocks while `depth` batches are pending."""
        self._put((batch, images))

    def _put(self, item) -> None:
        """Put `item` in the queue, raising the thread's error instead of waiting for a thread
        that can no longer take it."""
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                raise RuntimeError(
                    f"shard {self.raw.plan.shard}: the thread storing and checking the images "
                    "ended unexpectedly"
                )
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain, so that the generator never blocks on a dead thread
            failed_at = ""
            try:
                batch, images = item
                failed_at = self.raw.loose_name(batch[0]) if batch else ""
                for i, image in zip(batch, images, strict=True):
                    failed_at = self.raw.loose_name(i)
                    self.results[i] = self._store(i, image)
            except BaseException as error:  # handed to the main thread
                self._error, self._failed = error, failed_at

    def _store(self, i: int, image: np.ndarray) -> FaceResult:
        raw, plan = self.raw, self.raw.plan
        data = encode_image(image, raw.formats.loose_raw, raw.formats.raw_quality)
        save_image(data, raw.shard_dir / raw.loose_name(i))
        record = {**_identify(plan, i), "image_key": self.keys[i], "raw_path": raw.loose_name(i)}
        append_record(raw.shard_dir, record)
        raw.loose.add(i)
        self.faults.image_written()
        return detect_stored(self.faces, raw, i, data)

    def _raise_error(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, Digi2RealError):  # already one line naming what failed
            raise self._error
        where = self.raw.shard_dir / self._failed
        raise RuntimeError(
            f"shard {self.raw.plan.shard}: storing or checking generated images failed at "
            f"{where}: {self._error!r}"
        ) from self._error

    def __exit__(self, kind, error, traceback) -> None:
        if self._thread.is_alive():
            self._queue.put(None)  # the thread drains even after an error: never waits long
            self._thread.join()
        if kind is None:
            self._raise_error()
        elif self._error is not None:  # the main thread's error propagates; say this one too
            log.error(
                "shard %d: the background store also failed: %r", self.raw.plan.shard, self._error
            )


def plan_batches(n_images: int, batch_size: int) -> list[list[int]]:
    """The shard's denoising batches: its planned images in plan order, `batch_size` at a
    time, the last one padded with copies of its last image. Fixed by the plan alone, so every
    image is made with the same companions however often the shard was resumed (CPU kernels
    may round an image differently beside other images)."""
    batches = []
    for start in range(0, n_images, batch_size):
        batch = list(range(start, min(start + batch_size, n_images)))
        batches.append(batch + [batch[-1]] * (batch_size - len(batch)))
    return batches


def generate_missing(
    generator: Arc2FaceGenerator,
    raw: RawImages,
    store: BackgroundStore,
    should_stop,
    faults: Faults,
) -> dict[int, str]:
    """Generate the planned images no raw bytes were found for, handing each batch to the
    background store; the messages of those that failed. A batch is generated whole (its
    plan_batches companions too, stored already or not) when any of its images is missing."""
    plan, missing = raw.plan, set(raw.missing())
    progress = Progress(f"shard {plan.shard} generate", len(missing))
    failures: dict[int, str] = {}
    batch_size = generator.settings.batch_size
    batches = [b for b in plan_batches(len(plan), batch_size) if missing.intersection(b)]
    for number, padded in enumerate(batches):
        if should_stop():
            break
        images = generator.generate(
            np.stack([plan.condition[i] for i in padded]),
            [plan.seed[i] for i in padded],
            should_stop,
        )
        finite, todo = [], sorted(missing.intersection(padded))
        for i in todo:
            image = images[padded.index(i)]
            if np.all(np.isfinite(image)):
                finite.append((i, to_uint8(image)))
            else:
                failures[i] = "generated image has non-finite pixels"
        store.submit([i for i, _ in finite], [image for _, image in finite])
        if number == 0:
            log.info(
                "shard %d: first batch of %d generated in %.3f s (compiling included, if on)",
                plan.shard,
                batch_size,
                time.monotonic() - progress.started,
            )
        progress.advance(len(todo))
        faults.batch_generated(should_stop)
    return failures


def embed_and_pack(
    faces: FacePipeline,
    raw: RawImages,
    keys: list[str],
    checked: dict[int, FaceResult],
    failures: dict[int, str],
    faults: Faults,
) -> tuple[list[FaceResult], set[int]]:
    """The commit's pass over the shard, in plan order: detect the images reused from earlier
    runs (the others were in the background), embed every crop in recognizer batches (the
    same batches however the shard was resumed), and write the shard's archive aside: each raw
    image (unless not kept; its comment the image's key), then its crop in the configured
    format. Returns every image's result and the images with a crop."""
    plan, formats = raw.plan, raw.formats
    done = [i for i in range(len(plan)) if i not in failures]
    progress = Progress(f"shard {plan.shard} embed and pack", len(done))
    results = [
        checked.get(i) or FaceResult(Status.FAILED, failures.get(i, "")) for i in range(len(plan))
    ]
    for i in done:
        if i not in checked:
            results[i] = detect_stored(faces, raw, i, raw.read(i))
    cropped = {i for i in done if results[i].status is Status.OK}
    with image_archive(raw.shard_dir / IMAGE_ARCHIVE) as archive:
        for start in range(0, len(done), faces.batch_size):
            batch = done[start : start + faces.batch_size]
            crops = {
                i: (raw.shard_dir / loose_crop(plan, i)).read_bytes() for i in batch if i in cropped
            }
            for i, crop in crops.items():
                if formats.aligned == "jpeg":  # the recognizer sees the crop as stored
                    rgb = decode_image(crop, loose_crop(plan, i))[..., ::-1]
                    crops[i] = encode_image(rgb, "jpeg", formats.aligned_quality)
                results[i].aligned = decode_image(crops[i], _aligned(plan, i, formats))
            faces.embed_aligned([results[i] for i in batch])
            for i in batch:
                if formats.keeps_raw:
                    archive.add(raw.member(i), raw.read(i), comment=keys[i])
                if i in crops:
                    archive.add(_aligned(plan, i, formats), crops[i])
                    results[i].aligned = None
                faults.image_packed()
            progress.advance(len(batch))
        raw.archives.close()  # the archive this one replaces
    return results, cropped


def remove_loose_images(shard_dir: Path) -> None:
    """After the commit: the loose images are in the archive now."""
    for folder in LOOSE_FOLDERS:
        shutil.rmtree(shard_dir / folder, ignore_errors=True)


def _identify(plan: ShardPlan, i: int) -> dict:
    return {"identity": plan.image_identity[i], "image_index": plan.image_index[i]}


def _aligned(plan: ShardPlan, i: int, formats: ImageFormats) -> str:
    return aligned_path(plan.image_identity[i], plan.image_index[i], formats.aligned)


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
    cropped: set[int],
) -> pa.Table:
    rows: dict[str, list] = {column: [] for column in MANIFEST_COLUMNS}
    prototype = dict(zip(plan.identities, plan.prototypes, strict=True))
    for i, result in enumerate(results):
        identity, index = plan.image_identity[i], plan.image_index[i]
        embedding = result.embedding
        ok = result.status is Status.OK and embedding is not None
        generated = result.status is not Status.FAILED
        raw = raw_path(identity, index, formats.raw) if generated and formats.keeps_raw else ""
        aligned = _aligned(plan, i, formats) if i in cropped else ""
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
