"""Rule `report`: the dataset card, the sample grid and the figures of the certificate, each a
file Snakemake's `--report` puts on one page (workflow/report/ holds their captions)."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument
from digi2real.stages.sample_mixin import MIXIN_ARGUMENT, MIXIN_LEAKS_ARGUMENT

CONFIG_KEYS = ["quality", "digiface.root", "ffhq.root", "gallery.root"]
# results/report/<name>.png, in the order the report shows them
FIGURES = ("verification", "leakage", "quality", "pose", "sources", "collisions", "leaks")
ROWS = 8  # identities, pairs or leaks shown in an image grid

HELP = "a sample grid, the certificate and its figures"
ARGUMENTS = (
    Argument("--results", "results folder"),
    Argument("--manifest", "the aggregated manifest.parquet"),
    Argument("--evaluation", "evaluation.json, beside its tables", dest="evaluation_path"),
    Argument("--samples", "sample grid .png to write"),
    Argument("--figures", "folder of the certificate's figures"),
    MIXIN_ARGUMENT,
    MIXIN_LEAKS_ARGUMENT,
)


def run(
    config: Config,
    results: Path,
    manifest: Path,
    evaluation_path: Path,
    samples: Path,
    figures: Path,
    mixin: Path | None = None,
    mixin_leaks: Path | None = None,
) -> None:
    """The sample grid of the aggregated `manifest` into `samples`; the certificate of
    `evaluation_path` (a page and a CSV table) and FIGURES into the folder `figures`; with a
    real-data mix-in (the sample `mixin`), the page says so first."""
    import pyarrow.parquet as pq

    from digi2real import certificate, plots
    from digi2real.dataset import sample_grid
    from digi2real.formats import read_evaluation
    from digi2real.mixin import card_section

    # 1. Inputs: the manifest, the evaluation and its tables.
    table = pq.read_table(manifest)
    evaluation = read_evaluation(evaluation_path)
    tables = evaluation_path.parent / "evaluation"
    images = pq.read_table(tables / "images.parquet")
    sources = pq.read_table(tables / "sources.parquet")
    headline = certificate.headline(evaluation)
    # 2. The certificate, on the page and as a table.
    figures.mkdir(parents=True, exist_ok=True)
    real = card_section(mixin, mixin_leaks)
    write_certificate_page(figures / "certificate.html", headline, evaluation, real)
    write_certificate_table(headline, figures / "certificate.csv")
    # 3. The figures of the measures, then the images behind them.
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
    sample_grid(table, results, samples)


def measures(headline: dict) -> list[tuple[str, object]]:
    """The headline's figures, without its status, recognizer note and verdicts."""
    return [
        (name, value)
        for name, value in headline.items()
        if name not in ("status", "recognizer", "verdicts")
    ]


def write_certificate_table(headline: dict, path: Path) -> None:
    import csv
    import io

    from digi2real import certificate
    from digi2real.atomic import atomic_path

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["measure", "this dataset", "published reference", "verdict"])
    for measure, value in measures(headline):
        shown = f"{value:.4f}" if isinstance(value, float) else ("" if value is None else value)
        verdict = headline["verdicts"].get(measure, "")
        writer.writerow([measure, shown, certificate.reference(measure), verdict])
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue())


def write_certificate_page(
    path: Path, headline: dict, evaluation: dict, mixin: dict | None = None
) -> None:
    from digi2real import certificate
    from digi2real.pages import Table, write_page

    generated = evaluation.get("generated") or {}
    computed = headline["status"] == certificate.COMPUTED
    lead = [
        (
            f"Computed on the {generated.get('images', 0):,} passed images of "
            f"{generated.get('identities', 0):,} identities."
            if computed
            else f"Not computed: {headline['status']}."
        ),
        headline["recognizer"] or "",
    ]
    verdicts = Table(
        "Headline: each measure beside the published figures",
        ["measure", "this dataset", "published", "verdict", "what it is"],
        [
            [
                measure.name,
                headline[measure.name],
                certificate.published(measure),
                headline["verdicts"][measure.name],
                measure.note,
            ]
            for measure in certificate.HEADLINE
        ],
        note="The published figures were measured with other recognizers (an ArcFace R100 "
        "trained on MS1MV3) and other real faces (CASIA-WebFace): they anchor the scale, "
        "they are not a pass mark.",
    )
    judged = {measure.name for measure in certificate.HEADLINE}
    others = Table(
        "Every other measure",
        ["measure", "this dataset", "published"],
        [
            [name, value, certificate.reference(name)]
            for name, value in measures(headline)
            if name not in judged
        ],
    )
    # The measures stay the synthetic identities' alone: the mix-in's real faces are counted
    # here, first, and in no measure.
    warnings = (
        [
            mixin["statement"],
            f"Every measure below is of the synthetic identities alone; the training set also "
            f"holds the {mixin['identities']:,} real identities ({mixin['images']:,} images).",
        ]
        if mixin
        else []
    )
    write_page(path, "Certificate", lead, [verdicts, others], warnings)


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


def sources_by_identity(table) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for identity, path in zip(
        table.column("identity").to_pylist(), table.column("source_image").to_pylist(), strict=True
    ):
        if path and path not in out.setdefault(identity, []):
            out[identity].append(path)
    return out


def sources_beside_generated(table, roots: Roots) -> list:
    """For the first ROWS kept identities: three DigiFace source images, a divider, then five
    passed generated crops (plots.Section)."""
    from digi2real.dataset import passed_by_identity
    from digi2real.plots import Section

    sources = sources_by_identity(table)
    rows = []
    for identity, crops in list(passed_by_identity(table, roots.results).items())[:ROWS]:
        row = [
            (roots.digiface / p, f"identity {identity}\n{p}") for p in sources.get(identity, [])[:3]
        ]
        generated = [(crop, f"identity {identity}\n{crop.member}") for crop in crops[:5]]
        rows.append((row, generated))
    return [Section(("DigiFace source", "generated, passed"), rows)] if rows else []


def colliding_pairs(tables: Path, table, roots: Roots) -> list:
    """The most similar generated identity pairs (two crops each), then the most similar
    DigiFace source pairs (two source images each), each image labelled with its identity and
    the pair's cosine, a divider between the two identities of a pair (plots.Section)."""
    import pyarrow.parquet as pq

    from digi2real.dataset import passed_by_identity
    from digi2real.plots import Section, pair_label

    crops = passed_by_identity(table, roots.results)
    sources = {
        identity: [roots.digiface / path for path in paths]
        for identity, paths in sources_by_identity(table).items()
    }
    # Identities the plan dropped have no rows with source images: their first usable one.
    for entry in pq.read_table(tables / "sources.parquet").to_pylist():
        if not sources.get(entry["identity"]) and entry["source_image"]:
            sources[entry["identity"]] = [roots.digiface / entry["source_image"]]
    sections = []
    for name, images, kind in (
        ("pairs", crops, "generated"),
        ("source_pairs", sources, "DigiFace source"),
    ):
        pairs = pq.read_table(tables / f"{name}.parquet").slice(0, ROWS // 2).to_pylist()
        rows = [
            tuple(
                [
                    (image, pair_label(pair[side], pair["cosine"]))
                    for image in images.get(pair[side], [])[:2]
                ]
                for side in ("identity_a", "identity_b")
            )
            for pair in pairs
        ]
        sections.append(
            Section(
                (f"identity A: {kind}", f"identity B: {kind}"),
                rows,
                title=f"most similar {kind} identity pairs",
            )
        )
    return sections if any(section.rows for section in sections) else []


def leaks(tables: Path, table, roots: Roots) -> list:
    """The identities closest to a real face, generated and DigiFace source: a face of the
    identity labelled with the cosine, a divider, the real face it is nearest to labelled with
    its path (plots.Section)."""
    import pyarrow.parquet as pq

    from digi2real.dataset import passed_by_identity
    from digi2real.plots import Section, pair_label

    crops = passed_by_identity(table, roots.results)
    sections = []
    for name, kind in (("identities", "generated"), ("sources", "DigiFace source")):
        listed = pq.read_table(tables / f"{name}.parquet").to_pylist()
        listed = [row for row in listed if row.get("nearest_real")]
        listed.sort(key=lambda row: -(row["nearest_real_cos"] or -2))
        rows = []
        for entry in listed[: ROWS // 2]:
            identity, cosine = entry["identity"], entry["nearest_real_cos"]
            if name == "identities":
                faces = crops.get(identity, [])[:2]
            else:
                faces = [roots.digiface / entry["source_image"]] if entry["source_image"] else []
            row = [(face, pair_label(identity, cosine)) for face in faces]
            rows.append((row, [(roots.real(entry["nearest_real"]), entry["nearest_real"])]))
        sections.append(
            Section((kind, "nearest real face"), rows, title=f"{kind} faces nearest to a real face")
        )
    return sections if any(section.rows for section in sections) else []
