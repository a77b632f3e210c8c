"""A shard's image archive read back: by span (the exports) and by name (the report, a
rerun), against zipfile's own reader."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from digi2real import shard_store
from digi2real.errors import DataError

pytestmark = pytest.mark.unit


def test_member_spans_read_what_zipfile_reads(tmp_path):
    """Spans against zipfile's own reader, on a shard archive and on a zip whose local headers
    carry a ZIP64 extra field that its directory does not."""

    rng = np.random.default_rng(0)
    members = {f"aligned/{k}/{k}.png": rng.bytes(int(size)) for k, size in enumerate([0, 1, 70000])}
    members["aligned/magic.png"] = b"PK\x03\x04" * 50  # a local header's signature, inside
    ours = tmp_path / "images.zip"
    with shard_store.image_archive(ours) as archive:
        for name, data in members.items():
            archive.add(name, data, comment="key")
    zip64 = tmp_path / "zip64.zip"
    with zipfile.ZipFile(zip64, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            with archive.open(zipfile.ZipInfo(name), "w", force_zip64=True) as member:
                member.write(data)
    for path in (ours, zip64):
        spans = shard_store.member_spans(path, list(members))
        with zipfile.ZipFile(path) as reference:
            for name in members:
                assert shard_store.read_member(path, name, spans[name]) == reference.read(name)


def test_member_spans_name_what_is_wrong(tmp_path):

    path = tmp_path / "images.zip"
    with shard_store.image_archive(path) as archive:
        archive.add("aligned/a/0.png", b"crop bytes")
    with pytest.raises(DataError, match="images.zip: has no member aligned/a/1.png"):
        shard_store.member_spans(path, ["aligned/a/1.png"])
    with pytest.raises(DataError, match="cannot read the shard's image archive"):
        shard_store.member_spans(tmp_path / "missing.zip", ["aligned/a/0.png"])
    span = shard_store.member_spans(path, ["aligned/a/0.png"])["aligned/a/0.png"]
    data = bytearray(path.read_bytes())
    data[span.offset] ^= 0xFF  # the archive changed after its spans were read
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="aligned/a/0.png fails its CRC check"):
        shard_store.read_member(path, "aligned/a/0.png", span)
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("aligned/a/0.png", b"crop bytes" * 10)
    with pytest.raises(DataError, match="aligned/a/0.png is compressed"):
        shard_store.member_spans(deflated, ["aligned/a/0.png"])


def test_the_archive_reader_reads_what_zipfile_reads(tmp_path):
    """ImageArchives reads each member by its span, as member_spans hands them to the exports,
    and each member's comment, as zipfile does; a changed archive read again is read anew."""
    rng = np.random.default_rng(1)
    path = tmp_path / "images.zip"
    members = {f"raw/a/{k}.png": rng.bytes(int(size)) for k, size in enumerate([0, 5, 9000])}
    with shard_store.image_archive(path) as archive:
        for name, data in members.items():
            archive.add(name, data, comment=f"key of {name}")
    reader = shard_store.ImageArchives(keep=1)
    with zipfile.ZipFile(path) as reference:
        assert reader.comments(path) == {
            i.filename: i.comment.decode() for i in reference.infolist()
        }
        for name in members:
            assert reader.read(path, name) == reference.read(name)
    assert reader.comments(tmp_path / "none.zip") == {}
    with pytest.raises(DataError, match="images.zip: has no member raw/a/3.png"):
        reader.read(path, "raw/a/3.png")
    with shard_store.image_archive(path) as archive:  # a commit replaces the archive
        archive.add("raw/a/0.png", b"new bytes")
    reader.close()
    assert reader.read(path, "raw/a/0.png") == b"new bytes"


def test_an_archived_image_opens_as_the_image_stored(tmp_path):
    """What the report's figures draw: a member of a shard's archive, decoded."""
    path = tmp_path / "images.zip"
    pixels = np.random.default_rng(2).integers(0, 256, (8, 6, 3), np.uint8)
    with shard_store.image_archive(path) as archive:
        archive.add("aligned/a/0.png", shard_store.encode_image(pixels, "png", 0))
    with shard_store.ArchivedImage(path, "aligned/a/0.png").open() as image:
        assert np.array_equal(np.asarray(image), pixels)
    with pytest.raises(DataError, match="has no member aligned/a/1.png"):
        shard_store.ArchivedImage(path, "aligned/a/1.png").open()
