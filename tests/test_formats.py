"""Files the stages write: readable by whom the umask says, like any other tool's files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]

# Every kind of file formats.py writes, each through its own writer, in a fresh process.
WRITE_EVERY_KIND = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np
    import pyarrow as pa

    from digi2real import formats

    out = Path(sys.argv[1])
    table = formats.EmbeddingTable(
        np.zeros((1, 512), np.float32), np.zeros(1, np.int8), ["a"], ["a/0.png"],
        np.ones(1, np.float32), [""], {"dataset": "digiface"},
    )
    formats.write_embeddings(out / "embeddings.h5", table)
    formats.write_index(out / "index.parquet", formats.Index([0], ["a"], ["a/0.png"], "/r"))
    zeros = np.zeros((77, 8), np.float32)
    formats.write_delta(out / "delta.h5", formats.Delta(zeros, zeros, zeros, 1, 1, "per_token"))
    formats.write_plan(out / "plan.h5", formats.ShardPlan(shard=0))
    formats.save_image(formats.encode_image(np.zeros((4, 4, 3), np.uint8), "png", 0), out / "a.png")
    with formats.image_archive(out / "images.zip") as archive:
        archive.add("raw/a/0.jpg", b"jpeg")
    manifest = pa.table({"identity": ["a"], "passed": [True]})
    formats.write_manifest(manifest, out / "manifest.parquet")
    formats.write_card(out / "card.json", {"a": 1})
    formats.write_evaluation(out / "evaluation.json", {"a": float("nan")})
    formats.write_evaluation_table(out / "table.parquet", {"a": [1]})
    formats.write_model_hashes(out / "models.json", {"models.vae": "0"})
    """
)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_every_written_file_gets_the_mode_the_umask_gives(tmp_path, umask, mode):
    subprocess.run(
        [sys.executable, "-c", WRITE_EVERY_KIND, str(tmp_path)],
        check=True,
        cwd=REPO,
        preexec_fn=lambda: os.umask(umask),
    )
    written = sorted(p for p in tmp_path.iterdir() if p.is_file())
    assert len(written) == 12  # the manifest writes its CSV copy too
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path.name
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_member_spans_read_what_zipfile_reads(tmp_path):
    """Spans against zipfile's own reader, on a shard archive and on a zip whose local headers
    carry a ZIP64 extra field that its directory does not."""
    import zipfile

    from digi2real import formats

    rng = np.random.default_rng(0)
    members = {f"aligned/{k}/{k}.png": rng.bytes(int(size)) for k, size in enumerate([0, 1, 70000])}
    members["aligned/magic.png"] = b"PK\x03\x04" * 50  # a local header's signature, inside
    ours = tmp_path / "images.zip"
    with formats.image_archive(ours) as archive:
        for name, data in members.items():
            archive.add(name, data, comment="key")
    zip64 = tmp_path / "zip64.zip"
    with zipfile.ZipFile(zip64, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            with archive.open(zipfile.ZipInfo(name), "w", force_zip64=True) as member:
                member.write(data)
    for path in (ours, zip64):
        spans = formats.member_spans(path, list(members))
        with zipfile.ZipFile(path) as reference:
            for name in members:
                assert formats.read_member(path, name, spans[name]) == reference.read(name)


def test_member_spans_name_what_is_wrong(tmp_path):
    import zipfile

    from digi2real import formats
    from digi2real.errors import DataError

    path = tmp_path / "images.zip"
    with formats.image_archive(path) as archive:
        archive.add("aligned/a/0.png", b"crop bytes")
    with pytest.raises(DataError, match="images.zip: has no member aligned/a/1.png"):
        formats.member_spans(path, ["aligned/a/1.png"])
    with pytest.raises(DataError, match="cannot read the shard's image archive"):
        formats.member_spans(tmp_path / "missing.zip", ["aligned/a/0.png"])
    span = formats.member_spans(path, ["aligned/a/0.png"])["aligned/a/0.png"]
    data = bytearray(path.read_bytes())
    data[span.offset] ^= 0xFF  # the archive changed after its spans were read
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="aligned/a/0.png fails its CRC check"):
        formats.read_member(path, "aligned/a/0.png", span)
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("aligned/a/0.png", b"crop bytes" * 10)
    with pytest.raises(DataError, match="aligned/a/0.png is compressed"):
        formats.member_spans(deflated, ["aligned/a/0.png"])
