"""A generation shard on disk: where its images, records, manifest and embeddings lie, and
how each is written and read back. docs/file-contracts.md documents each file.

`shards/<n>/` while its job runs:
    raw/<identity>/<k>.<png|jpg>   each generated image, loose (written aside, flushed, renamed)
    aligned/<identity>/<k>.png     its face crop, loose
    records.jsonl                  the journal: one line per image written, with its key
Once the shard commits (digi2real.shard_generation), in this order:
    images.zip                     every raw image (its key as the member's comment) and crop
    embeddings.h5                  the embedding and landmarks of each image with a face
    manifest.csv, manifest.parquet one row per planned image; the Parquet file last, the
                                   shard's commit record: Snakemake's output of the job
and the loose images are removed. A kill at any moment leaves either the loose images with
their records, or the archive: a rerun reuses every image whose key still matches.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from PIL import Image

from digi2real.atomic import atomic_path
from digi2real.errors import DataError, Digi2RealError
from digi2real.faces import FaceResult, UnreadableImage, decode_image
from digi2real.formats import STRING, ShardPlan, open_h5, read_strings
from digi2real.planning import image_seed
from digi2real.progress import log
from digi2real.status import Status

LOOSE_FOLDERS = ("raw", "aligned")  # a running shard's loose images, gone once it commits


# --- image formats and names --------------------------------------------------------------

IMAGE_ARCHIVE = "images.zip"  # a committed shard's images, beside its manifest
IMAGE_SUFFIX = {"png": ".png", "jpeg": ".jpg"}
# Fixed member dates and modes: a shard's archive is a function of its images alone, so a
# resumed shard's archive is bitwise the uninterrupted one's.
_MEMBER_DATE = (1980, 1, 1, 0, 0, 0)
_MEMBER_MODE = 0o644 << 16


@dataclass(frozen=True)
class ImageFormats:
    """How a shard stores its images (`images:` of a resolved config): the raw generated image
    as JPEG, PNG or not at all, the aligned crop as PNG or JPEG."""

    raw: str  # jpeg | png | none
    raw_quality: int
    aligned: str  # png | jpeg
    aligned_quality: int

    @classmethod
    def from_config(cls, config: dict) -> ImageFormats:
        images = config["images"]
        return cls(
            raw=images["raw_format"],
            raw_quality=int(images["raw_jpeg_quality"]),
            aligned=images["aligned_format"],
            aligned_quality=int(images["aligned_jpeg_quality"]),
        )

    @property
    def keeps_raw(self) -> bool:
        return self.raw != "none"

    @property
    def loose_raw(self) -> str:
        """The format of a raw image while its shard runs: lossless when it will not be kept,
        so the check sees the generated pixels."""
        return self.raw if self.keeps_raw else "png"

    def raw_key(self) -> dict:
        """What of the raw format the stored bytes, and so the check, depend on."""
        return {"format": self.raw, "quality": self.raw_quality if self.raw == "jpeg" else None}


def raw_path(identity: str, image_index: int, image_format: str) -> str:
    return f"raw/{identity}/{image_index}{IMAGE_SUFFIX[image_format]}"


def aligned_path(identity: str, image_index: int, image_format: str) -> str:
    return f"aligned/{identity}/{image_index}{IMAGE_SUFFIX[image_format]}"


def aligned_member(plan: ShardPlan, i: int, formats: ImageFormats) -> str:
    """Planned image `i`'s crop in the committed archive, in the configured format."""
    return aligned_path(plan.image_identity[i], plan.image_index[i], formats.aligned)


def encode_image(rgb: np.ndarray, image_format: str, quality: int) -> bytes:
    """An RGB uint8 array as PNG or JPEG bytes (libjpeg's defaults besides the quality: the
    same pixels give the same bytes)."""
    buffer = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    else:
        Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def save_image(data: bytes, path: Path) -> None:
    """Write encoded image bytes under a temporary name, then rename them into place."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


# --- the image archive ----------------------------------------------------------------------


class ImageArchiveWriter:
    """Adds members to a shard's image archive (see `image_archive`)."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self._archive = archive

    def add(self, name: str, data: bytes, comment: str = "") -> None:
        info = zipfile.ZipInfo(name, date_time=_MEMBER_DATE)
        info.external_attr = _MEMBER_MODE
        info.comment = comment.encode()
        self._archive.writestr(info, data)


@contextlib.contextmanager
def image_archive(path: Path) -> Iterator[ImageArchiveWriter]:
    """A shard's image archive, written under a temporary name and renamed into place if the
    block succeeds: a zip with every member stored (the images are compressed already), fixed
    dates and modes, a member's comment its image key where it has one."""
    with (
        atomic_path(path) as temporary,
        zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
    ):
        yield ImageArchiveWriter(archive)


@dataclass(frozen=True)
class MemberSpan:
    """Where a stored member's bytes lie in its archive, and their CRC-32. Reading by span
    needs no ZipFile: opening one parses the whole central directory (10.6 ms for a shard's
    4,000 members, measured), which export workers would otherwise pay for every few crops."""

    offset: int
    size: int
    crc: int


_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # zip's local file header, before the name
_LOCAL_SIGNATURE = b"PK\x03\x04"


def _read_directory(archive: Path) -> dict[str, zipfile.ZipInfo]:
    try:
        with zipfile.ZipFile(archive) as opened:
            return {info.filename: info for info in opened.infolist()}
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{archive}: cannot read the shard's image archive: {error}") from None


def _member_span(
    archive: Path, directory: dict[str, zipfile.ZipInfo], member: str, file: BinaryIO
) -> MemberSpan:
    """The member's span, from its local header (whose extra field may differ from the
    directory's), read from `file`, the archive open."""
    info = directory.get(member)
    if info is None:
        raise DataError(f"{archive}: has no member {member}")
    if info.compress_type != zipfile.ZIP_STORED:
        raise DataError(f"{archive}: {member} is compressed; shard archives store")
    file.seek(info.header_offset)
    try:
        header = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
    except struct.error as error:
        raise DataError(f"{archive}: cannot read the shard's image archive: {error}") from None
    if header[0] != _LOCAL_SIGNATURE:
        raise DataError(f"{archive}: {member} has no local header where it should")
    name_length, extra_length = header[-2:]
    offset = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    return MemberSpan(offset, info.file_size, info.CRC)


def member_spans(archive: Path, members: list[str]) -> dict[str, MemberSpan]:
    """The span of each named member of `archive`, from one read of its directory and of each
    member's local header."""
    directory = _read_directory(archive)
    try:
        with open(archive, "rb") as file:
            return {member: _member_span(archive, directory, member, file) for member in members}
    except OSError as error:
        raise DataError(f"{archive}: cannot read the shard's image archive: {error}") from None


def read_member(archive: Path, member: str, span: MemberSpan) -> bytes:
    """The member's bytes by their span (see `member_spans`), checked against its CRC-32."""
    try:
        with open(archive, "rb") as file:
            file.seek(span.offset)
            data = file.read(span.size)
    except OSError as error:
        raise DataError(f"{archive}: cannot read {member}: {error}") from None
    if len(data) != span.size or zlib.crc32(data) != span.crc:
        raise DataError(f"{archive}: {member} fails its CRC check (the archive changed)")
    return data


class ImageArchives:
    """Members of shard archives read by (archive, member name): each member's bytes by their
    span, checked against its CRC-32, the directories of the last few archives kept (the
    exports and the report read thousands of images in shard order). The one reader of shard
    archives: `member_spans` hands the same spans to export workers."""

    def __init__(self, keep: int = 4) -> None:
        self._keep = keep
        self._directories: dict[Path, dict[str, zipfile.ZipInfo]] = {}

    def directory(self, archive: Path) -> dict[str, zipfile.ZipInfo]:
        """The archive's members by name, read once while it stays among the last few."""
        if archive not in self._directories:
            if len(self._directories) >= self._keep:
                self._directories.pop(next(iter(self._directories)))
            self._directories[archive] = _read_directory(archive)
        return self._directories[archive]

    def comments(self, archive: Path) -> dict[str, str]:
        """Each member's comment (a raw image's key) by name; empty when there is no archive."""
        if not archive.is_file():
            return {}
        return {name: info.comment.decode() for name, info in self.directory(archive).items()}

    def read(self, archive: Path, member: str) -> bytes:
        directory = self.directory(archive)
        try:
            with open(archive, "rb") as file:
                span = _member_span(archive, directory, member, file)
        except OSError as error:
            raise DataError(f"{archive}: cannot read {member}: {error}") from None
        return read_member(archive, member, span)

    def close(self) -> None:
        """Forget the directories read: the archive this one replaces, say."""
        self._directories.clear()


@dataclass(frozen=True)
class ArchivedImage:
    """An image in a shard's archive: the archive's path and the member's name."""

    archive: Path
    member: str

    def __str__(self) -> str:
        return f"{self.archive}:{self.member}"

    def open(self) -> Image.Image:
        """The image, decoded lazily as PIL does; DataError if the archive or member is not
        there."""
        data = ImageArchives(keep=1).read(self.archive, self.member)
        return Image.open(io.BytesIO(data))


# --- the records journal --------------------------------------------------------------------

RECORDS = "records.jsonl"


def append_record(shard_dir: Path, record: dict) -> None:
    """One line for an image whose file was just renamed into place, flushed to disk: the
    record, not the file, is what a rerun keys on. A kill before this line leaves a file with
    no record, which the rerun makes again."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    with open(shard_dir / RECORDS, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record, sort_keys=True) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def read_records(shard_dir: Path) -> dict[tuple[str, int], dict]:
    """The last record of each image (identity, image_index) in a shard's journal; a line cut
    short by a kill is ignored."""
    records: dict[tuple[str, int], dict] = {}
    path = shard_dir / RECORDS
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            records[(record["identity"], int(record["image_index"]))] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return records


def record_ids(plan: ShardPlan, i: int) -> dict:
    """The fields that name planned image `i` in its record."""
    return {"identity": plan.image_identity[i], "image_index": plan.image_index[i]}


# --- finding the stored images of a running shard ------------------------------------------


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
            append_record(shard_dir, {**record_ids(plan, i), "image_key": "", "raw_path": ""})
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


def adopt_donated(found: RawImages, keys: list[str], donors: list[Path]) -> int:
    """Each image still missing whose key a donor shard's archive holds (the same shard of the
    run, or of a sweep's other generation folder), copied into this shard as a loose image
    with its record, as if generated here: the same key is the same pixels. Returns how many.
    A donor's archive is replaced whole by its commit, so it reads as one commit left it;
    a member that does not read back is generated instead."""
    missing = {keys[i]: i for i in found.missing()}
    if not found.formats.keeps_raw or not missing:
        return 0
    adopted = 0
    for donor in donors:
        archive = donor / IMAGE_ARCHIVE
        if not missing or archive.resolve() == (found.shard_dir / IMAGE_ARCHIVE).resolve():
            continue
        try:
            comments = found.archives.comments(archive)
        except (OSError, Digi2RealError):
            continue
        for member, key in comments.items():
            i = missing.get(key)
            if i is None:
                continue
            try:
                data = found.archives.read(archive, member)
                decode_image(data, member)
            except (OSError, Digi2RealError, UnreadableImage):
                continue
            save_image(data, found.shard_dir / found.loose_name(i))
            append_record(
                found.shard_dir,
                {**record_ids(found.plan, i), "image_key": key, "raw_path": found.loose_name(i)},
            )
            found.loose.add(i)
            del missing[key]
            adopted += 1
    log.info(
        "shard %d: %d images copied from other shards that made them with the same key, %d "
        "to generate",
        found.plan.shard,
        adopted,
        len(missing),
    )
    return adopted


def loose_crop(plan: ShardPlan, i: int) -> str:
    """A crop while its shard runs: lossless, the recognizer embeds it at the commit."""
    return aligned_path(plan.image_identity[i], plan.image_index[i], "png")


def remove_loose_images(shard_dir: Path) -> None:
    """After the commit: the loose images are in the archive now."""
    for folder in LOOSE_FOLDERS:
        shutil.rmtree(shard_dir / folder, ignore_errors=True)


# --- the commit: manifest and embeddings ----------------------------------------------------

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
        ("archive", pa.string()),
        ("raw_path", pa.string()),
        ("aligned_path", pa.string()),
        ("det_score", pa.float32()),
        ("cos_prototype", pa.float32()),
        ("cos_condition", pa.float32()),
        ("image_key", pa.string()),
    ]
)
MANIFEST_COLUMNS = tuple(MANIFEST_SCHEMA.names)


def manifest_table(
    plan: ShardPlan,
    checks: list[FaceResult],
    keys: list[str],
    images_per_identity: int,
    formats: ImageFormats,
    cropped: set[int],
) -> pa.Table:
    rows: dict[str, list] = {column: [] for column in MANIFEST_COLUMNS}
    prototype = dict(zip(plan.identities, plan.prototypes, strict=True))
    for i, result in enumerate(checks):
        identity, index = plan.image_identity[i], plan.image_index[i]
        embedding = result.embedding
        ok = result.status is Status.OK and embedding is not None
        generated = result.status is not Status.FAILED
        raw = raw_path(identity, index, formats.raw) if generated and formats.keeps_raw else ""
        aligned = aligned_member(plan, i, formats) if i in cropped else ""
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


def write_manifest(table: pa.Table, manifest: Path) -> None:
    """The CSV copy first, the Parquet commit record last, each renamed into place."""
    with atomic_path(manifest.with_suffix(".csv")) as temporary:
        pacsv.write_csv(table, temporary)
    with atomic_path(manifest) as temporary:
        pq.write_table(table, temporary)


def read_shard_manifests(manifests: list[Path], results_dir: Path) -> pa.Table:
    tables = []
    for manifest in manifests:
        try:
            table = pq.read_table(manifest)
        except (OSError, pa.ArrowInvalid) as error:
            raise DataError(f"{manifest}: cannot read shard manifest: {error}") from None
        missing = set(MANIFEST_COLUMNS) - set(table.column_names)
        if missing:
            raise DataError(f"{manifest}: not a shard manifest, lacks {sorted(missing)}")
        prefix = str(manifest.parent.relative_to(results_dir)) + "/"
        values = table.column("archive")
        relative = pc.if_else(
            pc.equal(values, ""), "", pc.binary_join_element_wise(prefix, values, "")
        )
        table = table.set_column(table.schema.get_field_index("archive"), "archive", relative)
        tables.append(table.select(list(MANIFEST_COLUMNS)))
    if not tables:
        raise DataError("no shard manifests to aggregate")
    return pa.concat_tables(tables)


EMBEDDINGS = "embeddings.h5"  # a shard's, beside its manifest


@dataclass
class GeneratedEmbeddings:
    """The ArcFace embedding and five landmarks of every generated image with a face."""

    identity: list[str]
    image_index: np.ndarray  # (N,) int32
    embedding: np.ndarray  # (N, 512) float32, unit norm
    landmarks: np.ndarray  # (N, 5, 2) float32, pixels of the generated image; NaN if prealigned
    passed: np.ndarray | None = None  # (N,) bool: in the dataset; aggregated file only

    def __len__(self) -> int:
        return len(self.identity)


def write_generated_embeddings(path: Path, table: GeneratedEmbeddings) -> None:
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("identity", data=table.identity, dtype=STRING)
        file.create_dataset("image_index", data=np.asarray(table.image_index, np.int32))
        file.create_dataset("embedding", data=table.embedding.astype(np.float32).reshape(-1, 512))
        file.create_dataset("landmarks", data=table.landmarks.astype(np.float32).reshape(-1, 5, 2))
        if table.passed is not None:
            file.create_dataset("passed", data=np.asarray(table.passed, bool))


def read_generated_embeddings(path: Path) -> GeneratedEmbeddings:
    with open_h5(path, "a generated-embeddings file") as file:
        missing = {"identity", "image_index", "embedding", "landmarks"} - set(file)
        if missing:
            raise DataError(f"{path}: not a generated-embeddings file, lacks {sorted(missing)}")
        return GeneratedEmbeddings(
            identity=read_strings(file["identity"]),
            image_index=file["image_index"][()],
            embedding=file["embedding"][()],
            landmarks=file["landmarks"][()],
            passed=file["passed"][()] if "passed" in file else None,
        )


def checked_embeddings(plan: ShardPlan, checks: list[FaceResult]) -> GeneratedEmbeddings:
    """The embedding and landmarks of every image of the shard whose check found a face."""
    rows = [i for i, result in enumerate(checks) if result.embedding is not None]
    no_landmarks = np.full((5, 2), np.nan, np.float32)
    return GeneratedEmbeddings(
        identity=[plan.image_identity[i] for i in rows],
        image_index=np.asarray([plan.image_index[i] for i in rows], np.int32),
        embedding=np.asarray([checks[i].embedding for i in rows], np.float32).reshape(-1, 512),
        landmarks=np.asarray(
            [
                checks[i].landmarks if checks[i].landmarks is not None else no_landmarks
                for i in rows
            ],
            np.float32,
        ).reshape(-1, 5, 2),
    )
