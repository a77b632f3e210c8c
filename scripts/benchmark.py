"""Benchmarks of the issues' targets; prints what it measured. Not a test: machines are noisy.

    python scripts/benchmark.py [--only NAME,NAME,...]   (all of the names below by default)

face:       decode + detect + align + embed per image (tiny ONNX models, CPU)
projection: ArcFace -> CLIP prompt embeddings per second (tiny encoder, CPU)
generation: seconds per image with the tiny UNet/VAE (CPU), at the demo's and SD's sizes
dryrun:     `snakemake -n` on 20,000 identities x 20 images in 200 shards (synthetic root)
aggregate:  aggregation of 400,000 manifest rows (wall time and peak memory)
leakage:    nearest-gallery search (digi2real.evaluation.nearest), 40,000 images against
            70,000 gallery embeddings: seconds per 10^9 pairs, and what 400,000 images take
image-formats: bytes per image of the raw 512x512 image and the 112x112 crop in each format
            `images:` offers, on real photographs (matplotlib's grace_hopper, and scikit-image's
            astronaut when scikit-image is installed), and what a 400,000-image run stores
exports:    400,000 passed 112x112 crops (1,000 distinct crops of real photographs) as loose
            files in 200 shards, then packed into each shard's archive: files, bytes per 1,000
            images and seconds of packing; then each export (RecordIO, WebDataset,
            ImageFolder) from the archives: seconds and peak memory of each, in its own
            process, and files and bytes per 1,000 images
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
    from digi2real.models import ModelPaths

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
        generator = Arc2FaceGenerator(
            build_pipeline(ModelPaths.from_config(config, *settings.models()), settings),
            settings,
            None,
        )
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

    from digi2real.shard_store import (
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
                "archive": ["images.zip"] * rows,
                "raw_path": [f"raw/{i}/{k}.jpg" for i, k in zip(identity, index, strict=True)],
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
    from digi2real.formats import EmbeddingTable, ShardPlan, write_embeddings, write_plan
    from digi2real.shard_store import GeneratedEmbeddings, write_generated_embeddings

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


def real_photographs() -> dict[str, object]:
    """Photographs of real faces that packages ship (PIL images, RGB): matplotlib's Grace
    Hopper always, scikit-image's astronaut (Eileen Collins) when it is installed."""
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as stream:
        photographs = {"grace_hopper": Image.open(stream).convert("RGB")}
    try:
        from skimage import data

        photographs["astronaut"] = Image.fromarray(data.astronaut())
    except ImportError:
        pass
    return photographs


# Where the face is in each photograph: (left, top, right, bottom), measured by eye.
FACE_BOXES = {"grace_hopper": (130, 60, 400, 330), "astronaut": (160, 40, 320, 200)}


def face_crops(count: int) -> list[bytes]:
    """`count` 112x112 PNG crops of the photographs' faces, each box shifted and scaled a
    little (seeded), as the alignment of different images would cut them."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    photographs = list(real_photographs().items())
    crops = []
    for k in range(count):
        name, photograph = photographs[k % len(photographs)]
        left, top, right, bottom = FACE_BOXES[name]
        side = (right - left) * rng.uniform(0.85, 1.15)
        x = left + (right - left - side) / 2 + rng.uniform(-0.08, 0.08) * side
        y = top + (bottom - top - side) / 2 + rng.uniform(-0.08, 0.08) * side
        crop = photograph.resize((112, 112), Image.BICUBIC, box=(x, y, x + side, y + side))
        buffer = io.BytesIO()
        crop.save(buffer, format="PNG")
        crops.append(buffer.getvalue())
    return crops


def bench_image_formats() -> None:
    from PIL import Image

    from digi2real.shard_store import encode_image

    images = 400_000
    raw_sizes: dict[str, list[int]] = {}
    crop_sizes: dict[str, list[int]] = {}
    for name, photograph in real_photographs().items():
        side = min(photograph.size)
        raw = np.asarray(photograph.crop((0, 0, side, side)).resize((512, 512), Image.BICUBIC))
        crop = np.asarray(photograph.resize((112, 112), Image.BICUBIC, box=FACE_BOXES[name]))
        jpegs = [(f"JPEG {quality}", "jpeg", quality) for quality in (85, 90, 95)]
        for label, fmt, quality in [("PNG", "png", 0), *jpegs]:
            raw_sizes.setdefault(label, []).append(len(encode_image(raw, fmt, quality)))
            crop_sizes.setdefault(label, []).append(len(encode_image(crop, fmt, quality)))
        print(f"photograph {name}: {photograph.size[0]}x{photograph.size[1]}")
    for what, sizes in (("raw 512x512", raw_sizes), ("crop 112x112", crop_sizes)):
        for label, values in sizes.items():
            print(f"{what} {label}: {', '.join(f'{v / 1000:.1f}' for v in values)} KB per image")
    for raw_label, crop_label in (("JPEG 90", "PNG"), ("PNG", "PNG"), ("JPEG 90", "JPEG 95")):
        per_image = np.mean(raw_sizes[raw_label]) + np.mean(crop_sizes[crop_label])
        print(
            f"{images:,} images, raw {raw_label} + crop {crop_label}: "
            f"{per_image * images / 1e9:.0f} GB"
        )


def bench_exports(folder: Path, images: int = 400_000, shards: int = 200) -> None:
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from digi2real.shard_store import image_archive

    results = folder / "exports"
    crops = face_crops(1000)
    per_identity = 20
    rows = {"identity": [], "image_index": [], "archive": [], "aligned_path": [], "passed": []}
    for n in range(images):
        identity, index = str(n // per_identity), n % per_identity
        member = f"aligned/{identity}/{index}.png"
        target = results / f"shards/{n * shards // images}" / member
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(crops[n % len(crops)])
        archive = f"shards/{n * shards // images}/images.zip"
        for key, value in zip(rows, (identity, index, archive, member, True), strict=True):
            rows[key].append(value)
    rows.update(seed=list(range(images)), t=[0.5] * images, det_score=[0.9] * images)
    rows["cos_prototype"] = [0.6] * images
    pq.write_table(pa.table(rows), results / "manifest.parquet")
    loose = [p for p in (results / "shards").rglob("*.png")]
    loose_bytes = sum(p.stat().st_size for p in loose)
    print(
        f"{images:,} crops of real photographs, loose PNG files in {shards} shards: "
        f"{len(loose):,} files, {loose_bytes / images * 1000:,.0f} bytes per 1,000 images"
    )
    started = time.perf_counter()
    for shard in sorted((results / "shards").iterdir()):
        members = sorted(p for p in shard.rglob("*.png"))
        with image_archive(shard / "images.zip") as archive:
            for path in members:
                archive.add(str(path.relative_to(shard)), path.read_bytes())
        shutil.rmtree(shard / "aligned")
    seconds = time.perf_counter() - started
    packed = [p for p in (results / "shards").rglob("*") if p.is_file()]
    packed_bytes = sum(p.stat().st_size for p in packed)
    print(
        f"packed into one archive a shard: {len(packed):,} files, "
        f"{packed_bytes / images * 1000:,.0f} bytes per 1,000 images; packing took {seconds:.0f} s "
        "(a real shard adds its manifest, its CSV copy, embeddings.h5 and records.jsonl)"
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
        "--only",
        default="face,projection,generation,dryrun,aggregate,leakage,image-formats,exports,evaluate",
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
            "image-formats": bench_image_formats,
            "exports": lambda: bench_exports(folder),
            "evaluate": lambda: bench_evaluate(folder),
        }
        for name, bench in benches.items():
            if name in wanted:
                bench()


if __name__ == "__main__":
    main()
