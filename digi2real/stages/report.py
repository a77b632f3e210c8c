"""Rule `report`: the dataset card, the sample grid and the figures of the certificate, each a
file Snakemake's `--report` puts on one page (workflow/report/ holds their captions)."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config

CONFIG_KEYS = [
    "seed",
    "models",
    "digiface",
    "ffhq",
    "gallery",
    "delta",
    "plan",
    "generation",
    "quality",
    "evaluation",
    "export.formats",
]
# results/report/<name>.png, in the order the report shows them
FIGURES = ("verification", "leakage", "quality", "pose", "sources", "collisions", "leaks")
ROWS = 8  # identities, pairs or leaks shown in an image grid
# Published figures to read ours against (an ArcFace R100 trained on MS1MV3, from the
# Beyond-Real-Faces study; nearest real face searched in CASIA-WebFace).
REFERENCES = {
    "verification EER (%)": "Digi2Real-20K 1.07, DigiFace-1M 3.92",
    "Fisher discriminant ratio": "Digi2Real-20K 15.04, DigiFace-1M 6.70",
    "genuine mean cosine": "Digi2Real-20K 0.644",
    "impostor mean cosine": "Digi2Real-20K 0.024",
    "nearest real face, p99": "Digi2Real-20K 0.461; Vec2Face (leaking) 0.808",
    "nearest real face, max": "Digi2Real-20K 0.565; Vec2Face (leaking) 0.909",
}


def run(
    config: Config,
    results: Path,
    manifest: Path,
    models_path: Path,
    evaluation_path: Path,
    out: Path,
    samples: Path,
    figures: Path,
) -> dict:
    """The card of the aggregated `manifest` into `out` (JSON), with the model hashes of
    `models_path` and the headline of the evaluation; the sample grid into `samples`; the
    certificate table and FIGURES into the folder `figures`."""
    import time

    import pyarrow.parquet as pq

    from digi2real import plots
    from digi2real.dataset import dataset_card, sample_grid
    from digi2real.formats import read_evaluation, read_model_hashes, write_card

    started = time.monotonic()
    table = pq.read_table(manifest)
    evaluation = read_evaluation(evaluation_path)
    tables = evaluation_path.parent / "evaluation"
    images = pq.read_table(tables / "images.parquet")
    sources = pq.read_table(tables / "sources.parquet")
    content = dataset_card(table, config, read_model_hashes(models_path))
    content["certificate"] = certificate(evaluation)
    content["job_seconds"] = job_seconds(results / "benchmarks")
    content["storage"] = storage(results, config["export"]["formats"], content["passed_images"])

    figures.mkdir(parents=True, exist_ok=True)
    plots.verification_plot(evaluation, figures / "verification.png")
    nearest = sources.column("nearest_real_cos").to_numpy(zero_copy_only=False).astype(float)
    plots.leakage_plot(evaluation, nearest, figures / "leakage.png")
    plots.quality_plot(table, config["quality"], figures / "quality.png")
    plots.pose_plot(images, figures / "pose.png")
    gallery = config["gallery"]["root"]
    roots = Roots(
        results,
        Path(config["digiface"]["root"]),
        Path(config["ffhq"]["root"]),
        Path(gallery) if gallery else None,
    )
    plots.image_rows(
        sources_beside_generated(table, roots), figures / "sources.png", "no passed images"
    )
    plots.image_rows(
        colliding_pairs(tables, table, roots), figures / "collisions.png", "no identity pairs"
    )
    plots.image_rows(leaks(tables, table, roots), figures / "leaks.png", "no real faces")
    write_certificate_table(content["certificate"], figures / "certificate.csv")
    sample_grid(table, results, samples)
    write_card(out, content)
    content["report_seconds"] = time.monotonic() - started
    return content


def certificate(evaluation: dict) -> dict:
    """The evaluation's headline figures (null where the dataset has too little to measure)."""
    generated = evaluation.get("generated") or {}
    verify = generated.get("verification") or {}
    leakage = generated.get("leakage") or {}
    sources = evaluation.get("sources") or {}
    return {
        "status": evaluation.get("status"),
        "recognizer": evaluation.get("recognizer", {}).get("note"),
        "verification EER (%)": None if verify.get("eer") is None else 100 * verify["eer"],
        "FNMR at FMR 1e-3": (verify.get("fnmr_at_fmr") or {}).get("0.001"),
        "Fisher discriminant ratio": verify.get("fdr"),
        "genuine mean cosine": verify.get("genuine_mean"),
        "impostor mean cosine": verify.get("impostor_mean"),
        "consistency at 0.3": (generated.get("consistency") or {}).get("share_at", {}).get("0.3"),
        "uniqueness U_class at 0.3": (generated.get("uniqueness") or {})
        .get("0.3", {})
        .get("u_class"),
        "nearest real face, p99": (leakage.get("images") or {}).get("p99"),
        "nearest real face, max": (leakage.get("images") or {}).get("max"),
        "identities flagged as leaks": (leakage.get("identities") or {}).get("flagged"),
        "identities flagged as collisions": (generated.get("uniqueness") or {}).get(
            "flagged_identities"
        ),
        "DigiFace sources flagged as leaks": (sources.get("leakage") or {}).get("flagged"),
        "DigiFace source pairs flagged as collisions": (sources.get("uniqueness") or {}).get(
            "flagged_pairs"
        ),
    }


def write_certificate_table(headline: dict, path: Path) -> None:
    import csv
    import io

    from digi2real.atomic import atomic_path

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["measure", "this dataset", "published reference"])
    for measure, value in headline.items():
        shown = f"{value:.4f}" if isinstance(value, float) else ("" if value is None else value)
        writer.writerow([measure, shown, REFERENCES.get(measure, "")])
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue())


def storage(results: Path, formats: list[str], passed: int) -> dict:
    """Files and bytes of the generation shards and of each export, and bytes per passed image:
    what a run costs a cluster's file-count and space quotas."""
    import os

    def usage(folder: Path) -> dict:
        files = [Path(root, name) for root, _, names in os.walk(folder) for name in names]
        size = sum(path.stat().st_size for path in files)
        per_image = round(size / passed) if passed else None
        return {"files": len(files), "bytes": size, "bytes_per_passed_image": per_image}

    return {
        "shards": usage(results / "shards"),
        **{f"export/{name}": usage(results / "export" / name) for name in formats},
    }


def job_seconds(benchmarks: Path) -> dict:
    """Seconds each rule's jobs ran, summed over its jobs, from their benchmark files: the
    compute a run took, without the idle time between separate snakemake invocations."""
    import csv

    totals: dict[str, float] = {}
    for path in sorted(benchmarks.rglob("*.tsv")):
        rule = path.relative_to(benchmarks).parts[0].removesuffix(".tsv")
        with open(path, newline="") as stream:
            rows = list(csv.DictReader(stream, delimiter="\t"))
        if rows and rows[-1].get("s") not in (None, "", "NA"):
            totals[rule] = totals.get(rule, 0.0) + float(rows[-1]["s"])
    return {
        "by_rule": {rule: round(s, 1) for rule, s in totals.items()},
        "total": round(sum(totals.values()), 1),
    }


class Roots:
    """Where the report finds each kind of image it shows."""

    def __init__(self, results: Path, digiface: Path, ffhq: Path, gallery: Path | None) -> None:
        self.results, self.digiface = results, digiface
        self.real_roots = {"ffhq": ffhq, "gallery": gallery}

    def real(self, label: str) -> Path | None:
        """The file of a real face labelled `<dataset>:<path>` (see formats.read_real_faces)."""
        kind, _, path = label.partition(":")
        root = self.real_roots.get(kind)
        return root / path if root is not None and path else None


def _sources_by_identity(table) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for identity, path in zip(
        table.column("identity").to_pylist(), table.column("source_image").to_pylist(), strict=True
    ):
        if path and path not in out.setdefault(identity, []):
            out[identity].append(path)
    return out


def sources_beside_generated(table, roots: Roots) -> list:
    """For the first ROWS kept identities: three DigiFace source images, then five passed
    generated crops."""
    from digi2real.dataset import passed_by_identity

    sources = _sources_by_identity(table)
    rows = []
    for identity, crops in list(passed_by_identity(table, roots.results).items())[:ROWS]:
        row = [(roots.digiface / p, f"{identity} source") for p in sources.get(identity, [])[:3]]
        row += [(crop, f"{identity} generated") for crop in crops[:5]]
        rows.append(row)
    return rows


def colliding_pairs(tables: Path, table, roots: Roots) -> list:
    """The most similar generated identity pairs (two crops each), then the most similar
    DigiFace source pairs (two source images each), labelled with their cosine."""
    import pyarrow.parquet as pq

    from digi2real.dataset import passed_by_identity

    crops = passed_by_identity(table, roots.results)
    sources = {
        identity: [roots.digiface / path for path in paths]
        for identity, paths in _sources_by_identity(table).items()
    }
    # Identities the plan dropped have no rows with source images: their first usable one.
    for entry in pq.read_table(tables / "sources.parquet").to_pylist():
        if not sources.get(entry["identity"]) and entry["source_image"]:
            sources[entry["identity"]] = [roots.digiface / entry["source_image"]]
    rows = []
    for name, images in (("pairs", crops), ("source_pairs", sources)):
        pairs = pq.read_table(tables / f"{name}.parquet").slice(0, ROWS // 2).to_pylist()
        for pair in pairs:
            row = []
            for side in ("identity_a", "identity_b"):
                identity = pair[side]
                for image in images.get(identity, [])[:2]:
                    row.append((image, f"{identity} {pair['cosine']:.3f}"))
            rows.append(row)
    return rows


def leaks(tables: Path, table, roots: Roots) -> list:
    """The identities closest to a real face, generated and DigiFace source: a face of the
    identity beside the real face it is nearest to, labelled with the cosine."""
    import pyarrow.parquet as pq

    from digi2real.dataset import passed_by_identity

    crops = passed_by_identity(table, roots.results)
    rows = []
    for name in ("identities", "sources"):
        listed = pq.read_table(tables / f"{name}.parquet").to_pylist()
        listed = [row for row in listed if row.get("nearest_real")]
        listed.sort(key=lambda row: -(row["nearest_real_cos"] or -2))
        for entry in listed[: ROWS // 2]:
            identity, cosine = entry["identity"], entry["nearest_real_cos"]
            if name == "identities":
                faces = crops.get(identity, [])[:2]
            else:
                faces = [roots.digiface / entry["source_image"]] if entry["source_image"] else []
            row = [(face, f"{identity} {cosine:.3f}") for face in faces]
            row.append((roots.real(entry["nearest_real"]), entry["nearest_real"]))
            rows.append(row)
    return rows
