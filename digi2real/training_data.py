"""The training set as the trainer reads it: the run's own RecordIO or WebDataset export
(digi2real/exports.py writes both), read back by label and byte range, never through MXNet.

Reading:
- RecordIO: `train.idx` gives each record's offset in `train.rec`. Record 0's label is
  (N + 1, N + 1 + C); records N + 1 .. N + C hold each class's image range, so the labels of
  all N images are known from C small records, as insightface's own reader finds them.
- WebDataset: each tar's member headers give the `.jpg` and `.cls` of each key and where their
  bytes lie; one pass over the headers, then reads by offset.
Both keep the file handles of the process that reads (each data-loader worker opens its own).

Order and augmentation depend only on (seed, epoch, index): an epoch's order is a permutation
drawn from (seed, epoch), and whether a face is flipped from (seed, epoch, image). A resumed
run therefore sees exactly the batches the uninterrupted run would have, whatever the number
of loader workers or where it stopped.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from digi2real.errors import DataError
from digi2real.exports import IR_HEADER, REAL, RECORD_MAGIC, SYNTHETIC, Classes
from digi2real.face_tensors import decode_face, normalised

_RECORD_HEAD = struct.Struct("<II")  # dmlc-core's record head: magic, (cflag << 29) | length


@dataclass(frozen=True)
class ByteRange:
    path: Path
    offset: int
    size: int


class _Files:
    """Open files by path, per process: a handle opened before a fork is shared by the
    workers, whose seeks then race."""

    def __init__(self) -> None:
        self._pid = -1
        self._open: dict[Path, object] = {}

    def read(self, where: ByteRange) -> bytes:
        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), {}
        handle = self._open.get(where.path)
        if handle is None:
            handle = self._open[where.path] = open(where.path, "rb")  # noqa: SIM115
        handle.seek(where.offset)
        data = handle.read(where.size)
        if len(data) != where.size:
            raise DataError(f"{where.path}: truncated at byte {where.offset + len(data)}")
        return data

    def __getstate__(self) -> dict:
        return {}  # a copy sent to a worker opens its own files

    def __setstate__(self, state: dict) -> None:
        self.__init__()


class FaceRecords:
    """The N encoded faces of an export with their labels 0..C-1 and its classes, as the
    export wrote them (each class's identity and source, `synthetic` or `real`)."""

    def __init__(self, folder: Path, labels: np.ndarray, classes: Classes) -> None:
        self.folder = folder
        self.labels = labels
        self.classes = classes
        self._files = _Files()

    @property
    def identities(self) -> list[str]:
        return self.classes.identities

    @property
    def sources(self) -> list[str]:
        return self.classes.sources

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def encoded(self, index: int) -> bytes:
        raise NotImplementedError


def read_identities(folder: Path) -> Classes:
    """The identity and the source of each label, from the export's labels.csv (label,
    identity, images, source), as exports.labels_csv wrote them; an export written before the
    mix-in has no `source` column, and only synthetic identities."""
    path = folder / "labels.csv"
    if not path.is_file():
        raise DataError(f"{folder}: no labels.csv, not an export of this workflow")
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    if [int(row["label"]) for row in rows] != list(range(len(rows))):
        raise DataError(f"{path}: labels are not 0..{len(rows) - 1} in order")
    return Classes(
        [row["identity"] for row in rows], [row.get("source") or SYNTHETIC for row in rows]
    )


class RecordIOFaces(FaceRecords):
    """train.rec / train.idx / labels.csv, as exports.write_recordio writes them. With
    `numbered`, a RecordIO without labels.csv (insightface's releases): class k is named "k"."""

    def __init__(self, folder: Path, numbered: bool = False) -> None:
        self._rec = folder / "train.rec"
        offsets: dict[int, int] = {}
        try:
            with open(folder / "train.idx") as idx:
                for line in idx:
                    key, offset = line.split("\t")
                    offsets[int(key)] = int(offset)
        except (OSError, ValueError) as error:
            raise DataError(f"{folder / 'train.idx'}: unreadable ({error})") from None
        self._offsets = offsets
        classes = Classes([], []) if numbered else read_identities(folder)
        super().__init__(folder, np.zeros(0, np.int64), classes)
        header = self._label_vector(0)
        first_class, end = int(header[0]), int(header[1])
        if numbered:
            self.classes = Classes(
                [str(k) for k in range(end - first_class)], [REAL] * (end - first_class)
            )
        if first_class - 1 < 0 or end - first_class != self.num_classes:
            raise DataError(
                f"{self._rec}: header says {end - first_class} classes, labels.csv "
                f"{self.num_classes}"
            )
        labels = np.full(first_class - 1, -1, np.int64)
        for label in range(self.num_classes):
            start, stop = (int(x) for x in self._label_vector(first_class + label))
            labels[start - 1 : stop - 1] = label
        if (labels < 0).any():
            raise DataError(f"{self._rec}: image {int(np.argmin(labels)) + 1} is in no class")
        self.labels = labels

    def _record(self, key: int) -> bytes:
        """Record `key`'s data, its parts joined with the magic words the writer dropped."""
        if key not in self._offsets:
            raise DataError(f"{self._rec}: record {key} is not in train.idx")
        offset, parts = self._offsets[key], []
        while True:
            magic, word = _RECORD_HEAD.unpack(
                self._files.read(ByteRange(self._rec, offset, _RECORD_HEAD.size))
            )
            if magic != RECORD_MAGIC:
                raise DataError(f"{self._rec}: no record at byte {offset} (record {key})")
            flag, length = word >> 29, word & ((1 << 29) - 1)
            parts.append(self._files.read(ByteRange(self._rec, offset + 8, length)))
            offset += 8 + length + (-length % 4)
            if flag in (0, 3):
                break
        return struct.pack("<I", RECORD_MAGIC).join(parts)

    def _label_vector(self, key: int) -> np.ndarray:
        data = self._record(key)
        flag = IR_HEADER.unpack_from(data)[0]
        return np.frombuffer(data, np.float32, count=flag, offset=IR_HEADER.size)

    def encoded(self, index: int) -> bytes:
        data = self._record(index + 1)
        flag = IR_HEADER.unpack_from(data)[0]
        return data[IR_HEADER.size + 4 * flag :]


class WebDatasetFaces(FaceRecords):
    """shard-*.tar of <key>.jpg / <key>.cls, listed by index.json, with labels.csv."""

    def __init__(self, folder: Path) -> None:
        try:
            shards = json.loads((folder / "index.json").read_text())["shardlist"]
        except (OSError, ValueError, KeyError) as error:
            raise DataError(f"{folder / 'index.json'}: unreadable ({error})") from None
        self._images: list[ByteRange] = []
        labels: list[int] = []
        for shard in shards:
            path = folder / shard["url"]
            members: dict[str, dict[str, tarfile.TarInfo]] = {}
            with tarfile.open(path) as tar:
                for member in tar:
                    key, _, suffix = member.name.rpartition(".")
                    members.setdefault(key, {})[suffix] = member
            for key, parts in members.items():
                if "jpg" not in parts or "cls" not in parts:
                    raise DataError(f"{path}: sample {key} lacks its .jpg or .cls")
                cls = parts["cls"]
                with open(path, "rb") as file:
                    file.seek(cls.offset_data)
                    labels.append(int(file.read(cls.size)))
                jpg = parts["jpg"]
                self._images.append(ByteRange(path, jpg.offset_data, jpg.size))
        super().__init__(folder, np.asarray(labels, np.int64), read_identities(folder))
        if len(labels) and not 0 <= min(labels) <= max(labels) < self.num_classes:
            raise DataError(f"{folder}: a .cls label outside 0..{self.num_classes - 1}")

    def encoded(self, index: int) -> bytes:
        return self._files.read(self._images[index])


def open_export(folder: Path, kind: str) -> FaceRecords:
    """The export of `kind` (recordio | webdataset) in `folder`."""
    readers = {"recordio": RecordIOFaces, "webdataset": WebDatasetFaces}
    if kind not in readers:
        raise ValueError(f"train.data: {kind!r} is not one of {sorted(readers)}")
    return readers[kind](folder)


def flips(seed: int, epoch: int, images: np.ndarray) -> np.ndarray:
    """Whether each image of `images` (indices into the export) is flipped in `epoch`: p = 0.5,
    drawn from (seed, epoch, image) alone."""
    return np.array([np.random.default_rng([seed, epoch, int(i)]).random() < 0.5 for i in images])


class TrainingImages(torch.utils.data.Dataset):
    """Item `i` is image `i` of `records` as a normalised 3x112x112 tensor (flipped or not, as
    `flips` says for the epoch set by `set_epoch`) and its label among `classes`."""

    def __init__(self, records: FaceRecords, classes: np.ndarray, seed: int, flip: bool) -> None:
        self.records, self.classes, self.seed, self.flip = records, classes, seed, flip
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        name = f"{self.records.folder} image {index}"
        face = decode_face(self.records.encoded(index), name)
        if self.flip and flips(self.seed, self.epoch, np.array([index]))[0]:
            face = face[:, ::-1]
        return normalised(np.ascontiguousarray(face))[0], int(self.classes[index])


@dataclass(frozen=True)
class EpochPlan:
    """Which images each step of an epoch trains on, for every process: the epoch's
    permutation of the kept images cut into global batches of batch_size x world images (the
    last incomplete one dropped, so every process takes the same number of steps); process
    `rank` takes the rank-th slice of each."""

    images: np.ndarray  # the indices of the images trained on (leaks left out)
    batch_size: int  # per process
    world: int
    seed: int

    @property
    def steps(self) -> int:
        return len(self.images) // (self.batch_size * self.world)

    def order(self, epoch: int) -> np.ndarray:
        return self.images[np.random.default_rng([self.seed, epoch]).permutation(len(self.images))]

    def batches(self, epoch: int, rank: int, start: int = 0) -> list[list[int]]:
        """The batches of process `rank` in `epoch`, from step `start` on."""
        order, size = self.order(epoch), self.batch_size
        return [
            order[
                (step * self.world + rank) * size : (step * self.world + rank + 1) * size
            ].tolist()
            for step in range(start, self.steps)
        ]
