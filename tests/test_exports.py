"""The exports read back by the readers FR training code uses: MXNet's own RecordIO reader (in
a side environment), the webdataset and wids libraries, and a walk of the ImageFolder."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from digi2real.exports import RECORD_MAGIC, pack, record_bytes

pytestmark = pytest.mark.unit

# Run with the side environment's Python: every record of a .rec as MXNet reads it.
READ_RECORDS = """
import json, sys
import mxnet as mx
reader = mx.recordio.MXRecordIO(sys.argv[1], "r")
records = []
while True:
    item = reader.read()
    if item is None:
        break
    header, payload = mx.recordio.unpack(item)
    label = header.label if header.flag == 0 else [float(x) for x in header.label]
    records.append({"flag": header.flag, "label": label, "id": header.id, "payload": payload.hex()})
print(json.dumps(records))
"""


def test_a_record_holding_the_magic_word_is_split_and_read_back_whole(mxnet_python, tmp_path):
    magic = struct.pack("<I", RECORD_MAGIC)
    payloads = [
        b"",
        b"abc",
        magic,  # the magic word alone
        b"abcd" + magic + b"efgh" + magic + magic + b"xy",  # aligned, several, side by side
        b"a" + magic + b"bcd",  # unaligned: no split
        b"ab" + magic + b"cd" + magic + b"e",  # unaligned, then aligned
        magic[2:] + magic + magic[:2],  # overlapping an aligned one
        bytes(range(256)) * 3,
    ]
    path = tmp_path / "t.rec"
    path.write_bytes(b"".join(record_bytes(pack(float(k), p, k)) for k, p in enumerate(payloads)))
    assert b"".join(record_bytes(p) for p in payloads).count(magic) > len(payloads)  # split
    read = subprocess.run(
        [str(mxnet_python), "-c", READ_RECORDS, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    records = json.loads(read.stdout)
    assert [bytes.fromhex(r["payload"]) for r in records] == payloads
    assert [r["label"] for r in records] == [float(k) for k in range(len(payloads))]
    assert [r["id"] for r in records] == list(range(len(payloads)))


def test_a_label_vector_is_packed_as_mxnet_packs_it(mxnet_python, tmp_path):
    path = tmp_path / "v.rec"
    path.write_bytes(record_bytes(pack([3.0, 7.0], b"tail")))
    read = subprocess.run(
        [str(mxnet_python), "-c", READ_RECORDS, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    (record,) = json.loads(read.stdout)
    assert (record["flag"], record["label"], bytes.fromhex(record["payload"])) == (
        2,
        [3.0, 7.0],
        b"tail",
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def assert_exports_hold_every_passed_image(results: Path, mxnet_python: Path, tmp_path: Path):
    """Shared by the workflow tests: every passed image once, its label, 112x112, its crop;
    then the mix-in's real faces (results/mixin/sample), if any, labelled after them. Keyed by
    label, never by name: a real identity may bear a synthetic one's name."""
    import csv
    import io
    import zipfile

    import pyarrow.parquet as pq
    from PIL import Image

    manifest = pq.read_table(results / "manifest.parquet").to_pylist()
    passed = [r for r in manifest if r["passed"]]
    identities = list(dict.fromkeys(r["identity"] for r in passed))
    classes = [(identity, "synthetic") for identity in identities]
    label = {identity: k for k, identity in enumerate(identities)}
    crop = {}  # (label, image index): the pixels the export must hold
    for r in passed:  # the aligned crops, from the shards' archives
        with zipfile.ZipFile(results / r["archive"]) as archive:
            data = archive.read(r["aligned_path"])
        crop[(label[r["identity"]], r["image_index"])] = np.asarray(Image.open(io.BytesIO(data)))
    sample = results / "mixin/sample"
    if sample.exists():  # the real faces, as the mix-in's source holds them
        with open(sample / "faces.csv", newline="") as file:
            faces = list(csv.DictReader(file))
        for face in faces:
            position = int(face["position"])
            if len(classes) == len(identities) + position:
                classes.append((face["identity"], "real"))
            data = zipfile.ZipFile(sample / "faces.zip").read(face["member"])
            pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            crop[(len(identities) + position, int(face["image"]))] = pixels

    # What the JPEG exports hold: each crop stored as PNG, encoded once at the export's quality
    # (95, as insightface's builder). A textured face loses more to it than the synthetic
    # crops do (PSNR 37 at 95), so each is compared with its own JPEG, decoded by another
    # decoder than MXNet's or webdataset's: only decoding differences are left.
    def jpeg_of(pixels: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        return np.asarray(Image.open(buffer))

    as_exported = {key: jpeg_of(pixels) for key, pixels in crop.items()}
    names = [identity for identity, _ in classes]
    expected = sorted((lab, names[lab], k) for lab, k in crop)
    export = results / "export"
    labels_files = {p.read_text() for p in export.glob("*/labels.csv")}
    assert len(labels_files) == 1, "every export has the same labels"
    rows = list(csv.DictReader(io.StringIO(labels_files.pop())))
    assert [(int(r["label"]), r["identity"], r["source"]) for r in rows] == [
        (k, identity, source) for k, (identity, source) in enumerate(classes)
    ]
    counts = np.bincount([lab for lab, _, _ in expected], minlength=len(classes))
    assert [int(r["images"]) for r in rows] == counts.tolist()

    # RecordIO, the way insightface's arcface_torch reads it.
    script = tmp_path / "read.py"
    script.write_text(
        "import sys, numbers, numpy as np, mxnet as mx\n"
        "rec = mx.recordio.MXIndexedRecordIO(sys.argv[1] + '/train.idx',"
        " sys.argv[1] + '/train.rec', 'r')\n"
        "header, _ = mx.recordio.unpack(rec.read_idx(0))\n"
        "assert header.flag > 0\n"
        "labels, images = [], []\n"
        "for i in range(1, int(header.label[0])):\n"
        "    h, img = mx.recordio.unpack(rec.read_idx(i))\n"
        "    labels.append(h.label if isinstance(h.label, numbers.Number) else h.label[0])\n"
        "    images.append(mx.image.imdecode(img).asnumpy())\n"
        "ranges = [list(mx.recordio.unpack(rec.read_idx(i))[0].label)"
        " for i in range(int(header.label[0]), int(header.label[1]))]\n"
        "np.savez(sys.argv[2], labels=np.array(labels), images=np.stack(images),"
        " ranges=np.array(ranges))\n"
    )
    out = tmp_path / "recordio.npz"
    subprocess.run(
        [str(mxnet_python), str(script), str(export / "recordio"), str(out)],
        check=True,
        capture_output=True,
    )
    read = np.load(out)
    assert read["labels"].tolist() == [float(lab) for lab, _, _ in expected]
    assert read["images"].shape == (len(expected), 112, 112, 3)
    for (lab, _, k), image in zip(expected, read["images"], strict=True):
        assert psnr(image, as_exported[(lab, k)]) >= 38, (lab, k)
    starts = np.searchsorted([lab for lab, _, _ in expected], np.arange(len(classes)))
    assert read["ranges"].tolist() == [
        [float(s + 1), float(e + 1)]
        for s, e in zip(starts, [*starts[1:], len(expected)], strict=True)
    ]
    assert (export / "recordio/property").read_text().strip() == f"{len(classes)},112,112"

    # WebDataset, streamed by the webdataset library and indexed by wids.
    import webdataset as wds
    import wids

    tars = sorted(str(p) for p in (export / "webdataset").glob("*.tar"))
    seen = []
    for sample in wds.WebDataset(tars, shardshuffle=False).decode("rgb8"):
        meta = sample["json"]
        assert int(sample["cls"]) == meta["label"]
        assert (meta["identity"], meta["source"]) == classes[meta["label"]]
        image = sample["jpg"]
        assert image.shape == (112, 112, 3)
        assert psnr(image, as_exported[(meta["label"], meta["image_index"])]) >= 38
        seen.append((meta["label"], meta["identity"], meta["image_index"]))
    assert sorted(seen) == expected and seen != expected  # all once, shuffled
    indexed = wids.ShardListDataset(str(export / "webdataset/index.json"))
    assert len(indexed) == len(expected)
    assert int(indexed[len(expected) - 1][".cls"]) in range(len(classes))

    # ImageFolder: sorted folder names (torchvision's classes) are label order, one folder a
    # class even where two identities share a name; the crops themselves, bit for bit.
    folders = sorted(p for p in (export / "imagefolder").iterdir() if p.is_dir())
    assert [f.name.split("_", 1)[1] for f in folders] == names
    walked = sorted(
        (position, folder.name.split("_", 1)[1], int(image.stem))
        for position, folder in enumerate(folders)
        for image in folder.iterdir()
    )
    assert walked == expected
    for lab, _, k in walked:
        (image,) = folders[lab].glob(f"{k}.*")
        pixels = np.asarray(Image.open(image).convert("RGB"))
        assert np.array_equal(pixels, crop[(lab, k)])
