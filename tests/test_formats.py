"""Files the stages write: readable by whom the umask says, like any other tool's files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]

# Every kind of file formats.py and shard_store.py write, each through its own writer, in a
# fresh process.
WRITE_EVERY_KIND = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np
    import pyarrow as pa

    from digi2real import formats, shard_store

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
    image = shard_store.encode_image(np.zeros((4, 4, 3), np.uint8), "png", 0)
    shard_store.save_image(image, out / "a.png")
    with shard_store.image_archive(out / "images.zip") as archive:
        archive.add("raw/a/0.jpg", b"jpeg")
    manifest = pa.table({"identity": ["a"], "passed": [True]})
    shard_store.write_manifest(manifest, out / "manifest.parquet")
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
