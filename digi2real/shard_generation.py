"""Generating one shard: its planned images made in fixed batches, each stored and checked
in the background as the next batch is made, then the commit. Where each file lies and how
it is written and read back is digi2real.shard_store.

While a shard runs, each generated image is written loose and recorded in the shard's journal
with its key; its commit packs the images into one archive, then writes the embeddings and
the manifest, then removes the loose files. A rerun reuses every image whose key still
matches, loose (by its record) or in the archive (by the member's comment), and since every
image's latents come from its own seed and its batch is fixed by the plan, it ends with the
same images as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time

import numpy as np

from digi2real.errors import Digi2RealError
from digi2real.faces import FacePipeline, FaceResult, UnreadableImage, decode_image
from digi2real.generation import (
    GENERATION_CODE_VERSION,
    PIXEL_MODELS,
    Arc2FaceGenerator,
    GenerationSettings,
    to_uint8,
)
from digi2real.progress import Progress, log
from digi2real.shard_store import (
    IMAGE_ARCHIVE,
    ImageFormats,
    RawImages,
    aligned_member,
    append_record,
    encode_image,
    image_archive,
    loose_crop,
    record_ids,
    save_image,
)
from digi2real.status import Status
from digi2real.testing import Faults


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


def detect_stored(faces: FacePipeline, stored: RawImages, i: int, data: bytes) -> FaceResult:
    """Detect and align the face of image `i` on its bytes as stored, writing its crop loose;
    the result keeps no pixels (the commit reads the crop back)."""
    name = f"{stored.shard_dir.name}/{stored.loose_name(i)}"
    try:
        image = decode_image(data, name)
    except UnreadableImage as error:
        return FaceResult(Status.UNREADABLE, str(error))
    result = faces.align(image)
    if result.aligned is not None:
        crop = encode_image(result.aligned[..., ::-1], "png", 0)
        save_image(crop, stored.shard_dir / loose_crop(stored.plan, i))
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
        stored: RawImages,
        keys: list[str],
        faults: Faults,
        depth: int = 2,
    ) -> None:
        self.faces, self.stored, self.keys, self.faults = faces, stored, keys, faults
        self.checks: dict[int, FaceResult] = {}  # by planned image
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
                    f"shard {self.stored.plan.shard}: the thread storing and checking the images "
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
                failed_at = self.stored.loose_name(batch[0]) if batch else ""
                for i, image in zip(batch, images, strict=True):
                    failed_at = self.stored.loose_name(i)
                    self.checks[i] = self._store(i, image)
            except BaseException as error:  # handed to the main thread
                self._error, self._failed = error, failed_at

    def _store(self, i: int, image: np.ndarray) -> FaceResult:
        stored, plan = self.stored, self.stored.plan
        data = encode_image(image, stored.formats.loose_raw, stored.formats.raw_quality)
        save_image(data, stored.shard_dir / stored.loose_name(i))
        record = {
            **record_ids(plan, i),
            "image_key": self.keys[i],
            "raw_path": stored.loose_name(i),
        }
        append_record(stored.shard_dir, record)
        stored.loose.add(i)
        self.faults.image_written()
        return detect_stored(self.faces, stored, i, data)

    def _raise_error(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, Digi2RealError):  # already one line naming what failed
            raise self._error
        where = self.stored.shard_dir / self._failed
        raise RuntimeError(
            f"shard {self.stored.plan.shard}: storing or checking generated images failed at "
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
                "shard %d: the background store also failed: %r",
                self.stored.plan.shard,
                self._error,
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
    stored: RawImages,
    store: BackgroundStore,
    should_stop,
    faults: Faults,
) -> dict[int, str]:
    """Generate the planned images no raw bytes were found for, handing each batch to the
    background store; the messages of those that failed. A batch is generated whole (its
    plan_batches companions too, stored already or not) when any of its images is missing."""
    plan, missing = stored.plan, set(stored.missing())
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
    stored: RawImages,
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
    plan, formats = stored.plan, stored.formats
    generated = [i for i in range(len(plan)) if i not in failures]  # stored bytes
    progress = Progress(f"shard {plan.shard} embed and pack", len(generated))
    checks = [
        checked.get(i) or FaceResult(Status.FAILED, failures.get(i, "")) for i in range(len(plan))
    ]
    for i in generated:
        if i not in checked:
            checks[i] = detect_stored(faces, stored, i, stored.read(i))
    cropped = {i for i in generated if checks[i].status is Status.OK}
    with image_archive(stored.shard_dir / IMAGE_ARCHIVE) as archive:
        for start in range(0, len(generated), faces.batch_size):
            batch = generated[start : start + faces.batch_size]
            crops = {
                i: (stored.shard_dir / loose_crop(plan, i)).read_bytes()
                for i in batch
                if i in cropped
            }
            for i, crop in crops.items():
                if formats.aligned == "jpeg":  # the recognizer sees the crop as stored
                    rgb = decode_image(crop, loose_crop(plan, i))[..., ::-1]
                    crops[i] = encode_image(rgb, "jpeg", formats.aligned_quality)
                checks[i].aligned = decode_image(crops[i], aligned_member(plan, i, formats))
            faces.embed_aligned([checks[i] for i in batch])
            for i in batch:
                if formats.keeps_raw:
                    archive.add(stored.member(i), stored.read(i), comment=keys[i])
                if i in crops:
                    archive.add(aligned_member(plan, i, formats), crops[i])
                    checks[i].aligned = None
                faults.image_packed()
            progress.advance(len(batch))
        stored.archives.close()  # the archive this one replaces
    return checks, cropped
