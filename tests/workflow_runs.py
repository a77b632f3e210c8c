"""What the workflow tests share: the zoo of inputs, a finished run's copies, snakemake run here,
and what its logs and outputs say (tests/conftest.py makes the zoo and each module's run)."""

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import yaml
from PIL import Image

from tests.conftest import LOCAL_SNAKEMAKE_PATH, REPO, snakemake_argv, write_demo_config

# The demo's exports (demo.yaml): rerun whenever the manifest changes.
EXPORTS = {"export_recordio": 1, "export_webdataset": 1, "export_imagefolder": 1}
# What a new manifest reruns: a change to the quality filter, or a shard made again.
AFTER_AGGREGATE = {"aggregate": 1, "evaluate": 1, "report": 1, **EXPORTS, "card": 1, "all": 1}

# The targets of a rerun test that checks the dataset (MANIFEST), or the dataset and its
# certificate (EVALUATION), not the jobs after them: the exports, the report and the card
# read the same manifest whatever made it, and test_workflow and test_certificate_workflow
# check them on the reference run (the interrupted run's plain command, test_reruns, and the
# card's tests make them all). Run anyway, they took 9 s of the 21 s that one shard's rerun
# took on 2 cores.
MANIFEST = "results/manifest.parquet"
EVALUATION = "results/evaluation.json"

IDENTITIES = 10
IMAGES_PER_IDENTITY = 4
FAST = {
    "generation.height": 64,
    "generation.width": 64,
    "generation.steps": 4,
    "generation.batch_size": 4,
    # One thread a generation job: on 2 cores two shards then generate at once.
    "generation.cpu_threads": 1,
    "plan.images_per_identity": IMAGES_PER_IDENTITY,
    "plan.identities_per_shard": 4,
    "plan.min_source_images": 2,
    "quality.face": {"det_size": 128},
    # demo.yaml's plan gates drop its planted identities 5 and 7: here off, so that only 8 and
    # 9 are skipped; test_the_plans_gates_drop_exactly_the_planted_identities turns them on.
    "plan.max_prototype_similarity": None,
    "plan.max_real_similarity": None,
    # demo.yaml trains a recognizer: here not, so that a rerun test's jobs are the dataset's;
    # test_training_workflow turns it on.
    "train.enabled": False,
    "benchmark.bins": {},
}


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return snakemake_argv(workdir, "--cores", "2", *args)


def local_environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": LOCAL_SNAKEMAKE_PATH, **extra}


def snakemake(workdir: Path, *args: str, env: dict | None = None, check: bool = True):
    result = subprocess.run(
        snakemake_command(workdir, *args),
        capture_output=True,
        text=True,
        env=local_environment(**(env or {})),
        timeout=900,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Job counts of a dry run, from its 'Job stats' table."""
    output = snakemake(workdir, "-n", *args).stdout
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:")[1].split("\n\n")[0].splitlines()[3:]
    return {row.split()[0]: int(row.split()[1]) for row in table if row.split()[0] != "total"}


def make_zoo(demo_root: Path, folder: Path) -> tuple[Path, Path]:
    """The demo's data plus every kind of bad input a real folder holds."""
    digiface = folder / "digiface"
    shutil.copytree(demo_root / "digiface", digiface)
    good = (digiface / "0/0.png").read_bytes()
    (digiface / "0/6.png").write_bytes(good[: len(good) // 2])  # truncated
    (digiface / "0/7.png").write_bytes(b"")  # zero bytes
    (digiface / "0/8.png").write_text("not an image\n")  # not an image
    (digiface / "0/notes.txt").write_text("ignored: not an image file name\n")
    rgb = np.asarray(Image.open(digiface / "1/0.png").convert("RGB"))
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(digiface / "1/0.png")
    cv2.imwrite(str(digiface / "1/1.png"), rgb[..., ::-1].astype(np.uint16) * 257)  # 16-bit RGB
    (digiface / "8").mkdir()  # an empty identity folder
    (digiface / "9").mkdir()
    for k in range(3):  # an identity whose images hold no face
        Image.new("RGB", (112, 112), (90, 110, 160)).save(digiface / f"9/{k}.png")
    ffhq = folder / "ffhq"
    shutil.copytree(demo_root / "ffhq/thumbnails128x128", ffhq)
    (ffhq / "00000/00998.png").write_bytes(b"")
    (ffhq / "00000/00999.png").write_bytes(good[:100])
    return digiface, ffhq


def configure(folder: Path, demo_root: Path, digiface: Path, ffhq: Path, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_demo_config(
        folder,
        demo_root,
        **{
            "demo": None,
            "digiface.root": str(digiface),
            "digiface.selection": {"mode": "range", "start": 0, "count": IDENTITIES},
            "ffhq.root": str(ffhq),
            "ffhq.count": None,
            **FAST,
            **overrides,
        },
    )


def watching_listings(log: Path, *folders: Path) -> dict[str, str]:
    """The environment under which every Python process of a run logs each listing it makes of
    a folder under `folders` to `log` (tests/listings/sitecustomize.py)."""
    path = os.pathsep.join(
        filter(None, [str(REPO / "tests/listings"), os.environ.get("PYTHONPATH")])
    )
    watched = os.pathsep.join(str(folder.resolve()) for folder in folders)
    return {"PYTHONPATH": path, "DIGI2REAL_LISTINGS": str(log), "DIGI2REAL_WATCHED": watched}


def copy_run(run: Path, folder: Path) -> Path:
    """A copy of a finished run, Snakemake's metadata and file times included."""
    shutil.copytree(run, folder, symlinks=True, dirs_exist_ok=True)
    return folder


def remove_generation(workdir: Path) -> None:
    """Back to the state before any generation job ran: the plans and Δ stay."""
    results = workdir / "results"
    for name in ("shards", "export"):
        shutil.rmtree(results / name)
    for name in ("manifest.parquet", "manifest.csv", "dataset_card.json", "samples.png"):
        (results / name).unlink()


def stored(results: Path, row: dict, column: str = "aligned_path") -> bytes:
    """An image of a manifest row, from its shard's archive (read with the standard library)."""
    with zipfile.ZipFile(results / row["archive"]) as archive:
        return archive.read(row[column])


def read_table(path: Path) -> list[dict]:
    """Rows with NaN spelt "nan", so that equal manifests compare equal."""
    return [
        {k: "nan" if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()}
        for row in pq.read_table(path).to_pylist()
    ]


def generate_logs(workdir: Path) -> str:
    return "".join(p.read_text() for p in sorted((workdir / "results/logs/generate").glob("*.log")))


def reused_and_made(workdir: Path) -> tuple[int, int]:
    """Images reused and generated by the last generation jobs, from their logs."""
    import re

    reused = r"(\d+) of \d+ images reused \(their keys match[^)]*\), (\d+) to generate"
    counts = re.findall(reused, generate_logs(workdir))
    return sum(int(r) for r, _ in counts), sum(int(m) for _, m in counts)


def raw_images(workdir: Path) -> dict[tuple[str, int], bytes]:
    rows = read_table(workdir / "results/manifest.parquet")
    return {
        (r["identity"], r["image_index"]): stored(workdir / "results", r, "raw_path")
        for r in rows
        if r["raw_path"]
    }


def change_config(workdir: Path, dotted: str, value) -> None:
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    # reused_and_made reads the next run's
    shutil.rmtree(workdir / "results/logs/generate", ignore_errors=True)


GENERATED = 8 * IMAGES_PER_IDENTITY  # identities 8 and 9 are skipped (no usable source image)
