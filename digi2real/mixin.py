"""The real-data mix-in (export.mixin): a seeded sample of real identities added to every export
after the synthetic ones, as the Digi2Real paper's real-data experiment adds about 1,000.

Sources:
- a folder of aligned 112x112 identity folders, `<source>/<identity>/<image>` (an identity's
  name is its folder's);
- a RecordIO folder (`train.rec`, `train.idx`) as insightface distributes CASIA-WebFace and
  MS1MV2: record 0's label gives the class records, each class's image range; an identity's
  name is its class number, or its row of a `labels.csv` beside them (this workflow's own
  exports).

The draw: the identities with at least images_per_identity images, sorted by name, `identities`
of them chosen with the seed, then images_per_identity of each one's images (sorted by name or
record). The same source and seed give the same sample, whatever order a listing returns.

The sample is copied, bytes as stored, into `faces.zip` (members `<position>/<k><suffix>`), with
`faces.csv` (one row per image: position, identity, image, member, origin) and `sample.json`
(what was drawn from what): the exports, the leakage search and the card read these alone, so
the source is read once. Labels are given by the exports: C_synth + position.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from digi2real.errors import ConfigError, DataError
from digi2real.exports import IMAGE_SIZE as FACE_SIZE
from digi2real.shard_store import encode_image, image_archive

FACES, FACES_TABLE, SAMPLE = "faces.zip", "faces.csv", "sample.json"
FACES_COLUMNS = ("position", "identity", "image", "member", "origin")
_STREAM = 0x6D1C  # the draw's own random stream beside the run's other uses of the seed
KEY = "export.mixin"


@dataclass(frozen=True)
class RealIdentity:
    name: str
    images: tuple[str, ...]  # where each image is in the source: a path, or `train.rec#<key>`


class MixinSource:
    """The identities of a source and the bytes of their images."""

    kind = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def identities(self) -> list[RealIdentity]:
        raise NotImplementedError

    def read(self, image: str) -> bytes:
        raise NotImplementedError


class FolderSource(MixinSource):
    kind = "folder"

    def identities(self) -> list[RealIdentity]:
        from digi2real.layout import identity_files

        images_of: dict[str, list[str]] = {}
        for path in identity_files(self.root, f"{KEY}.source", refuse_empty=True):
            images_of.setdefault(path.split("/")[0], []).append(path)
        return [RealIdentity(name, tuple(images)) for name, images in images_of.items()]

    def read(self, image: str) -> bytes:
        return (self.root / image).read_bytes()


class RecordIOSource(MixinSource):
    kind = "recordio"

    def __init__(self, root: Path) -> None:
        from digi2real.training_data import RecordIOFaces

        super().__init__(root)
        # insightface's releases have no labels.csv: their classes are named by number.
        self._records = RecordIOFaces(root, numbered=not (root / "labels.csv").is_file())

    def identities(self) -> list[RealIdentity]:
        # The images of every class from one sort of the labels (a scan per class would be
        # C x N comparisons: 5e9 for CASIA-WebFace's 10,575 classes and 490,000 images).
        labels = self._records.labels
        names = self._records.identities
        by_class = np.split(
            np.argsort(labels, kind="stable"),
            np.cumsum(np.bincount(labels, minlength=len(names)))[:-1],
        )
        found = []
        for name, images in zip(names, by_class, strict=True):
            if not len(images):
                raise DataError(f"{self.root}: class {name} has no images ({KEY}.source)")
            found.append(RealIdentity(name, tuple(f"train.rec#{i + 1}" for i in images)))
        return found

    def read(self, image: str) -> bytes:
        return self._records.encoded(int(image.rpartition("#")[2]) - 1)


def open_source(path: Path) -> MixinSource:
    """The source at `path`: a RecordIO folder when it holds train.rec, else identity folders."""
    if not path.is_dir():
        raise ConfigError(f"config key {KEY}.source: {path} is not a folder")
    if (path / "train.rec").is_file():
        if not (path / "train.idx").is_file():
            raise DataError(f"{path}: train.rec without train.idx ({KEY}.source)")
        return RecordIOSource(path)
    return FolderSource(path)


def eligible(identities: list[RealIdentity], per_identity: int) -> list[RealIdentity]:
    """The identities with at least `per_identity` images, in name order: those drawn from."""
    enough = [identity for identity in identities if len(identity.images) >= per_identity]
    return sorted(enough, key=lambda identity: identity.name)


def draw(
    identities: list[RealIdentity], count: int, per_identity: int, seed: int
) -> list[RealIdentity]:
    """`count` identities of the eligible ones, and `per_identity` of each one's images (in
    the source's order: file names, record keys), drawn with `seed`; in name order."""
    eligible_ones = eligible(identities, per_identity)
    if len(eligible_ones) < count:
        raise ConfigError(
            f"config key {KEY}.identities: {count}, but only {len(eligible_ones)} of the "
            f"source's "
            f"{len(identities)} identities have {KEY}.images_per_identity = {per_identity} images"
        )
    rng = np.random.default_rng([seed, _STREAM])
    chosen = sorted(rng.choice(len(eligible_ones), size=count, replace=False).tolist())
    drawn = []
    for position in chosen:
        identity = eligible_ones[position]
        picked = rng.choice(len(identity.images), size=per_identity, replace=False)
        images = tuple(identity.images[k] for k in sorted(picked.tolist()))
        drawn.append(RealIdentity(identity.name, images))
    return drawn


def checked_face(data: bytes, origin: str) -> str:
    """The suffix the exports keep an image's bytes under; an error naming the image when it is
    not a readable 112x112 image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            size, kind = image.size, image.format
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(f"{origin}: not a readable image ({error}; {KEY}.source)") from None
    if size != (FACE_SIZE, FACE_SIZE):
        raise DataError(
            f"{origin}: {size[0]}x{size[1]}; {KEY}.source must hold aligned "
            f"{FACE_SIZE}x{FACE_SIZE} faces, as the synthetic ones are"
        )
    return ".jpg" if kind == "JPEG" else ".png"


def as_png(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return encode_image(np.asarray(image.convert("RGB")), "png", quality=0)


def write_sample(out: Path, source: MixinSource, drawn: list[RealIdentity], summary: dict) -> None:
    """faces.zip, faces.csv and sample.json into the new folder `out`."""
    rows = []
    with image_archive(out / FACES) as archive:
        for position, identity in enumerate(drawn):
            for k, image in enumerate(identity.images):
                data = source.read(image)
                origin = f"{source.root}/{image}"
                suffix = checked_face(data, origin)
                if suffix == ".png" and not data.startswith(b"\x89PNG"):
                    data = as_png(data)  # a BMP or WebP source image, kept lossless
                member = f"{position}/{k}{suffix}"
                archive.add(member, data)
                rows.append((position, identity.name, k, member, image))
    with open(out / FACES_TABLE, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(FACES_COLUMNS)
        writer.writerows(rows)
    (out / SAMPLE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class MixinFace:
    position: int  # the identity's place in the sample: its label is C_synth + position
    identity: str  # its name within its source
    image: int
    member: str  # in faces.zip


def read_faces(folder: Path) -> list[MixinFace]:
    """faces.csv of a sample, in position then image order."""
    path = folder / FACES_TABLE
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except OSError as error:
        raise DataError(f"{path}: unreadable ({error}); sample_mixin writes it") from None
    return [
        MixinFace(int(row["position"]), row["identity"], int(row["image"]), row["member"])
        for row in rows
    ]


def read_summary(folder: Path) -> dict:
    return json.loads((folder / SAMPLE).read_text())


def flagged_identities(leaks: Path | None) -> list[str] | None:
    """The real identities mixin_leaks flagged as benchmark leaks; None where not searched."""
    if leaks is None:
        return None
    with open(leaks, newline="") as file:
        return [row["identity"] for row in csv.DictReader(file)]


def card_section(folder: Path | None, leaks: Path | None = None) -> dict | None:
    """What the card and the certificate say of the mix-in: the sample's summary, its benchmark
    leaks and the sentence their pages open with; None for a synthetic-only dataset."""
    if folder is None:
        return None
    summary = read_summary(folder)
    flagged = flagged_identities(leaks)
    sentence = (
        f"Real faces mixed in: besides its synthetic identities, this training set holds "
        f"{summary['images']:,} images of {summary['identities']:,} real people, drawn from "
        f"{summary['source']} ({summary['kind']}, export.mixin, seed {summary['seed']}); as a "
        "whole it is not privacy-preserving."
    )
    if flagged:
        verb = "is" if len(flagged) == 1 else "are"
        sentence += (
            f" {len(flagged)} of them {verb} as close as evaluation.leak_threshold to a "
            "benchmark face (mixin/benchmark_leaks.csv)."
        )
    return {
        **summary,
        "benchmark_leaks": None if flagged is None else len(flagged),
        "statement": sentence,
    }
