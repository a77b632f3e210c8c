"""Benchmarks of the issues' targets; prints what it measured. Not a test: machines are noisy.

    python scripts/benchmark.py [--only NAME,NAME,...]   (all of the names below by default)

face:       decode + detect + align + embed per image (tiny ONNX models, CPU)
projection: ArcFace -> CLIP prompt embeddings per second (tiny encoder, CPU)
generation: seconds per image with the tiny UNet/VAE (CPU), at the demo's and SD's sizes
dryrun:     `snakemake -n` on 20,000 identities x 20 images in 200 shards (synthetic root)
aggregate:  aggregation of 400,000 manifest rows (wall time and peak memory)
leakage:    nearest-gallery search (digi2real.evaluation.nearest), 40,000 images against
            70,000 gallery embeddings: seconds per 10^9 pairs, and what 400,000 images take
exports:    each export (RecordIO, WebDataset, ImageFolder) of 400,000 passed 112x112 crops in
            200 shards (1,000 distinct demo faces, each file its own copy): seconds and peak
            memory of each, in its own process, and files and bytes per 1,000 images
evaluate:   the `evaluate` stage on the files of 400,000 images of 20,000 identities against
            70,000 real faces, in a child process: wall time and peak memory

Generation on a real GPU with the real models: run one shard first, exactly one generation job
and what it needs (README, "Sizing shards"):
    snakemake --profile slurm --configfile my.yaml results/shards/0/manifest.parquet
then divide the seconds in results/benchmarks/generate/0.tsv by the shard's images.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(function, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def bench_face(demo: Path) -> None:
    from digi2real import models
    from digi2real.faces import FacePipeline

    paths = sorted((demo / "digiface").glob("*/*.png")) * 4
    providers = ["CPUExecutionProvider"]
    for det_size in (128, 640):
        pipeline = FacePipeline(
            models.load_detector(demo / "models/antelopev2/scrfd_10g_bnkps.onnx", providers),
            models.load_recognizer(demo / "models/arc2face/arcface.onnx", providers),
            det_size=det_size,
            batch_size=64,
        )
        list(pipeline.process_paths(paths[:8]))  # warm-up: sessions per input size
        seconds = timed(lambda p=pipeline: list(p.process_paths(paths)))
        print(
            f"face pipeline, det_size {det_size}: {1000 * seconds / len(paths):.2f} ms/image "
            f"({len(paths)} images, decode+detect+align+embed)"
        )


def bench_projection(demo: Path) -> None:
    import torch

    from digi2real import models
    from digi2real.projection import Arc2FaceProjector

    projector = Arc2FaceProjector(
        models.load_text_encoder(demo / "models/arc2face/encoder"),
        models.load_tokenizer(demo / "models/sd15/tokenizer"),
    )
    for batch in (1, 64):
        faces = torch.randn(batch, 512)
        seconds = timed(lambda f=faces: projector.project(f))
        print(f"projection, batch {batch}: {batch / seconds:.0f} embeddings/s (tiny encoder)")


def bench_generation(demo: Path) -> None:
    from digi2real.config import resolve_config
    from digi2real.generation import Arc2FaceGenerator, GenerationSettings, build_pipeline

    m = demo / "models"
    given = {
        "models": {
            "arc2face_encoder": str(m / "arc2face/encoder"),
            "arc2face_unet": str(m / "arc2face/arc2face"),
            "vae": str(m / "sd15/vae"),
            "tokenizer": str(m / "sd15/tokenizer"),
            "scheduler": str(m / "sd15/scheduler"),
        }
    }
    for size in (128, 512):
        given["generation"] = {"height": size, "width": size, "device": "cpu", "batch_size": 4}
        config = resolve_config(given)
        settings = GenerationSettings.from_config(config)
        generator = Arc2FaceGenerator(build_pipeline(config, settings), settings, None)
        conditions = np.eye(4, 512, dtype=np.float32)
        seconds = timed(lambda g=generator, c=conditions: g.generate(c, [1, 2, 3, 4]), repeat=2)
        print(f"generation {size}x{size}, 25 steps, batch 4: {seconds / 4:.2f} s/image (tiny, CPU)")


def bench_dryrun(folder: Path, demo: Path) -> None:
    import yaml

    root = folder / "digiface_20k"
    for identity in range(20_000):
        (root / str(identity)).mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "demo.yaml").read_text().replace("demo/", f"{demo}/"))
    config.update(demo=None, results=str(folder / "results"))
    config["digiface"].update(root=str(root), selection={"mode": "range", "start": 0})
    config["digiface"]["identities_per_embed_shard"] = 1000
    config["ffhq"].update(count=None, images_per_embed_shard=1000)  # the demo's 24
    config["plan"].update(images_per_identity=20, identities_per_shard=100)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(folder),
        "--configfile",
        str(folder / "config.yaml"),
    ]
    started = time.perf_counter()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - started
    jobs = output.split("Job stats:")[1].split("total")[1].split()[0]
    print(f"snakemake -n, 20,000 identities x 20 images, 200 shards: {seconds:.1f} s ({jobs} jobs)")


def bench_aggregate(folder: Path) -> None:
    """Run in a child process, so that its peak RSS is the aggregation's own."""
    subprocess.run([sys.executable, __file__, "--aggregate-child", str(folder)], check=True)


def write_fake_shards(results: Path, shards: int = 200, rows: int = 2000) -> list[Path]:
    import pyarrow as pa

    from digi2real.formats import (
        EMBEDDINGS,
        GeneratedEmbeddings,
        write_generated_embeddings,
        write_manifest,
    )

    rng = np.random.default_rng(0)
    manifests = []
    for shard in range(shards):
        identity = [str(shard * 100 + k // 20) for k in range(rows)]
        index = [k % 20 for k in range(rows)]
        ok = rng.random(rows) > 0.05
        table = pa.table(
            {
                "identity": identity,
                "image_index": pa.array(index, pa.int32()),
                "shard": pa.array([shard] * rows, pa.int32()),
                "seed": rng.integers(0, 2**62, rows),
                "t": rng.random(rows),
                "source_image": [f"{i}/0.png" for i in identity],
                "status": ["ok" if o else "no_face" for o in ok],
                "message": [""] * rows,
                "raw_path": [f"raw/{i}/{k}.png" for i, k in zip(identity, index, strict=True)],
                "aligned_path": [
                    f"aligned/{i}/{k}.png" if o else ""
                    for i, k, o in zip(identity, index, ok, strict=True)
                ],
                "det_score": pa.array(rng.random(rows), pa.float32()),
                "cos_prototype": pa.array(rng.random(rows), pa.float32()),
                "cos_condition": pa.array(rng.random(rows), pa.float32()),
                "image_key": [f"{shard}-{k}" for k in range(rows)],
            }
        )
        path = results / "shards" / str(shard) / "manifest.parquet"
        write_manifest(table, path)
        faces = np.flatnonzero(ok)
        embedding = rng.normal(size=(len(faces), 512)).astype(np.float32)
        write_generated_embeddings(
            path.parent / EMBEDDINGS,
            GeneratedEmbeddings(
                identity=[identity[k] for k in faces],
                image_index=np.asarray([index[k] for k in faces], np.int32),
                embedding=embedding / np.linalg.norm(embedding, axis=1, keepdims=True),
                landmarks=np.zeros((len(faces), 5, 2), np.float32),
            ),
        )
        for i, k, o in zip(identity, index, ok, strict=True):
            if o:
                (path.parent / "aligned" / i).mkdir(parents=True, exist_ok=True)
                (path.parent / "aligned" / i / f"{k}.png").write_bytes(b"png")
        manifests.append(path)
    return manifests


def aggregate_child(folder: Path) -> None:
    from digi2real.stages import aggregate

    results = folder / "aggregate"
    manifests = write_fake_shards(results)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    config = {
        "quality": {
            "min_det_score": 0.5,
            "min_cos_prototype": 0.0,
            "min_images_per_identity": 1,
            "max_real_similarity": None,
            "max_identity_similarity": None,
        }
    }
    aggregate.run(
        config,
        results,
        manifests,
        results / "manifest.parquet",
        results / "generated.h5",
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"aggregate 400,000 rows in 200 shard manifests: {seconds:.1f} s, "
        f"peak RSS {peak:.0f} MB ({before:.0f} MB before aggregating)"
    )


def bench_leakage() -> None:
    from digi2real.evaluation import nearest, unit

    rng = np.random.default_rng(0)
    queries = unit(rng.normal(size=(40_000, 512)).astype(np.float32))
    gallery = unit(rng.normal(size=(70_000, 512)).astype(np.float32))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = timed(lambda: nearest(queries, gallery), repeat=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_billion = seconds / (len(queries) * len(gallery) / 1e9)
    print(
        f"nearest gallery face, 40,000 x 70,000 pairs: {seconds:.1f} s, {per_billion:.2f} s per "
        f"10^9 pairs, peak RSS {peak:.0f} MB ({before:.0f} MB before); at that rate 400,000 "
        f"images take {per_billion * 28:.0f} s against 70,000 and {per_billion * 200:.0f} s "
        "against a 500,000-image gallery"
    )


def evaluate_child(folder: Path) -> None:
    """The `evaluate` stage on files of a 20,000-identity run: 400,000 passed images (each an
    identity direction plus noise: genuine cosines near 0.5, as in a real FR set), 70,000 real
    faces, 100,000 DigiFace source rows, 200 plan shards. Files are written first; the wall
    time and peak memory are the stage's alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from digi2real.evaluation import unit
    from digi2real.formats import (
        EmbeddingTable,
        GeneratedEmbeddings,
        ShardPlan,
        write_embeddings,
        write_generated_embeddings,
        write_plan,
    )

    rng = np.random.default_rng(0)
    identities, per_identity, real, shards = 20_000, 20, 70_000, 200
    names = [str(k) for k in range(identities)]
    centres = unit(rng.normal(size=(identities, 512)).astype(np.float32))
    embedding = np.repeat(centres, per_identity, axis=0)
    embedding += rng.normal(scale=0.045, size=embedding.shape).astype(np.float32)
    labels = [name for name in names for _ in range(per_identity)]
    index = np.tile(np.arange(per_identity, dtype=np.int32), identities)
    write_generated_embeddings(
        folder / "generated.h5",
        GeneratedEmbeddings(
            labels,
            index,
            unit(embedding),
            rng.normal(50, 5, (len(labels), 5, 2)).astype(np.float32),
            np.ones(len(labels), bool),
        ),
    )
    del embedding
    n = len(labels)
    pq.write_table(
        pa.table(
            {
                "identity": labels,
                "image_index": index,
                "status": ["ok"] * n,
                "passed": [True] * n,
                "reject_reason": [""] * n,
            }
        ),
        folder / "manifest.parquet",
    )

    def embeddings_file(path: Path, vectors: np.ndarray, identity: list[str]) -> None:
        rows = len(vectors)
        write_embeddings(
            path,
            EmbeddingTable(
                vectors,
                np.zeros(rows, np.int8),
                identity,
                [f"{k}.png" for k in range(rows)],
                np.ones(rows, np.float32),
                [""] * rows,
                {"dataset": path.stem, "arcface_sha256": "0" * 64},
            ),
        )

    embeddings_file(folder / "ffhq.h5", unit(rng.normal(size=(real, 512))), [""] * real)
    sources = np.repeat(centres, 5, axis=0) + rng.normal(scale=0.03, size=(5 * identities, 512))
    embeddings_file(folder / "digiface.h5", unit(sources), [n for n in names for _ in range(5)])
    per_shard = identities // shards
    plans = []
    for shard in range(shards):
        chosen = names[shard * per_shard : (shard + 1) * per_shard]
        plan = ShardPlan(
            shard=shard,
            identities=chosen,
            prototypes=list(centres[shard * per_shard : (shard + 1) * per_shard]),
            n_sources_ok=[5] * len(chosen),
            identity_status=["planned"] * len(chosen),
            identity_reason=[""] * len(chosen),
        )
        plans.append(folder / f"plan_{shard}.h5")
        write_plan(plans[-1], plan)
    del sources, centres
    config = {
        "seed": 0,
        "evaluation": {
            "recognizer": None,
            "leak_threshold": 0.5,
            "collision_threshold": 0.5,
            "top_pairs": 1000,
            "exhaustive_impostors_up_to": 20_000,
            "impostor_sample": 2_000_000,
        },
    }
    # The stage as the workflow runs it: its own process, whose peak memory is its own.
    command = [sys.executable, "-m", "digi2real", "evaluate", "--config", json.dumps(config)]
    command += ["--manifest", str(folder / "manifest.parquet")]
    command += ["--generated", str(folder / "generated.h5")]
    command += ["--digiface", str(folder / "digiface.h5"), "--ffhq", str(folder / "ffhq.h5")]
    command += ["--plans", *map(str, plans), "--out", str(folder / "evaluation.json")]
    command += ["--tables", str(folder / "evaluation")]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    pairs = n * real + identities * real * 2  # images and centres, and the sources
    verify = json.loads((folder / "evaluation.json").read_text())["generated"]["verification"]
    print(
        f"evaluate 400,000 images of 20,000 identities against 70,000 real faces: {seconds:.0f} s, "
        f"{seconds / (pairs / 1e9):.2f} s per 10^9 real-face pairs overall, peak RSS "
        f"{peak:.0f} MB; genuine mean {verify['genuine_mean']:.3f}, impostor mean "
        f"{verify['impostor_mean']:.3f}, EER {verify['eer']:.4f}"
    )


def bench_exports(folder: Path, images: int = 400_000, shards: int = 200) -> None:
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from digi2real.demo import draw_face

    results = folder / "exports"
    faces = []
    for k in range(1000):  # aligned crops: the demo's faces are drawn at the template
        path = folder / f"face{k}.png"
        draw_face(k // 10, k % 10, seed=1).save(path)
        faces.append(path)
    per_identity = 20
    rows = {"identity": [], "image_index": [], "aligned_path": [], "passed": []}
    for n in range(images):
        identity, index = str(n // per_identity), n % per_identity
        relative = f"shards/{n * shards // images}/aligned/{identity}/{index}.png"
        target = results / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(faces[n % len(faces)], target)
        for key, value in zip(rows, (identity, index, relative, True), strict=True):
            rows[key].append(value)
    rows.update(seed=list(range(images)), t=[0.5] * images, det_score=[0.9] * images)
    rows["cos_prototype"] = [0.6] * images
    pq.write_table(pa.table(rows), results / "manifest.parquet")
    crops = sum(p.stat().st_size for p in (results / "shards").rglob("*.png"))
    print(
        f"{images} crops as loose PNG files: {images} files, {crops / images * 1000:,.0f} bytes "
        "per 1,000 images"
    )
    config = {"seed": 0, "export": {"jpeg_quality": 95, "samples_per_tar": 10000}}
    for name, keys in (
        ("recordio", ["export"]),
        ("webdataset", ["seed", "export"]),
        ("imagefolder", []),
    ):
        given = {key: config[key] for key in keys}
        if name == "recordio":
            given = {"export": {"jpeg_quality": 95}}
        out = results / "export" / name
        command = [
            sys.executable,
            "-m",
            "digi2real",
            f"export-{name}",
            "--config",
            json.dumps(given),
        ]
        command += ["--results", str(results), "--manifest", str(results / "manifest.parquet")]
        command += ["--out", str(out)]
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        assert status == 0, f"export-{name} failed"
        files = [p for p in out.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        print(
            f"export {name}: {seconds:.0f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MB, "
            f"{len(files)} files, {size / images * 1000:,.0f} bytes per 1,000 images"
        )


def bench_evaluate(folder: Path) -> None:
    (folder / "evaluate").mkdir()
    subprocess.run(
        [sys.executable, __file__, "--evaluate-child", str(folder / "evaluate")], check=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--only", default="face,projection,generation,dryrun,aggregate,leakage,exports,evaluate"
    )
    parser.add_argument("--aggregate-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--evaluate-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evaluate_child:
        evaluate_child(args.evaluate_child)
        return
    if args.aggregate_child:
        aggregate_child(args.aggregate_child)
        return
    wanted = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        from digi2real.demo import build_demo_assets

        demo = folder / "demo"
        build_demo_assets(demo)
        benches = {
            "face": lambda: bench_face(demo),
            "projection": lambda: bench_projection(demo),
            "generation": lambda: bench_generation(demo),
            "dryrun": lambda: bench_dryrun(folder / "dryrun", demo),
            "aggregate": lambda: bench_aggregate(folder),
            "leakage": bench_leakage,
            "exports": lambda: bench_exports(folder),
            "evaluate": lambda: bench_evaluate(folder),
        }
        for name, bench in benches.items():
            if name in wanted:
                bench()


if __name__ == "__main__":
    main()
