"""Every file the stages hand to each other: its reader and its writer, in the order of
docs/file-contracts.md, which documents each contract. Every file is written under a temporary
name and renamed, so that no reader ever sees half a file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from PIL import Image

from digi2real.atomic import atomic_path
from digi2real.errors import DataError

STRING = h5py.string_dtype()


def open_h5(path: str | Path, what: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, FileNotFoundError) as error:
        raise DataError(f"{path}: cannot open {what}: {error}") from None


def read_strings(dataset) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in dataset[()]]


# --- index --------------------------------------------------------------------------------


@dataclass
class Index:
    group: list[int]
    identity: list[str]
    path: list[str]
    root: str

    def __len__(self) -> int:
        return len(self.path)

    def rows_of_shard(self, shard: int, shard_size: int) -> list[int]:
        low, high = shard * shard_size, (shard + 1) * shard_size
        return [row for row, group in enumerate(self.group) if low <= group < high]


def write_index(path: str | Path, index: Index) -> None:
    table = pa.table(
        {
            "group": pa.array(index.group, pa.int64()),
            "identity": pa.array(index.identity, pa.string()),
            "path": pa.array(index.path, pa.string()),
        },
        metadata={"root": index.root},
    )
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def read_index(path: str | Path) -> Index:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise DataError(f"{path}: cannot read index: {error}") from None
    metadata = table.schema.metadata or {}
    return Index(
        group=table.column("group").to_pylist(),
        identity=table.column("identity").to_pylist(),
        path=table.column("path").to_pylist(),
        root=metadata.get(b"root", b"").decode(),
    )


# --- embeddings ----------------------------------------------------------------------------


@dataclass
class EmbeddingTable:
    embedding: np.ndarray  # (N, 512) float32; unit norm where status == 0, zeros elsewhere
    status: np.ndarray  # (N,) int8, see digi2real.status
    identity: list[str]  # subject id; empty for FFHQ
    path: list[str]  # relative to the dataset root
    det_score: np.ndarray  # (N,) float32, NaN when not detected
    message: list[str]
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.status)


def write_embeddings(path: str | Path, table: EmbeddingTable) -> None:
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("embedding", data=table.embedding.astype(np.float32).reshape(-1, 512))
        file.create_dataset("status", data=table.status.astype(np.int8))
        file.create_dataset("identity", data=table.identity, dtype=STRING)
        file.create_dataset("path", data=table.path, dtype=STRING)
        file.create_dataset("det_score", data=table.det_score.astype(np.float32))
        file.create_dataset("message", data=table.message, dtype=STRING)
        file.attrs.update(table.attrs)


def read_embeddings(path: str | Path, embeddings: bool = True) -> EmbeddingTable:
    """An embeddings file; without its `embedding` matrix (an empty (0, 512) array) when
    `embeddings` is false: what a count of its images by status needs, without reading a
    500,000-row matrix."""
    with open_h5(path, "an embeddings file") as file:
        missing = {"embedding", "status", "identity", "path", "det_score"} - set(file)
        if missing:
            raise DataError(f"{path}: not an embeddings file, lacks {sorted(missing)}")
        return EmbeddingTable(
            embedding=file["embedding"][()] if embeddings else np.zeros((0, 512), np.float32),
            status=file["status"][()],
            identity=read_strings(file["identity"]),
            path=read_strings(file["path"]),
            det_score=file["det_score"][()],
            message=read_strings(file["message"])
            if "message" in file
            else [""] * len(file["status"]),
            attrs=dict(file.attrs),
        )


def read_real_faces(paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    """The `ok` embeddings of real-face files (FFHQ, the gallery) and a label for each,
    `<dataset>:<path>`, e.g. `ffhq:00000/00023.png`."""
    embeddings, labels = [np.zeros((0, 512), np.float32)], []
    for path in paths:
        table = read_embeddings(path)
        ok = table.status == 0
        dataset = str(table.attrs.get("dataset", Path(path).stem))
        embeddings.append(table.embedding[ok].astype(np.float32))
        labels += [f"{dataset}:{p}" for p, keep in zip(table.path, ok, strict=True) if keep]
    return np.concatenate(embeddings), labels


def iter_ok_embeddings(path: str | Path, chunk_size: int) -> Iterator[np.ndarray]:
    """The OK rows of an embeddings file, `chunk_size` at a time, never all in memory."""
    with open_h5(path, "an embeddings file") as file:
        total = len(file["status"])
        for start in range(0, total, chunk_size):
            ok = file["status"][start : start + chunk_size] == 0
            if ok.any():
                yield file["embedding"][start : start + chunk_size][ok]


def iter_embedding_chunks(path: str | Path, chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Every row's embedding, `chunk_size` rows at a time with the first row's position: a
    DigiFace selection of 20,000 identities is 1.4 million rows, 2.9 GB."""
    with open_h5(path, "an embeddings file") as file:
        for start in range(0, len(file["status"]), chunk_size):
            yield start, file["embedding"][start : start + chunk_size]


# --- delta --------------------------------------------------------------------------------


@dataclass
class Delta:
    delta: np.ndarray  # (77, hidden) float32; pooled mode repeats one vector on every token
    mean_real: np.ndarray
    mean_synthetic: np.ndarray
    n_real: int
    n_synthetic: int
    mode: str
    attrs: dict = field(default_factory=dict)


def write_delta(path: str | Path, delta: Delta) -> None:
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        file.create_dataset("delta", data=delta.delta)
        file.create_dataset("mean_real", data=delta.mean_real)
        file.create_dataset("mean_synthetic", data=delta.mean_synthetic)
        file.attrs.update(
            {"n_real": delta.n_real, "n_synthetic": delta.n_synthetic, "mode": delta.mode}
        )
        file.attrs.update(delta.attrs)


def read_delta(path: str | Path) -> Delta:
    with open_h5(path, "a delta file") as file:
        if "delta" not in file:
            raise DataError(f"{path}: not a delta file, lacks the dataset 'delta'")
        attrs = dict(file.attrs)
        return Delta(
            delta=file["delta"][()],
            mean_real=file["mean_real"][()],
            mean_synthetic=file["mean_synthetic"][()],
            n_real=int(attrs.pop("n_real")),
            n_synthetic=int(attrs.pop("n_synthetic")),
            mode=str(attrs.pop("mode")),
            attrs=attrs,
        )


# --- plan ---------------------------------------------------------------------------------


@dataclass
class ShardPlan:
    shard: int
    # per identity
    identities: list[str] = field(default_factory=list)
    prototypes: list[np.ndarray] = field(default_factory=list)
    n_sources_ok: list[int] = field(default_factory=list)
    identity_status: list[str] = field(default_factory=list)  # planned | skipped
    identity_reason: list[str] = field(default_factory=list)
    # per image
    image_identity: list[str] = field(default_factory=list)
    image_index: list[int] = field(default_factory=list)
    source_path: list[str] = field(default_factory=list)
    t: list[float] = field(default_factory=list)
    seed: list[int] = field(default_factory=list)
    condition: list[np.ndarray] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_index)


def write_plan(path: str | Path, plan: ShardPlan) -> None:
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as file:
        identities = file.create_group("identities")
        identities.create_dataset("identity", data=plan.identities, dtype=STRING)
        identities.create_dataset(
            "prototype", data=np.asarray(plan.prototypes, dtype=np.float32).reshape(-1, 512)
        )
        identities.create_dataset("n_sources_ok", data=np.asarray(plan.n_sources_ok, np.int32))
        identities.create_dataset("status", data=plan.identity_status, dtype=STRING)
        identities.create_dataset("reason", data=plan.identity_reason, dtype=STRING)
        images = file.create_group("images")
        images.create_dataset("identity", data=plan.image_identity, dtype=STRING)
        images.create_dataset("image_index", data=np.asarray(plan.image_index, np.int32))
        images.create_dataset("source_path", data=plan.source_path, dtype=STRING)
        images.create_dataset("t", data=np.asarray(plan.t, np.float64))
        images.create_dataset("seed", data=np.asarray(plan.seed, np.int64))
        images.create_dataset(
            "condition", data=np.asarray(plan.condition, dtype=np.float32).reshape(-1, 512)
        )
        file.attrs.update({"shard": plan.shard, **plan.attrs})


def read_plan(path: str | Path) -> ShardPlan:
    with open_h5(path, "a plan shard") as file:
        if "images" not in file or "identities" not in file:
            raise DataError(f"{path}: not a plan shard, lacks the groups images/ and identities/")
        ids, images = file["identities"], file["images"]
        attrs = dict(file.attrs)
        return ShardPlan(
            shard=int(attrs.pop("shard")),
            identities=read_strings(ids["identity"]),
            prototypes=list(ids["prototype"][()]),
            n_sources_ok=ids["n_sources_ok"][()].tolist(),
            identity_status=read_strings(ids["status"]),
            identity_reason=read_strings(ids["reason"]),
            image_identity=read_strings(images["identity"]),
            image_index=images["image_index"][()].tolist(),
            source_path=read_strings(images["source_path"]),
            t=images["t"][()].tolist(),
            seed=images["seed"][()].tolist(),
            condition=list(images["condition"][()]),
            attrs=attrs,
        )


def read_plan_identities(path: str | Path) -> ShardPlan:
    """A plan shard's identities (names, prototypes, statuses, reasons) without its images:
    what the evaluation needs, without 2,000 conditions per shard."""
    with open_h5(path, "a plan shard") as file:
        if "identities" not in file:
            raise DataError(f"{path}: not a plan shard, lacks the group identities/")
        ids = file["identities"]
        return ShardPlan(
            shard=int(file.attrs["shard"]),
            identities=read_strings(ids["identity"]),
            prototypes=list(ids["prototype"][()]),
            n_sources_ok=ids["n_sources_ok"][()].tolist(),
            identity_status=read_strings(ids["status"]),
            identity_reason=read_strings(ids["reason"]),
        )


# --- shard manifests and images -----------------------------------------------------------


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
class ArchivedImage:
    """An image in a shard's archive: the archive's path and the member's name."""

    archive: Path
    member: str

    def __str__(self) -> str:
        return f"{self.archive}:{self.member}"

    def open(self) -> Image.Image:
        """The image, decoded lazily as PIL does; DataError if the archive or member is not
        there."""
        reader = ImageArchives(keep_open=1)
        try:
            return Image.open(io.BytesIO(reader.read(self.archive, self.member)))
        finally:
            reader.close()


class ImageArchives:
    """Members of shard archives read by (archive, member name), the last few archives kept
    open: the exports and the report read thousands of images in shard order."""

    def __init__(self, keep_open: int = 4) -> None:
        self._keep_open = keep_open
        self._open: dict[Path, zipfile.ZipFile] = {}

    def _archive(self, archive: Path) -> zipfile.ZipFile:
        if archive not in self._open:
            if len(self._open) >= self._keep_open:
                self._open.pop(next(iter(self._open))).close()
            try:
                self._open[archive] = zipfile.ZipFile(archive)
            except (OSError, zipfile.BadZipFile) as error:
                message = f"{archive}: cannot open the shard's image archive: {error}"
                raise DataError(message) from None
        return self._open[archive]

    def comments(self, archive: Path) -> dict[str, str]:
        """Each member's comment (a raw image's key) by name; empty when there is no archive."""
        if not archive.is_file():
            return {}
        return {info.filename: info.comment.decode() for info in self._archive(archive).infolist()}

    def read(self, archive: Path, member: str) -> bytes:
        try:
            return self._archive(archive).read(member)
        except KeyError:
            raise DataError(f"{archive}: has no member {member}") from None
        except (OSError, zipfile.BadZipFile) as error:
            raise DataError(f"{archive}: cannot read {member}: {error}") from None

    def close(self) -> None:
        for archive in self._open.values():
            archive.close()
        self._open.clear()


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


def member_spans(archive: Path, members: list[str]) -> dict[str, MemberSpan]:
    """The span of each named member of `archive`, from one read of its directory and of each
    member's local header (whose extra field may differ from the directory's)."""
    spans = {}
    try:
        with zipfile.ZipFile(archive) as opened, open(archive, "rb") as file:
            for member in members:
                info = opened.getinfo(member)
                if info.compress_type != zipfile.ZIP_STORED:
                    raise DataError(f"{archive}: {member} is compressed; shard archives store")
                file.seek(info.header_offset)
                header = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
                if header[0] != _LOCAL_SIGNATURE:
                    raise DataError(f"{archive}: {member} has no local header where it should")
                name_length, extra_length = header[-2:]
                offset = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
                spans[member] = MemberSpan(offset, info.file_size, info.CRC)
    except KeyError:
        raise DataError(f"{archive}: has no member {member}") from None
    except (OSError, zipfile.BadZipFile, struct.error) as error:
        raise DataError(f"{archive}: cannot read the shard's image archive: {error}") from None
    return spans


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


def write_manifest(table: pa.Table, manifest: Path) -> None:
    """The CSV copy first, the Parquet commit record last, each renamed into place."""
    with atomic_path(manifest.with_suffix(".csv")) as temporary:
        pacsv.write_csv(table, temporary)
    with atomic_path(manifest) as temporary:
        pq.write_table(table, temporary)


def read_shard_manifests(manifests: list[Path], results: Path) -> pa.Table:
    tables = []
    for manifest in manifests:
        try:
            table = pq.read_table(manifest)
        except (OSError, pa.ArrowInvalid) as error:
            raise DataError(f"{manifest}: cannot read shard manifest: {error}") from None
        missing = set(MANIFEST_COLUMNS) - set(table.column_names)
        if missing:
            raise DataError(f"{manifest}: not a shard manifest, lacks {sorted(missing)}")
        prefix = str(manifest.parent.relative_to(results)) + "/"
        values = table.column("archive")
        relative = pc.if_else(
            pc.equal(values, ""), "", pc.binary_join_element_wise(prefix, values, "")
        )
        table = table.set_column(table.schema.get_field_index("archive"), "archive", relative)
        tables.append(table.select(list(MANIFEST_COLUMNS)))
    if not tables:
        raise DataError("no shard manifests to aggregate")
    return pa.concat_tables(tables)


# --- embeddings of the generated images ------------------------------------------------------


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


# --- a shard's image records ---------------------------------------------------------------

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


# --- model hashes ----------------------------------------------------------------------------


def write_model_hashes(path: Path, hashes: dict[str, str]) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")


def read_model_hashes(path: Path) -> dict[str, str]:
    try:
        hashes = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read the model hashes: {error}") from None
    if not isinstance(hashes, dict):
        raise DataError(f"{path}: not a model hashes file")
    return hashes


# --- the dataset and its card --------------------------------------------------------------


def write_card(path: Path, card: dict) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(card, indent=2) + "\n")


# --- the evaluation ------------------------------------------------------------------------


def write_evaluation_table(path: Path, columns: dict[str, list]) -> None:
    with atomic_path(path) as temporary:
        pq.write_table(pa.table(columns), temporary)


def write_evaluation(path: Path, summary: dict) -> None:
    """evaluation.json: NaN and infinities are written as null, so any JSON reader reads it."""

    def clean(value):
        if isinstance(value, float) and not np.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [clean(item) for item in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(clean(summary), indent=2, allow_nan=False) + "\n")


def read_evaluation(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read the evaluation: {error}") from None
