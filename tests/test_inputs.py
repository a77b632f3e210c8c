"""What a run reads and keeps: identity selection, shard counts, DigiFace parts, complete merges,
and the quality filter's order of reasons. Small folders and tables written here."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from digi2real import layout
from digi2real.config import resolve_config
from digi2real.dataset import Thresholds, apply_filter
from digi2real.errors import ConfigError, DataError
from digi2real.formats import EmbeddingTable, read_embeddings, write_embeddings, write_index
from digi2real.indexing import index_digiface, index_ffhq, index_gallery, select_identities
from digi2real.stages import merge_embeddings

pytestmark = pytest.mark.unit


def image(path, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (120, 90, 80)).save(path)


def resolved(**sections) -> dict:
    return resolve_config(json.loads(json.dumps(sections)))


# --- identity selection --------------------------------------------------------------------

AVAILABLE = [str(k) for k in range(10)]


def selection(**given) -> dict:
    return resolved(digiface={"selection": given})["digiface"]["selection"]


def test_range_selects_from_start_in_numeric_order():
    assert select_identities(selection(start=2, count=3), AVAILABLE) == ["2", "3", "4"]
    assert select_identities(selection(start=7), AVAILABLE) == ["7", "8", "9"]


def test_list_keeps_the_files_order_and_names_unknown_ids(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("5\n\n 1 \n5\n")
    assert select_identities(selection(mode="list", file=str(ids)), AVAILABLE) == ["5", "1"]
    ids.write_text("5\n42\n")
    with pytest.raises(DataError, match=r"1 identities not under digiface.root, e.g. \['42'\]"):
        select_identities(selection(mode="list", file=str(ids)), AVAILABLE)


def test_random_is_seeded_sorted_and_bounded():
    picked = select_identities(selection(mode="random", count=4, seed=3), AVAILABLE)
    assert len(set(picked)) == 4 and picked == sorted(picked, key=int)
    assert picked == select_identities(selection(mode="random", count=4, seed=3), AVAILABLE)
    assert picked != select_identities(selection(mode="random", count=4, seed=4), AVAILABLE)
    with pytest.raises(ConfigError, match="digiface.selection.count: 11 > 10 identities"):
        select_identities(selection(mode="random", count=11, seed=3), AVAILABLE)


def test_a_selection_past_the_end_selects_nothing_and_says_so():
    with pytest.raises(ConfigError, match="digiface.selection selects no identity"):
        select_identities(selection(start=10), AVAILABLE)


# --- DigiFace parts and shard counts ---------------------------------------------------------


def test_identities_directly_under_the_root(tmp_path):
    for identity in ("10", "2", "1"):
        image(tmp_path / identity / "0.png")
    assert layout.identity_folders(tmp_path) == {"1": "1", "2": "2", "10": "10"}


def test_part_folders_side_by_side_are_one_selection(tmp_path):
    for identity in ("0", "1"):
        image(tmp_path / "subjects_0-1999_72_imgs" / identity / "0.png")
    for identity in ("100000", "100001"):
        image(tmp_path / "subjects_100000-133332_5_imgs" / identity / "3.PNG")
    folders = layout.identity_folders(tmp_path)
    assert list(folders) == ["0", "1", "100000", "100001"]
    assert folders["100001"] == "subjects_100000-133332_5_imgs/100001"
    config = resolved(digiface={"root": str(tmp_path), "selection": {"start": 1, "count": 2}})
    index = index_digiface(config)
    assert index.identity == ["1", "100000"]
    assert index.path == [
        "subjects_0-1999_72_imgs/1/0.png",
        "subjects_100000-133332_5_imgs/100000/3.PNG",
    ]


def test_an_identity_in_two_parts_is_an_error_naming_both(tmp_path):
    image(tmp_path / "part_a" / "7" / "0.png")
    image(tmp_path / "part_b" / "7" / "0.png")
    with pytest.raises(DataError) as error:
        layout.identity_folders(tmp_path)
    assert str(tmp_path / "part_a/7") in str(error.value)
    assert str(tmp_path / "part_b/7") in str(error.value)


# --- a DigiFace root that is not one: refused before a single job runs ---------------------


def refused(root, message: str) -> None:
    """`identity_folders` refuses `root` with one line naming digiface.root and `message`."""
    with pytest.raises(DataError, match="config key digiface.root: ") as error:
        layout.identity_folders(root)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_a_root_one_folder_too_high_is_refused_naming_the_folder_to_point_at(tmp_path):
    """The folder that holds DigiFace-1M/ beside a folder of FFHQ's real faces: its parts would
    be taken for identities, and the real faces for a synthetic one."""
    for identity in ("0", "1"):
        image(tmp_path / "DigiFace-1M/subjects_0-1999_72_imgs" / identity / "0.png")
    for k in range(24):
        image(tmp_path / "ffhq/00000" / f"{k:05d}.jpg")
    refused(
        tmp_path,
        "DigiFace-1M/ holds subjects_0-1999_72_imgs/, which is not a DigiFace subject folder "
        "(their names are numbers): not a DigiFace part folder; is digiface.root one folder "
        f"too high? point it at {tmp_path / 'DigiFace-1M'}",
    )
    shutil.rmtree(tmp_path / "DigiFace-1M")
    refused(tmp_path, "ffhq/00000/ holds 24 .jpg files: not a DigiFace subject folder")


def test_the_demo_folder_is_not_a_digiface_root(demo_root):
    """`root: demo` (models/, ffhq/ and digiface/ side by side) would make them identities."""
    refused(demo_root, "not a DigiFace part folder")


def test_a_subject_folder_holds_numbered_pngs_only(tmp_path):
    image(tmp_path / "0" / "0.png")
    image(tmp_path / "1" / "0.png")
    image(tmp_path / "1" / "face.png")
    refused(tmp_path, "1/ holds 1 .png file: not a DigiFace subject folder")
    (tmp_path / "1" / "face.png").unlink()
    (tmp_path / "1" / "extra").mkdir()
    refused(tmp_path, "1/ holds the folder extra/: not a DigiFace subject folder")


def test_folders_named_otherwise_holding_images_are_neither_subjects_nor_parts(tmp_path):
    image(tmp_path / "alice" / "0.png")
    image(tmp_path / "bob" / "0.jpg")
    refused(tmp_path, "alice/ holds 1 .png file: not a DigiFace subject folder")


def test_images_in_the_root_itself_are_refused(tmp_path):
    for k in range(3):
        image(tmp_path / f"{k}.png")
    refused(tmp_path, "holds 3 .png files itself")


def test_a_zip_is_refused_with_the_command_that_unpacks_it(tmp_path):
    archive = tmp_path / "subjects_0-1999_72_imgs.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))
    refused(archive, f"is a zip archive: unzip it (unzip {archive.name} -d {tmp_path})")
    refused(tmp_path, "it holds 1 zip files (subjects_0-1999_72_imgs.zip, ...): unzip them")
    with pytest.raises(DataError, match="config key ffhq.root: .* is a zip archive: unzip it"):
        layout.image_files(archive, "ffhq.root")


def test_the_index_checks_every_selected_subject_folder(tmp_path):
    """The dry run checks the first few subject folders of each part; the index job checks
    every one it selects, as it lists them."""
    for identity in range(6):
        image(tmp_path / str(identity) / "0.png")
    image(tmp_path / "5" / "other.jpg")
    assert len(layout.identity_folders(tmp_path)) == 6
    with pytest.raises(DataError, match="config key digiface.root: 5/ holds 1 .jpg file"):
        index_digiface(resolved(digiface={"root": str(tmp_path)}))


def test_an_empty_identity_folder_is_indexed_not_dropped(tmp_path):
    image(tmp_path / "0" / "0.png")
    (tmp_path / "1").mkdir()
    index = index_digiface(resolved(digiface={"root": str(tmp_path)}))
    assert index.identity == ["0", "1"] and index.path == ["0/0.png", "1/"]


def test_every_image_suffix_counts_whatever_its_case(tmp_path):
    names = ["a/0.png", "a/1.JPG", "b/2.jpeg", "b/3.Png", "c/4.webp", "c/notes.txt", "5.tiff"]
    for name in names:
        if name.endswith(".txt"):
            (tmp_path / name).write_text("not an image")
        else:
            image(tmp_path / name)
    config = resolved(ffhq={"root": str(tmp_path)})
    assert layout.count_ffhq_images(config) == 6
    index = index_ffhq(config)
    assert len(index) == 6 and "c/notes.txt" not in index.path
    assert layout.n_shards(6, 4) == 2 and layout.n_shards(0, 4) == 1


def test_digiface_count_lists_the_root_only_without_a_count(tmp_path):
    for identity in range(5):
        image(tmp_path / str(identity) / "0.png")
    assert layout.count_selected_identities(resolved(digiface={"root": str(tmp_path)})) == 5
    start = resolved(digiface={"root": str(tmp_path), "selection": {"start": 2}})
    assert layout.count_selected_identities(start) == 3
    missing = {"root": str(tmp_path / "nowhere"), "selection": {"count": 20000}}
    assert layout.count_selected_identities(resolved(digiface=missing)) == 20000
    with pytest.raises(DataError, match="config key digiface.root: .* is not a folder"):
        layout.count_selected_identities(resolved(digiface={"root": str(tmp_path / "x")}))


# --- merging embedding shards ----------------------------------------------------------------


def embeddings(paths: list[str], shard: int) -> EmbeddingTable:
    n = len(paths)
    return EmbeddingTable(
        embedding=np.zeros((n, 512), np.float32),
        status=np.ones(n, np.int8),
        identity=[""] * n,
        path=paths,
        det_score=np.full(n, np.nan, np.float32),
        message=[""] * n,
        attrs={"shard": shard, "arcface_sha256": "a"},
    )


def test_merge_accounts_for_every_indexed_row(tmp_path):
    from digi2real.formats import Index

    paths = [f"{k}.png" for k in range(5)]
    write_index(tmp_path / "index.parquet", Index(list(range(5)), [""] * 5, paths, "/data"))
    shards = [tmp_path / "0.h5", tmp_path / "1.h5"]
    write_embeddings(shards[0], embeddings(paths[:3], 0))
    write_embeddings(shards[1], embeddings(paths[3:], 1))
    merge_embeddings.run(tmp_path / "index.parquet", shards, tmp_path / "all.h5")
    assert read_embeddings(tmp_path / "all.h5").path == paths
    with pytest.raises(DataError, match=r"not embedded: 2, e.g. \['3.png', '4.png'\]"):
        merge_embeddings.run(tmp_path / "index.parquet", shards[:1], tmp_path / "all.h5")
    write_embeddings(shards[1], embeddings(["3.png", "9.png"], 1))
    with pytest.raises(DataError, match=r"not embedded: 1, e.g. \['4.png'\]"):
        merge_embeddings.run(tmp_path / "index.parquet", shards, tmp_path / "all.h5")


# --- the real-face gallery ------------------------------------------------------------------


def test_the_gallery_indexes_every_image_with_its_identity_folder(tmp_path):
    for path in ("0000045/001.jpg", "0000045/002.JPG", "0000099/001.png"):
        image(tmp_path / path)
    (tmp_path / "0000045/notes.txt").write_text("not an image")
    config = resolved(gallery={"root": str(tmp_path)})
    index = index_gallery(config)
    assert index.path == ["0000045/001.jpg", "0000045/002.JPG", "0000099/001.png"]
    assert index.identity == ["0000045", "0000045", "0000099"]
    assert index.group == [0, 1, 2]
    assert layout.count_gallery_images(config) == 3
    assert layout.count_gallery_images(resolved()) == 0  # no gallery: none


def test_a_gallery_not_laid_out_by_identity_is_refused(tmp_path):
    image(tmp_path / "CASIA-WebFace/0000045/001.jpg")
    with pytest.raises(DataError) as error:
        index_gallery(resolved(gallery={"root": str(tmp_path)}))
    assert str(error.value) == (
        f"config key gallery.root: CASIA-WebFace/0000045/001.jpg lies in a folder inside the "
        f"identity folder CASIA-WebFace/: expected <identity>/<image>; is gallery.root one "
        f"folder too high? point it at {tmp_path / 'CASIA-WebFace'}"
    )
    image(tmp_path / "loose.png")
    with pytest.raises(DataError, match=r"holds 1 images at its top level \(e.g. loose.png\)"):
        index_gallery(resolved(gallery={"root": str(tmp_path)}))


def test_a_missing_or_empty_gallery_is_an_error_naming_its_key(tmp_path):
    with pytest.raises(DataError, match="config key gallery.root: .* is not a folder"):
        index_gallery(resolved(gallery={"root": str(tmp_path / "nowhere")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="config key gallery.root: .* holds no images"):
        index_gallery(resolved(gallery={"root": str(tmp_path / "empty")}))


def test_real_faces_are_the_ok_rows_of_each_file_labelled_by_dataset(tmp_path):
    from digi2real.formats import read_real_faces

    tables = []
    for name, paths in (
        ("ffhq", ["a.png", "b.png"]),
        ("gallery", ["x/1.png", "x/2.png", "y/1.png"]),
    ):
        table = embeddings(paths, 0)
        table.status[:] = [0, 1, 0][: len(paths)]
        table.embedding[:, 0] = np.arange(len(paths)) + 1
        table.attrs["dataset"] = name
        write_embeddings(tmp_path / f"{name}.h5", table)
        tables.append(table)
    vectors, labels = read_real_faces([tmp_path / "ffhq.h5", tmp_path / "gallery.h5"])
    assert labels == ["ffhq:a.png", "gallery:x/1.png", "gallery:y/1.png"]
    assert vectors[:, 0].tolist() == [1, 1, 3]
    empty, none = read_real_faces([])
    assert empty.shape == (0, 512) and none == []


# --- the quality filter ----------------------------------------------------------------------


def test_each_image_gets_the_first_reason_it_fails_in_a_fixed_order():
    """status, then detection score, then cosine to the prototype, then the identity's count."""
    rows = [
        ("a", 0, "no_face", np.nan, np.nan),  # status first
        ("a", 1, "ok", 0.1, 0.0),  # low score and low cosine: the score is named
        ("a", 2, "ok", 0.9, 0.0),  # low cosine only
        ("a", 3, "ok", 0.9, 0.8),  # passes alone: too few in its identity
        ("b", 0, "ok", 0.9, 0.8),
        ("b", 1, "ok", 0.9, 0.9),
        ("b", 2, "ok", np.nan, 0.9),  # no score is a low score, never a pass
        ("b", 3, "skipped", np.nan, np.nan),
    ]
    table = pa.table(
        {
            "identity": [r[0] for r in rows],
            "image_index": pa.array([r[1] for r in rows], pa.int32()),
            "status": [r[2] for r in rows],
            "det_score": pa.array([r[3] for r in rows], pa.float32()),
            "cos_prototype": pa.array([r[4] for r in rows], pa.float32()),
        }
    )
    thresholds = Thresholds(min_det_score=0.5, min_cos_prototype=0.3, min_images_per_identity=2)
    filtered = apply_filter(table, thresholds)
    assert filtered.column("reject_reason").to_pylist() == [
        "no_face",
        "low_det_score",
        "low_cos_prototype",
        "too_few_images_in_identity",
        "",
        "",
        "low_det_score",
        "skipped",
    ]
    assert filtered.column("passed").to_pylist() == [False] * 4 + [True, True, False, False]


# --- one listing of each folder per run -----------------------------------------------------


def test_a_job_counts_what_the_main_process_listed_without_listing_again(tmp_path, monkeypatch):
    """The workflow's main process lists each root once and hands the counts to the jobs in
    the environment, or, where that is lost, in its listing files: a job's parse lists no
    folder (here the folders are gone by then)."""
    for identity in range(5):
        image(tmp_path / "digiface" / str(identity) / "0.png")
    for k in range(7):
        image(tmp_path / "ffhq" / "00000" / f"{k}.png")
    for identity in ("a", "b"):
        image(tmp_path / "gallery" / identity / "0.png")
    roots = {name: {"root": str(tmp_path / name)} for name in ("digiface", "ffhq", "gallery")}
    config = resolved(**roots)
    folders = layout.InputFolders(config)
    counts = layout.input_counts(config, folders)
    assert counts == {"digiface": 5, "ffhq": 7, "gallery": 2}
    results = tmp_path / "results"
    for dataset, text in folders.listed().items():
        layout.listing_path(results, dataset).parent.mkdir(parents=True, exist_ok=True)
        layout.listing_path(results, dataset).write_text(text)
    monkeypatch.delenv(layout.COUNTS_VARIABLE, raising=False)
    layout.hand_counts_to_jobs(config, counts)
    for name in ("digiface", "ffhq", "gallery"):
        shutil.rmtree(tmp_path / name)
    assert layout.handed_counts(config) == counts
    other = resolved(**{**roots, "ffhq": {"root": str(tmp_path / "ffhq"), "count": 3}})
    assert layout.handed_counts(other) is None  # counts of another config are not taken
    monkeypatch.delenv(layout.COUNTS_VARIABLE)
    assert layout.input_counts(config, layout.InputFolders.from_listings(config, results)) == counts
    index = index_ffhq(
        config, layout.listing_of(layout.listing_path(results, "ffhq"), config, "ffhq")
    )
    assert index.path == [f"00000/{k}.png" for k in range(7)]
    elsewhere = resolved(ffhq={"root": str(tmp_path / "elsewhere")})
    with pytest.raises(DataError, match="not of config key ffhq.root"):
        layout.listing_of(layout.listing_path(results, "ffhq"), elsewhere, "ffhq")
