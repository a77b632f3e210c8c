"""Rule `export_digiface`: the baseline's training set (train.baseline: digiface), the DigiFace
source images of the identities the dataset kept, as RecordIO with the dataset's labels, so
that the same recipe trains on the realism transfer's own input."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS: list[str] = ["export.jpeg_quality"]

HELP = "the DigiFace sources of the dataset's identities as recordio (the baseline)"
ARGUMENTS = (
    Argument("--index", "index/digiface.parquet, the selected identities' images"),
    Argument("--manifest", "the aggregated manifest.parquet: which identities were kept"),
    Argument("--out", "baseline/digiface/export/recordio folder to write"),
)


def run(config: Config, index: Path, manifest: Path, out: Path) -> None:
    """Every source image of each identity with a passed image in `manifest`, labelled as the
    dataset's exports label it (kept identities in manifest order), into the folder `out`."""
    import csv
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    from digi2real.atomic import atomic_folder
    from digi2real.errors import DataError
    from digi2real.exports import SYNTHETIC, Classes, write_labelled_recordio
    from digi2real.face_tensors import FACE_SIZE
    from digi2real.faces import UnreadableImage, read_image
    from digi2real.formats import read_index
    from digi2real.progress import log

    # 1. The dataset's identities, in its label order, and their DigiFace images.
    passed = pq.read_table(manifest, columns=["identity", "passed"]).to_pydict()
    kept = [i for i, ok in zip(passed["identity"], passed["passed"], strict=True) if ok]
    identities = list(dict.fromkeys(kept))
    sources = read_index(index)
    images_of: dict[str, list[str]] = {}
    for identity, path in zip(sources.identity, sources.path, strict=True):
        images_of.setdefault(identity, []).append(path)
    quality = config["export"]["jpeg_quality"]

    skipped: list[tuple[str, str]] = []  # (image, why): unreadable sources, listed not lost

    def labelled_jpegs():
        for label, identity in enumerate(identities):
            for relative in images_of.get(identity, []):
                path = Path(sources.root) / relative
                try:
                    pixels = read_image(path)  # any mode a download holds (RGBA, 16-bit, ...)
                except UnreadableImage as error:
                    skipped.append((relative, str(error)))
                    continue
                if pixels.shape[:2] != (FACE_SIZE, FACE_SIZE):
                    raise DataError(
                        f"{path}: {pixels.shape[1]}x{pixels.shape[0]}; the DigiFace baseline "
                        f"trains on DigiFace-1M's aligned {FACE_SIZE}x{FACE_SIZE} release"
                    )
                buffer = io.BytesIO()
                Image.fromarray(pixels[..., ::-1]).save(buffer, format="JPEG", quality=quality)
                yield label, buffer.getvalue()

    # 2. The export, built aside and renamed into place.
    with atomic_folder(out) as staging:
        classes = Classes(identities, [SYNTHETIC] * len(identities))
        write_labelled_recordio(staging, classes, labelled_jpegs())
        with open(staging / "skipped.csv", "w", newline="") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(["image", "reason"])
            writer.writerows(skipped)
    images = sum(len(images_of.get(identity, [])) for identity in identities) - len(skipped)
    log.info(
        "export_digiface: %d source images of %d identities; %d unreadable, in skipped.csv",
        images, len(identities), len(skipped),
    )  # fmt: skip
