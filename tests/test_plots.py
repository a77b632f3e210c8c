"""The report's figures: labels shown whole, the sample grid sized to its images, dividers in
the pair grids, integer ticks on count axes, histograms binned over the range their data
occupy. Layout decisions are tested as the functions that make them, the pictures by the text
they draw and the pixels of their dividers."""

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from digi2real import evaluation, plots
from digi2real.dataset import grid_columns, sample_grid
from digi2real.plots import DIVIDER, TILE, Section

pytestmark = pytest.mark.unit

REAL = "ffhq:00000/00016.png"  # 20 characters: the report used to show "hq:00000/00016.png"
GALLERY = "gallery:Some_Very_Long_Person_Name/2019-06-01_portrait_0001.jpg"


@pytest.fixture
def drawn(monkeypatch) -> list[str]:
    """Every string drawn with PIL's ImageDraw.text while the test runs, in order."""
    texts: list[str] = []
    original = ImageDraw.ImageDraw.text

    def text(self, xy, string, *args, **kwargs):
        texts.append(string)
        return original(self, xy, string, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    return texts


# --- labels --------------------------------------------------------------------------------


def test_pair_label_puts_identity_and_cosine_on_lines_of_their_own():
    assert plots.pair_label("2", 0.939) == "identity 2\ncos 0.939"
    assert plots.pair_label("20", 0.9391).split("\n") == ["identity 20", "cos 0.939"]
    assert plots.pair_label("7", None).split("\n") == ["identity 7", "cos n/a"]


@pytest.mark.parametrize("label", [REAL, GALLERY, "x" * 80, "identity 2\ncos 0.939"])
def test_wrapped_labels_keep_every_character_and_fit(label):
    width = TILE - 2 * plots.PAD
    lines = plots.wrap_label(label, width)
    assert "".join(lines) == label.replace("\n", "")
    assert len(lines) >= label.count("\n") + 1
    assert all(plots.text_width(line) <= width for line in lines if len(line) > 1)


def test_a_path_is_broken_after_a_separator_not_inside_a_name():
    lines = plots.wrap_label(GALLERY, TILE - 2 * plots.PAD)
    assert len(lines) > 1
    assert all(line[-1] in "/:_-. " for line in lines[:-1])


def test_the_grid_draws_long_labels_whole(drawn):
    sections = [
        Section(
            ("generated", "nearest real face"),
            [([(None, plots.pair_label("12345", 0.5))], [(None, GALLERY)])],
        ),
        Section(("DigiFace source", "nearest real face"), [([(None, "x")], [(None, REAL)])]),
    ]
    plots.draw_grid(sections, "no real faces")
    text = "".join(drawn)
    for label in (GALLERY, REAL, "identity 12345", "cos 0.500"):
        assert label in text
    assert "generated" in drawn and "nearest real face" in drawn


def test_an_empty_grid_says_why(drawn):
    grid = plots.draw_grid([], "no real faces")
    assert drawn == ["no real faces"]
    assert min(grid.size) > 20


# --- the sample grid -----------------------------------------------------------------------


def test_grid_columns_are_the_most_images_an_identity_has_up_to_the_cap():
    assert grid_columns([4, 4, 3], 8) == 4
    assert grid_columns([2, 12], 8) == 8
    assert grid_columns([1], 8) == 1
    assert grid_columns([], 8) == 1


def _archive(folder: Path, identities: dict[str, int]) -> pa.Table:
    """A shard archive of grey crops and the manifest rows of its passed images."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = {"identity": [], "passed": [], "archive": [], "aligned_path": []}
    with zipfile.ZipFile(folder / "images.zip", "w") as archive:
        for identity, count in identities.items():
            for k in range(count):
                member = f"aligned/{identity}/{k}.png"
                crop = Image.new("RGB", (TILE, TILE), (40 * k % 256, 90, 120))
                with archive.open(member, "w") as handle:
                    crop.save(handle, format="PNG")
                rows["identity"].append(identity)
                rows["passed"].append(True)
                rows["archive"].append("images.zip")
                rows["aligned_path"].append(member)
    return pa.table(rows)


def test_the_sample_grid_has_as_many_columns_as_the_identities_have_images(tmp_path, drawn):
    widths = {}
    for count in (2, 4, 10):
        folder = tmp_path / str(count)
        long = "a_rather_long_identity_name_0001"
        table = _archive(folder, {"0": count, long: 1})
        sample_grid(table, folder, folder / "samples.png")
        with Image.open(folder / "samples.png") as grid:
            widths[count] = grid.width
            assert grid.height == 2 * TILE
    assert widths[4] - widths[2] == 2 * TILE
    assert widths[10] - widths[4] == 4 * TILE  # capped at per_row = 8
    assert long in "".join(drawn) and "identity 0" in drawn


# --- dividers in the pair grids ------------------------------------------------------------


def _tables(folder: Path) -> tuple[Path, pa.Table]:
    """The evaluation tables and manifest a report reads, for identities 0 to 2."""
    manifest = _archive(folder, {"0": 3, "1": 2, "2": 4})
    sources = ["0/0.png", "0/1.png", "0/2.png", "1/0.png", "1/1.png"] + ["2/0.png"] * 4
    manifest = manifest.append_column("source_image", pa.array(sources))
    tables = folder / "evaluation"
    tables.mkdir()
    near = {"nearest_real": [REAL, "", GALLERY], "nearest_real_cos": [0.871, None, 0.5]}
    pq.write_table(pa.table({"identity": ["0", "1", "2"], **near}), tables / "identities.parquet")
    pq.write_table(
        pa.table({"identity": ["0", "1", "2"], **near, "source_image": ["0/0.png", "1/0.png", ""]}),
        tables / "sources.parquet",
    )
    pairs = {"identity_a": ["0", "1"], "identity_b": ["2", "2"], "cosine": [0.939, 0.5]}
    pq.write_table(pa.table(pairs), tables / "pairs.parquet")
    pq.write_table(pa.table(pairs), tables / "source_pairs.parquet")
    return tables, manifest


def _assert_dividers(sections: list[Section]) -> None:
    """A divider DIVIDER-coloured down the gap between every two groups, over the rows."""
    layout = plots.grid_layout(sections)
    grid = np.asarray(plots.draw_grid(sections, "nothing"))
    assert layout.dividers, "no divider"
    for k, x in enumerate(layout.dividers):
        end_of_group = layout.group_x[k] + TILE * layout.columns[k]
        assert end_of_group < x < layout.group_x[k + 1]
        column = grid[:, x]
        is_divider = np.all(column == DIVIDER, axis=1)
        assert is_divider.mean() > 0.7  # all the way down but the titles and section gaps


def test_sources_beside_generated_divides_sources_from_generated(tmp_path, drawn):
    from digi2real.stages import report

    tables, manifest = _tables(tmp_path)
    roots = report.Roots(tmp_path, tmp_path / "digiface", tmp_path / "ffhq", None)
    sections = report.sources_beside_generated(manifest, roots)
    assert [s.headings for s in sections] == [("DigiFace source", "generated, passed")]
    first = sections[0].rows[0]
    assert [label for _, label in first[0]] == [f"identity 0\n0/{k}.png" for k in range(3)]
    assert len(first[1]) == 3
    _assert_dividers(sections)


def test_collisions_divide_generated_from_source_pairs_and_a_from_b(tmp_path, drawn):
    from digi2real.stages import report

    tables, manifest = _tables(tmp_path)
    roots = report.Roots(tmp_path, tmp_path / "digiface", tmp_path / "ffhq", None)
    sections = report.colliding_pairs(tables, manifest, roots)
    assert [s.title for s in sections] == [
        "most similar generated identity pairs",
        "most similar DigiFace source identity pairs",
    ]
    a, b = sections[0].rows[0]
    assert {label for _, label in a} == {"identity 0\ncos 0.939"}
    assert {label for _, label in b} == {"identity 2\ncos 0.939"}
    _assert_dividers(sections)
    plots.draw_grid(sections, "no identity pairs")
    assert "identity 0" in drawn and "cos 0.939" in drawn


def test_leaks_divide_faces_from_the_real_face_labelled_whole(tmp_path, drawn):
    from digi2real.stages import report

    tables, manifest = _tables(tmp_path)
    roots = report.Roots(tmp_path, tmp_path / "digiface", tmp_path / "ffhq", tmp_path / "g")
    sections = report.leaks(tables, manifest, roots)
    assert [s.headings for s in sections] == [
        ("generated", "nearest real face"),
        ("DigiFace source", "nearest real face"),
    ]
    faces, real = sections[0].rows[0]  # identity 0, the nearest (0.871)
    assert {label for _, label in faces} == {"identity 0\ncos 0.871"}
    assert real == [(tmp_path / "ffhq" / "00000/00016.png", REAL)]
    assert sections[0].rows[1][1][0][1] == GALLERY
    assert sections[1].rows[1][0] == []  # identity 2 has no source image: the real face alone
    _assert_dividers(sections)
    plots.draw_grid(sections, "no real faces")
    assert REAL in "".join(drawn) and GALLERY in "".join(drawn)


def test_leaks_without_real_faces_say_so(tmp_path, drawn):
    from digi2real.stages import report

    tables, manifest = _tables(tmp_path)
    for name in ("identities", "sources"):
        table = pq.read_table(tables / f"{name}.parquet")
        column = table.column_names.index("nearest_real")
        pq.write_table(
            table.set_column(column, "nearest_real", pa.array([""] * 3)),
            tables / f"{name}.parquet",
        )
    roots = report.Roots(tmp_path, tmp_path / "digiface", tmp_path / "ffhq", None)
    assert report.leaks(tables, manifest, roots) == []
    plots.image_rows([], tmp_path / "leaks.png", "no real faces")
    assert drawn == ["no real faces"]


# --- histograms ----------------------------------------------------------------------------

FINE = np.linspace(-1, 1, evaluation.HISTOGRAM_BINS + 1)


def _fine(scores: np.ndarray) -> np.ndarray:
    return np.asarray(evaluation.histogram(scores)["counts"])


@pytest.mark.parametrize(
    "low,high,size",
    [(0.987, 0.9997, 300), (-0.3, 0.95, 5000), (0.4, 0.4001, 20), (-1.0, 1.0, 10000)],
)
def test_rebinned_counts_are_the_histogram_of_the_scores_on_the_new_edges(low, high, size):
    scores = np.random.default_rng(0).uniform(low, high, size)
    edges, counts = plots.rebin(_fine(scores), -1.0, 1.0, target_bins=50)
    np.testing.assert_array_equal(counts, np.histogram(scores, bins=edges)[0])
    assert counts.sum() == size
    assert np.all(np.isin(edges, FINE))  # the fine bins nest in the coarse ones
    # The range the scores occupy, a small margin, nothing of the empty rest of [-1, 1].
    assert -1 <= edges[0] <= scores.min() and scores.max() <= edges[-1] <= 1
    step = edges[1] - edges[0]
    assert edges[-1] - edges[0] <= 1.2 * (scores.max() - scores.min()) + 4 * step
    assert len(counts) <= 60
    if high - low > 0.1:
        assert len(counts) >= 40


def test_stacked_histograms_are_rebinned_on_shared_edges():
    rng = np.random.default_rng(1)
    genuine, impostor = rng.uniform(0.98, 0.999, 40), rng.uniform(0.9, 0.99, 200)
    edges, counts = plots.rebin(np.stack([_fine(genuine), _fine(impostor)]), -1.0, 1.0)
    assert edges[0] <= impostor.min() and genuine.max() <= edges[-1]
    np.testing.assert_array_equal(counts[0], np.histogram(genuine, bins=edges)[0])
    np.testing.assert_array_equal(counts[1], np.histogram(impostor, bins=edges)[0])


def test_an_empty_histogram_keeps_its_whole_range():
    edges, counts = plots.rebin(np.zeros(evaluation.HISTOGRAM_BINS), -1.0, 1.0)
    assert edges[0] == -1 and edges[-1] == 1 and counts.sum() == 0 and len(counts) <= 60


def _stairs(axes) -> list:
    from matplotlib.patches import StepPatch

    return [patch for patch in axes.patches if isinstance(patch, StepPatch)]


def _vertical_lines(axes) -> list[float]:
    return [
        float(line.get_xdata()[0])
        for line in axes.get_lines()
        if len(set(np.atleast_1d(line.get_xdata()))) == 1
    ]


def test_the_verification_plot_bins_the_scores_where_they_lie_and_marks_the_eer():
    rng = np.random.default_rng(2)
    genuine, impostor = rng.uniform(0.987, 0.9997, 30), rng.uniform(0.988, 0.9999, 160)
    result = {
        "generated": {
            "verification": {
                "eer": 0.43,
                "eer_threshold": 0.9978,
                "fdr": 0.0,
                "genuine_histogram": evaluation.histogram(genuine),
                "impostor_histogram": evaluation.histogram(impostor),
            }
        }
    }
    figure = plots.draw_verification(result)
    axes = figure.axes[0]
    stairs = _stairs(axes)
    assert len(stairs) == 2
    edges = stairs[0].get_data().edges
    np.testing.assert_array_equal(edges, stairs[1].get_data().edges)
    assert 0.98 <= edges[0] <= genuine.min() and max(genuine.max(), impostor.max()) <= edges[-1]
    assert len(edges) - 1 >= 20  # not one bin
    assert 0.9978 in _vertical_lines(axes)
    left, right = axes.get_xlim()
    assert left < 0.9978 < right and right - left < 0.05
    plots._figure().close(figure)


def test_the_leakage_plot_bins_images_and_prototypes_together_and_marks_the_flag():
    rng = np.random.default_rng(3)
    images, prototypes = rng.uniform(0.86, 0.88, 20), np.array([0.64, 0.79, 0.93, np.nan])
    result = {
        "settings": {"leak_threshold": 0.99},
        "generated": {"leakage": {"images": {"histogram": evaluation.histogram(images)}}},
    }
    figure = plots.draw_leakage(result, prototypes)
    axes = figure.axes[0]
    shown, drawn = _stairs(axes)
    edges = shown.get_data().edges
    np.testing.assert_array_equal(edges, drawn.get_data().edges)
    assert 0.6 < edges[0] <= 0.64 and 0.93 <= edges[-1] < 0.97
    np.testing.assert_allclose(shown.get_data().values.sum(), 1)
    assert 0.99 in _vertical_lines(axes) and axes.get_xlim()[1] > 0.99
    plots._figure().close(figure)


def _integer_ticks(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    assert isinstance(axes.yaxis.get_major_locator(), MaxNLocator)
    axes.figure.canvas.draw()
    ticks = axes.get_yticks()
    assert len(ticks) >= 2 and np.all(ticks == np.round(ticks)), ticks


def test_count_axes_have_integer_ticks():
    manifest = pa.table(
        {
            "status": ["ok"] * 3 + ["no_face"],
            "cos_prototype": [0.5, 0.52, 0.7, np.nan],
            "det_score": [0.9, 0.9, 0.91, np.nan],
        }
    )
    figure = plots.draw_quality(manifest, {"min_cos_prototype": 0.45, "min_det_score": 0.8})
    for axes in figure.axes:
        _integer_ticks(axes)
    plots._figure().close(figure)
    figure = plots.draw_pose(pa.table({"yaw": [1.0, 2.0, 3.0], "pitch": [0.0] * 3}))
    for axes in figure.axes:
        _integer_ticks(axes)
    plots._figure().close(figure)


def test_a_single_value_sits_in_a_narrow_bin_of_its_own():
    edges = plots.value_bins(np.array([0.5, 0.5, 0.5]))
    assert edges[0] < 0.5 < edges[-1] and edges[-1] - edges[0] < 0.05
    assert np.histogram([0.5] * 3, bins=edges)[0].max() == 3
