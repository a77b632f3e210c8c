"""The dataset in the formats face-recognition training code reads.

- RecordIO (`train.rec`, `train.idx`, `property`): what insightface's arcface_torch, AdaFace and
  DALI's `readers.mxnet` read. Record 0 is a header whose label is (N + 1, N + 1 + C); images
  are records 1..N, each labelled with its class as a float; records N + 1..N + C give each
  class's image range (first, last + 1); `property` is `C,112,112`. Written here byte for byte
  as MXNet's `MXIndexedRecordIO` and `recordio.pack` do (dmlc-core's record format), so no MXNet
  is needed to write it.
- WebDataset tar shards (`<key>.jpg`, `<key>.cls`, `<key>.json`), shuffled with a seed so a shard
  holds many identities, and a `wids` index (`index.json`) for random access.
- ImageFolder: a folder per identity named `<label>_<identity>`, the label zero-padded, so that
  torchvision's sorted folder order is the label order.

Labels are 0..C-1 over the kept identities in manifest order, then, with a real-data mix-in
(export.mixin, digi2real/mixin.py), C..C+R-1 over its R real identities in their sample's
order: the same in every format and in each export's `labels.csv` (label, identity, images,
source), whose `source` says `synthetic` or `real` and whose identity is the name within that
source. A class is its label, never its name: a real identity named as a synthetic one stays
a class of its own (an ImageFolder's folder names start with the label).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import multiprocessing
import os
import struct
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from digi2real.errors import DataError
from digi2real.shard_store import IMAGE_SUFFIX, MemberSpan, member_spans, read_member

RECORD_MAGIC = 0xCED7230A  # dmlc-core's kMagic, at the head of every record part
IR_HEADER = struct.Struct("<IfQQ")  # MXNet's IRHeader: flag, label, id, id2
IMAGE_SIZE = 112
# labels.csv's `source` of a generated identity, and of a mixed-in real one (export.mixin).
SYNTHETIC, REAL = "synthetic", "real"


@dataclass(frozen=True)
class Sample:
    label: int
    identity: str
    image_index: int
    archive: Path  # the shard's image archive (the mix-in's faces.zip for a real face)
    crop: str  # the aligned 112x112 crop's member name in it
    span: MemberSpan  # where its bytes lie in the archive
    meta: dict  # what the WebDataset .json holds besides the label


@dataclass(frozen=True)
class Classes:
    """The export's classes: label k is identity `identities[k]` of source `sources[k]`."""

    identities: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.identities)


def export_samples(
    manifest: pa.Table, results: Path, mixin: Path | None = None
) -> tuple[Classes, list[Sample]]:
    """Every class and sample of an export: the synthetic ones of `manifest`, then the real
    ones of the mix-in folder `mixin` (sample_mixin's), labelled after them."""
    identities, samples = labelled_samples(manifest, results)
    classes = Classes(identities, [SYNTHETIC] * len(identities))
    if mixin is None:
        return classes, samples
    real, real_samples = mixin_samples(mixin, first_label=len(identities))
    return Classes(identities + real, classes.sources + [REAL] * len(real)), samples + real_samples


def build_export(
    rule: str,
    manifest: Path,
    results: Path,
    mixin: Path | None,
    out: Path,
    write: Callable[[Path, Classes, list[Sample]], None],
) -> None:
    """One export rule's work: the classes and samples of the aggregated `manifest` (paths
    under `results`) and of the mix-in `mixin`, written by `write` into a folder built aside
    and renamed to `out`; the counts logged."""
    import pyarrow.parquet as pq

    from digi2real.atomic import atomic_folder
    from digi2real.progress import log

    classes, samples = export_samples(pq.read_table(manifest), results, mixin)
    with atomic_folder(out) as staging:
        write(staging, classes, samples)
    log.info(
        "%s: %d images of %d identities (%d of them real)",
        rule, len(samples), len(classes), classes.sources.count(REAL),
    )  # fmt: skip


def mixin_samples(folder: Path, first_label: int) -> tuple[list[str], list[Sample]]:
    """The mix-in's identities in sample order (the one at position p has label first_label +
    p) and its faces, grouped by label."""
    from digi2real.mixin import FACES, read_faces

    faces = read_faces(folder)
    archive = folder / FACES
    spans = member_spans(archive, [face.member for face in faces])
    names: dict[int, str] = {}
    samples = []
    for face in faces:
        names[face.position] = face.identity
        label = first_label + face.position
        samples.append(
            Sample(
                label=label,
                identity=face.identity,
                image_index=face.image,
                archive=archive,
                crop=face.member,
                span=spans[face.member],
                meta={
                    "identity": face.identity,
                    "image_index": face.image,
                    "label": label,
                    "source": REAL,
                },
            )
        )
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{folder}: the mix-in's positions are not 0..{len(names) - 1}")
    samples.sort(key=lambda sample: sample.label)
    return [names[p] for p in range(len(names))], samples


def labelled_samples(manifest: pa.Table, results: Path) -> tuple[list[str], list[Sample]]:
    """The kept identities in manifest order (identity `k` has label `k`) and every passed
    image, grouped by label in manifest order."""
    columns = ["identity", "image_index", "archive", "aligned_path", "seed", "t", "det_score"]
    passed = manifest.filter(manifest.column("passed")).select([*columns, "cos_prototype"])
    rows = passed.to_pydict()  # column lists: 400,000 row dicts would be 10 times the memory
    identities = list(dict.fromkeys(rows["identity"]))
    label = {identity: k for k, identity in enumerate(identities)}
    # Each archive's directory is read once, here; the workers that encode the crops read them
    # by span, in whatever order their export needs (WebDataset's is shuffled across shards).
    crops_by_archive: dict[str, list[str]] = {}
    for archive, aligned in zip(rows["archive"], rows["aligned_path"], strict=True):
        crops_by_archive.setdefault(archive, []).append(aligned)
    spans = {
        archive: member_spans(results / archive, crops)
        for archive, crops in crops_by_archive.items()
    }
    samples = [
        Sample(
            label=label[identity],
            identity=identity,
            image_index=int(index),
            archive=results / archive,
            crop=aligned,
            span=spans[archive][aligned],
            meta={
                "identity": identity,
                "image_index": int(index),
                "label": label[identity],
                "seed": int(seed),
                "t": float(t),
                "det_score": float(det),
                "cos_prototype": float(cos),
                "source": SYNTHETIC,
            },
        )
        for identity, index, archive, aligned, seed, t, det, cos in zip(
            *(rows[c] for c in [*columns, "cos_prototype"]), strict=True
        )
    ]
    samples.sort(key=lambda sample: sample.label)  # stable: manifest order within a label
    return identities, samples


def labels_csv(classes: Classes, counts: list[int]) -> str:
    """label, identity, images, source: one row per label, with its image count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "identity", "images", "source"])
    for label, (identity, source) in enumerate(
        zip(classes.identities, classes.sources, strict=True)
    ):
        writer.writerow([label, identity, int(counts[label]), source])
    return buffer.getvalue()


def image_counts(classes: Classes, samples: list[Sample]) -> list[int]:
    return np.bincount([s.label for s in samples], minlength=len(classes)).tolist()


def crop_bytes(sample: Sample) -> bytes:
    """The sample's crop as stored in its shard's archive."""
    return read_member(sample.archive, sample.crop, sample.span)


def jpeg_bytes(sample: Sample, quality: int) -> bytes:
    """The crop as JPEG: a crop stored as JPEG as it is (a second encoding would only lose
    more), a PNG one encoded at `quality`."""
    data = crop_bytes(sample)
    if sample.crop.endswith(IMAGE_SUFFIX["jpeg"]):
        return data
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _jpeg_of(job: tuple[Sample, int]) -> bytes:
    return jpeg_bytes(*job)


def jpegs(samples: list[Sample], quality: int) -> Iterator[bytes]:
    """Each sample's crop as JPEG, in order. Decoding and encoding 400,000 crops is minutes of
    one core, so a large export spreads them over the cores this job was given."""
    jobs = [(sample, quality) for sample in samples]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if len(jobs) < 2000 or (cores or 1) < 2:
        yield from map(_jpeg_of, jobs)
        return
    with multiprocessing.Pool(cores) as pool:
        yield from pool.imap(_jpeg_of, jobs, chunksize=256)


# --- RecordIO --------------------------------------------------------------------------------


def record_bytes(data: bytes) -> bytes:
    """One record in dmlc-core's format: [magic, (cflag << 29) | length, data, zero padding to
    4 bytes]. Where the data holds the magic word at a 4-byte-aligned offset, the record is cut
    there into parts (cflag 1 first, 2 middle, 3 last) and that word dropped; readers put it
    back (dmlc-core's RecordIOWriter::WriteRecord)."""
    magic = struct.pack("<I", RECORD_MAGIC)
    out, start = bytearray(), 0
    # bytes.find, not a step through every aligned word: that was 160 us a crop in Python, a
    # minute of the RecordIO export's 400,000 (the parent's, while the encoders wait on it).
    offset = data.find(magic)
    while offset != -1:
        if offset % 4 == 0:
            out += magic + struct.pack("<I", (1 if start == 0 else 2) << 29 | (offset - start))
            out += data[start:offset]
            start = offset + 4
        offset = data.find(magic, offset + 1)
    out += magic + struct.pack("<I", (3 if start else 0) << 29 | (len(data) - start))
    out += data[start:]
    out += b"\0" * (-len(data) % 4)
    return bytes(out)


def pack(label: float | list[float], payload: bytes = b"", record_id: int = 0) -> bytes:
    """MXNet's recordio.pack: a scalar label in the header, or a float32 label vector after it
    with the header's flag its length."""
    if isinstance(label, list):
        vector = np.asarray(label, np.float32)
        return IR_HEADER.pack(len(vector), 0.0, record_id, 0) + vector.tobytes() + payload
    return IR_HEADER.pack(0, float(label), record_id, 0) + payload


def write_recordio(folder: Path, classes: Classes, samples: list[Sample], quality: int):
    """train.rec, train.idx (`key<TAB>offset` per record, in writing order), property and
    labels.csv into `folder`, which must be new and empty (the caller renames it into place)."""
    labels = [sample.label for sample in samples]
    write_labelled_recordio(folder, classes, zip(labels, jpegs(samples, quality), strict=True))


def write_labelled_recordio(
    folder: Path, labelled: Classes, images: Iterable[tuple[int, bytes]]
) -> None:
    """The RecordIO export of `images`, (label, JPEG) pairs grouped by label in label order,
    into the new folder `folder`."""
    classes, counts = len(labelled), [0] * len(labelled)
    with open(folder / "train.rec", "wb") as rec, open(folder / "train.idx", "w") as idx:

        def write(key: int, data: bytes) -> None:
            idx.write(f"{key}\t{rec.tell()}\n")
            rec.write(record_bytes(data))

        n = 0
        for n, (label, jpeg) in enumerate(images, start=1):
            counts[label] += 1
            write(n, pack(float(label), jpeg, n))
        # Each class's range (first, last + 1) from the counts: a class without an image (a
        # baseline identity whose sources were all unreadable) gets an empty one in its place.
        bounds = np.concatenate([[1], 1 + np.cumsum(counts)]).tolist()
        for label in range(classes):
            write(n + 1 + label, pack([float(bounds[label]), float(bounds[label + 1])]))
        write(0, pack([float(n + 1), float(n + 1 + classes)]))  # last, as insightface's tool
    (folder / "property").write_text(f"{classes},{IMAGE_SIZE},{IMAGE_SIZE}\n")
    (folder / "labels.csv").write_text(labels_csv(labelled, counts))


# --- WebDataset --------------------------------------------------------------------------------


def write_webdataset(
    folder: Path,
    classes: Classes,
    samples: list[Sample],
    quality: int,
    per_shard: int,
    seed: int,
) -> None:
    """shard-NNNNNN.tar of `per_shard` samples each, in an order shuffled with `seed`; the wids
    index `index.json` and labels.csv, into the new folder `folder`."""
    order = np.random.default_rng(seed).permutation(len(samples))
    shuffled = [samples[position] for position in order]
    chunks = [shuffled[start : start + per_shard] for start in range(0, len(shuffled), per_shard)]
    # Each tar's crops are read in archive order and written shuffled: read in the shuffled
    # order, nearly every crop would be in another shard's archive than the last one. One
    # stream of encodings for all the tars, so that the encoders go on with the next tar's
    # while this one is written.
    by_archive = [
        sorted(range(len(chunk)), key=lambda k, chunk=chunk: (chunk[k].archive, chunk[k].crop))
        for chunk in chunks
    ]
    reading = [chunk[k] for chunk, ks in zip(chunks, by_archive, strict=True) for k in ks]
    stream = jpegs(reading, quality)
    shards = []
    for number, (chunk, ks) in enumerate(zip(chunks, by_archive, strict=True)):
        name = f"shard-{number:06d}.tar"
        encoded: list[bytes] = [b""] * len(chunk)
        for k, jpeg in zip(ks, itertools.islice(stream, len(chunk)), strict=True):
            encoded[k] = jpeg
        with tarfile.open(folder / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for sample, jpeg in zip(chunk, encoded, strict=True):
                key = f"{sample.label:07d}_{sample.image_index:05d}"
                for suffix, data in (
                    ("jpg", jpeg),
                    ("cls", f"{sample.label}".encode()),
                    ("json", json.dumps(sample.meta, sort_keys=True).encode()),
                ):
                    member = tarfile.TarInfo(f"{key}.{suffix}")
                    member.size, member.mode, member.mtime = len(data), 0o644, 0
                    tar.addfile(member, io.BytesIO(data))
        shards.append({"url": name, "nsamples": len(chunk)})
    index = {"wids_version": 1, "name": "digi2real", "shardlist": shards}
    (folder / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / "labels.csv").write_text(labels_csv(classes, image_counts(classes, samples)))


# --- ImageFolder ---------------------------------------------------------------------------------


def imagefolder_name(label: int, identity: str, classes: int) -> str:
    """`<label>_<identity>`, the label zero-padded to the width of the largest: sorted names
    (torchvision's class order) are label order, whatever the identities are called."""
    return f"{label:0{len(str(max(classes - 1, 0)))}d}_{identity}"


def write_imagefolder(folder: Path, classes: Classes, samples: list[Sample]) -> None:
    """A folder per identity holding its crops, as stored, and labels.csv, into the new folder
    `folder`."""
    for label, identity in enumerate(classes.identities):
        (folder / imagefolder_name(label, identity, len(classes))).mkdir()
    for sample in samples:
        target = folder / imagefolder_name(sample.label, sample.identity, len(classes))
        (target / f"{sample.image_index}{Path(sample.crop).suffix}").write_bytes(crop_bytes(sample))
    (folder / "labels.csv").write_text(labels_csv(classes, image_counts(classes, samples)))
