"""The benchmark's protocol against independent computations: a loop-by-loop reimplementation
of insightface's 10-fold accuracy, scikit-learn's KFold and roc_curve, cases with known answers,
brute-force TAR, hand-built pickles (Python 2's, malicious ones) and a planted IJB folder."""

import io
import math
import os
import pickle
import struct
import time

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_curve as sklearn_roc_curve
from sklearn.model_selection import KFold

from digi2real import verification as ver
from digi2real.errors import DataError

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(23)


# --- an independent 10-fold accuracy: plain loops, as insightface's calculate_roc reads -------


def reference_folds(pairs, folds):
    """KFold's test sets written out: fold f starts after the sizes of the folds before it."""
    sets, start = [], 0
    for fold in range(folds):
        size = pairs // folds + (1 if fold < pairs % folds else 0)
        sets.append(list(range(start, start + size)))
        start += size
    return sets


def reference_accuracy(threshold, distances, issame):
    right = 0
    for distance, same in zip(distances, issame, strict=True):
        right += (distance < threshold) == same
    return right / len(distances)


def reference_verification(embeddings, issame, folds=10):
    """(fold accuracies, fold thresholds), a loop over folds and a loop over thresholds."""
    distances = [
        float(np.dot(a - b, a - b)) for a, b in zip(embeddings[0::2], embeddings[1::2], strict=True)
    ]
    thresholds = [i * 0.01 for i in range(400)]
    accuracies, chosen = [], []
    for test in reference_folds(len(issame), folds):
        tested = set(test)
        train = [i for i in range(len(issame)) if i not in tested]
        best, best_accuracy = None, -1.0
        for index, threshold in enumerate(thresholds):
            accuracy = reference_accuracy(
                threshold, [distances[i] for i in train], [issame[i] for i in train]
            )
            if accuracy > best_accuracy:  # strictly: the first of equals stays
                best, best_accuracy = index, accuracy
        accuracies.append(
            reference_accuracy(
                ver.THRESHOLDS[best], [distances[i] for i in test], [issame[i] for i in test]
            )
        )
        chosen.append(float(ver.THRESHOLDS[best]))
    return accuracies, chosen


def pairs_at(squared_distances):
    """Unit 2-D embeddings, pair i at squared L2 distance squared_distances[i] (|a - b|^2 is
    2 - 2 cos for unit vectors)."""
    rows = []
    for distance in squared_distances:
        angle = math.acos(1 - distance / 2)
        rows += [[1.0, 0.0], [math.cos(angle), math.sin(angle)]]
    return np.array(rows)


def noisy_embeddings(pairs, dimension=16, noise=0.9):
    identities = RNG.normal(size=(pairs, dimension))
    issame = RNG.random(pairs) < 0.5
    first = identities + noise * RNG.normal(size=(pairs, dimension))
    other = np.where(issame[:, None], identities, RNG.normal(size=(pairs, dimension)))
    second = other + noise * RNG.normal(size=(pairs, dimension))
    embeddings = np.empty((2 * pairs, dimension))
    embeddings[0::2], embeddings[1::2] = first, second
    return ver.l2_normalised(embeddings), issame


# --- folds, accuracy, thresholds ---------------------------------------------------------------


@pytest.mark.parametrize("pairs", [10, 13, 101, 6000, 7001])
def test_folds_are_sklearns_kfold_in_order(pairs):
    ours = ver.fold_indices(pairs, 10)
    theirs = list(KFold(n_splits=10, shuffle=False).split(np.arange(pairs)))
    assert len(ours) == len(theirs) == 10
    for test, (train_set, test_set) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(test, test_set)
        np.testing.assert_array_equal(np.setdiff1d(np.arange(pairs), test), train_set)


def test_fold_counts_out_of_range_are_refused():
    with pytest.raises(ValueError):
        ver.fold_indices(9, 10)


def test_separable_pairs_give_full_accuracy_and_a_threshold_between():
    issame = np.array([True, False] * 50)
    embeddings = pairs_at(np.where(issame, 0.5, 2.0))
    result = ver.verification(embeddings, issame)
    assert result.accuracy == 1.0 and result.std == 0.0 and result.pairs == 100
    # The first threshold of full accuracy is the first grid value above the same pairs'
    # distance (0.5 computed in floating point: 0.50 or 0.51); never as far as 2.0.
    same_distance = ver.pair_distances(embeddings)[0]
    first_above = ver.THRESHOLDS[ver.THRESHOLDS > same_distance][0]
    assert result.fold_thresholds == [first_above] * 10
    assert 0.5 <= result.threshold <= 0.51 < 2.0


@pytest.mark.parametrize(("pairs", "noise"), [(300, 0.9), (203, 1.2), (57, 0.7)])
def test_noisy_embeddings_agree_with_the_loop_reference_fold_by_fold(pairs, noise):
    embeddings, issame = noisy_embeddings(pairs, noise=noise)
    result = ver.verification(embeddings, issame)
    accuracies, thresholds = reference_verification(embeddings, list(issame))
    assert result.fold_accuracies == accuracies
    assert result.fold_thresholds == thresholds
    assert result.accuracy == np.mean(accuracies) and result.std == np.std(accuracies)
    assert result.threshold == np.mean(thresholds)
    assert 0.6 < result.accuracy < 0.99  # neither trivial nor hopeless
    assert result.as_dict()["pairs"] == pairs


def test_equal_training_accuracies_take_the_first_threshold():
    # Per fold: same at 0.305, different at 0.505, same at 0.705, different at 0.905. A
    # threshold in (0.305, 0.505] and one in (0.705, 0.905] both get 3 of 4 right: np.argmax
    # takes the first, 0.31; the last of equals would be 0.9, the first of the second run 0.71.
    issame = np.array([True, False, True, False] * 10)
    embeddings = pairs_at(np.tile([0.305, 0.505, 0.705, 0.905], 10))
    result = ver.verification(embeddings, issame)
    assert result.fold_thresholds == [ver.THRESHOLDS[31]] * 10
    assert result.fold_accuracies == [0.75] * 10
    accuracies, thresholds = reference_verification(embeddings, list(issame))
    assert (result.fold_accuracies, result.fold_thresholds) == (accuracies, thresholds)


def test_distance_equal_to_a_threshold_is_predicted_different():
    # distance < threshold: a pair at exactly 1.0 (0 and 1 apart by 1: |(1,0)-(0,0)|^2) is
    # accepted by thresholds from 1.01 on, never by 1.0.
    issame = np.array([True] * 10 + [False] * 10)
    embeddings = np.zeros((40, 2))
    embeddings[0:20:2, 0] = 1.0  # same pairs at distance exactly 1.0
    embeddings[20::2, 0] = 2.0  # different pairs at distance 4.0
    distances = ver.pair_distances(embeddings)
    assert distances[0] == 1.0
    correct = ver._correct_counts(distances, issame)
    assert correct[100] == 10 and correct[101] == 20  # THRESHOLDS[100] is 1.0 exactly


def test_six_thousand_pairs_take_well_under_a_second():
    embeddings, issame = noisy_embeddings(6000, dimension=512)
    start = time.perf_counter()
    ver.verification(embeddings, issame)
    assert time.perf_counter() - start < 0.5


# --- flip embeddings ---------------------------------------------------------------------------


def linear_embed(weights):
    def embed(batch: torch.Tensor) -> torch.Tensor:
        assert batch.dtype == torch.float32 and batch.shape[1:] == (3, 112, 112)
        return batch.reshape(len(batch), -1).double() @ weights.T

    return embed


def test_flip_embeddings_is_the_normalised_sum_of_image_and_width_flip():
    faces = RNG.integers(0, 256, size=(5, 112, 112, 3), dtype=np.uint8)
    weights = torch.as_tensor(RNG.normal(size=(6, 3 * 112 * 112)))
    result = ver.flip_embeddings(linear_embed(weights), faces, batch_size=2)

    def by_hand(flip_axis):
        w = weights.numpy()
        total = []
        for face in faces:
            flipped = np.flip(face, axis=flip_axis)
            vectors = [
                ((image.astype(np.float64) / 255 - 0.5) / 0.5).transpose(2, 0, 1).reshape(-1)
                for image in (face, flipped)
            ]
            total.append(w @ vectors[0] + w @ vectors[1])
        total = np.array(total)
        return total / np.linalg.norm(total, axis=1, keepdims=True)

    np.testing.assert_allclose(result, by_hand(flip_axis=1), atol=1e-6)  # width of H x W x C
    assert not np.allclose(result, by_hand(flip_axis=0), atol=1e-3)  # a height flip differs
    np.testing.assert_allclose(np.linalg.norm(result, axis=1), 1.0, atol=1e-12)


def test_non_finite_embeddings_are_refused():
    faces = np.zeros((2, 112, 112, 3), np.uint8)
    with pytest.raises(DataError, match="non-finite"):
        ver.flip_embeddings(lambda batch: torch.full((len(batch), 4), math.nan), faces, 4)


# --- .bin files --------------------------------------------------------------------------------


def encoded(pixels, format_):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format_, quality=90)
    return buffer.getvalue()


def face_pixels(seed, size=112):
    y, x = np.mgrid[:size, :size]
    return np.stack(
        [(x * 2 + seed) % 256, (y * 3 + seed) % 256, (x + y + 7 * seed) % 256], axis=-1
    ).astype(np.uint8)


def test_write_bin_then_load_bin_round_trips_png_and_jpeg(tmp_path):
    pixels = [face_pixels(seed) for seed in range(6)]
    images = [encoded(p, "PNG" if i % 2 == 0 else "JPEG") for i, p in enumerate(pixels)]
    path = tmp_path / "lfw.bin"
    ver.write_bin(path, images, [True, False, True])
    data = ver.load_bin(path)
    assert data.name == "lfw" and data.pairs == 3
    assert data.issame.dtype == bool and list(data.issame) == [True, False, True]
    assert data.images.shape == (6, 112, 112, 3) and data.images.dtype == np.uint8
    for index, image in enumerate(images):
        if index % 2 == 0:
            np.testing.assert_array_equal(data.images[index], pixels[index])  # PNG: exact
        else:
            with Image.open(io.BytesIO(image)) as jpeg:
                np.testing.assert_array_equal(data.images[index], np.asarray(jpeg.convert("RGB")))
    assert sorted(os.listdir(tmp_path)) == ["lfw.bin"]  # no temporary file left behind
    # the format insightface reads: a plain pickle of (list of bytes, list of bools)
    with open(path, "rb") as handle:
        assert pickle.load(handle, encoding="bytes") == (images, [True, False, True])


def python2_pickle(images, flags):
    """(images, flags) as Python 2's cPickle wrote them at protocol 2: str as BINSTRING ('T'),
    bools as NEWTRUE/NEWFALSE, memo puts, no global anywhere."""
    out = bytearray(b"\x80\x02")
    memo = 0

    def put():
        nonlocal memo
        out.extend(b"q" + bytes([memo]))
        memo += 1

    out.extend(b"]")
    put()
    out.extend(b"(")
    for image in images:
        out.extend(b"T" + struct.pack("<I", len(image)) + image)
        put()
    out.extend(b"e]")
    put()
    out.extend(b"(")
    out.extend(b"".join(b"\x88" if flag else b"\x89" for flag in flags))
    out.extend(b"e\x86")
    put()
    out.extend(b".")
    return bytes(out)


def test_a_python2_pickle_loads_its_str_images_as_bytes(tmp_path):
    pixels = [face_pixels(seed) for seed in range(4)]
    images = [encoded(p, "PNG") for p in pixels]
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(python2_pickle(images, [False, True]))
    # Python 3's own unpickler reads it as insightface does: the str became bytes
    assert pickle.loads(path.read_bytes(), encoding="bytes") == (images, [False, True])
    data = ver.load_bin(path)
    assert list(data.issame) == [False, True]
    for index in range(4):
        np.testing.assert_array_equal(data.images[index], pixels[index])


class SystemPayload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class OpenPayload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("payload", [SystemPayload, OpenPayload])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, payload, protocol):
    # The control: pickle's own loader does run the payload, which creates the file.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(payload(control), protocol=protocol))
    assert control.exists()

    target = tmp_path / "pwned"
    path = tmp_path / "lfw.bin"
    inner = ([encoded(face_pixels(1), "PNG")] * 2, [True])
    path.write_bytes(pickle.dumps((payload(target), inner), protocol=protocol))
    with pytest.raises(DataError) as error:
        ver.load_bin(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "refers to" in message and "holds only bytes, lists and bools" in message
    assert not target.exists()


def test_a_global_is_named_in_the_refusal(tmp_path):
    path = tmp_path / "cfp_fp.bin"
    # GLOBAL builtins eval, its argument, REDUCE: eval("1") at protocol 0 by hand
    path.write_bytes(b"cbuiltins\neval\n(S'1'\ntR.")
    with pytest.raises(DataError, match=r"cfp_fp\.bin: refers to builtins\.eval: a verification"):
        ver.load_bin(path)


def test_numpy_arrays_sets_and_dicts_are_refused(tmp_path):
    path = tmp_path / "calfw.bin"
    image = encoded(face_pixels(2), "PNG")
    cases = [
        (pickle.dumps(([image, image], np.array([True])), protocol=4), "refers to numpy"),
        (pickle.dumps(([image, image], {True}), protocol=4), "holds a set"),
        (pickle.dumps(([], {True}), protocol=2), "refers to __builtin__.set"),
        (pickle.dumps(({"images": [image, image]}, [True]), protocol=4), "holds a dict"),
        (pickle.dumps(([bytearray(image), image], [True]), protocol=5), "holds a bytearray"),
    ]
    for data, expected in cases:
        path.write_bytes(data)
        with pytest.raises(DataError, match=expected) as error:
            ver.load_bin(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_list_holding_itself_ends_with_an_error(tmp_path):
    looped = []
    looped.append(looped)
    path = tmp_path / "cplfw.bin"
    path.write_bytes(pickle.dumps((looped, [True]), protocol=4))
    with pytest.raises(DataError, match="cplfw.bin"):
        ver.load_bin(path)


def write_pickle(path, content):
    path.write_bytes(pickle.dumps(content, protocol=4))
    return path


def test_malformed_files_get_one_line_naming_the_file(tmp_path):
    good = encoded(face_pixels(3), "PNG")
    small = encoded(face_pixels(3, size=100), "PNG")
    cases = {
        "mismatch": (([good] * 3, [True, False]), r"3 images for 2 pairs.*4 were expected"),
        "size": (([good, good, small, good], [True, False]), r"image 2: a 100x100 image"),
        "triple": (([good, good], [True], []), r"holds a tuple of 3, not the pair"),
        "undecodable": (([good, b"not an image"], [True]), r"image 1: not a decodable image"),
        "text": (([good, "a str"], [True]), r"image 1 is a str, not bytes"),
        "flag": (([good, good], [2]), r"pair 0's flag is 2, not a bool"),
        "empty": (([], []), r"holds no pairs"),
        "scalar": ((7), r"holds a int, not the pair"),
    }
    for name, (content, expected) in cases.items():
        path = write_pickle(tmp_path / f"{name}.bin", content)
        with pytest.raises(DataError, match=expected) as error:
            ver.load_bin(path)
        message = str(error.value)
        assert message.startswith(f"{path}:") and "\n" not in message, name


def test_truncated_and_missing_files_are_named(tmp_path):
    path = tmp_path / "agedb_30.bin"
    ver.write_bin(path, [encoded(face_pixels(4), "PNG")] * 2, [True])
    whole = path.read_bytes()
    for cut in (len(whole) // 2, len(whole) - 1, 3, 0):
        path.write_bytes(whole[:cut])
        with pytest.raises(DataError, match=r"agedb_30\.bin: truncated or not a pickle") as e:
            ver.load_bin(path)
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"lfw\.bin: no such file"):
        ver.load_bin(tmp_path / "lfw.bin")


# --- IJB: ROC and TAR@FAR ----------------------------------------------------------------------


def insightface_tar(labels, scores, far):
    """ijb_11.py's selection, on scikit-learn's ROC, in its own words: flip, then min over
    (|fpr - far|, index)."""
    fpr, tpr, _ = sklearn_roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    _, index = min(zip(abs(fpr - far), range(len(fpr)), strict=True))
    return tpr[index]


def test_roc_points_are_scikit_learns():
    for ties in (None, 2, 1):  # continuous scores, scores rounded into many ties, coarse ties
        labels = (RNG.random(3000) < 0.2).astype(int)
        scores = RNG.normal(labels * 1.5, 1.0)
        if ties is not None:
            scores = np.round(scores, ties)
        fpr, tpr = ver.roc_curve(labels, scores)
        their_fpr, their_tpr, _ = sklearn_roc_curve(labels, scores)
        np.testing.assert_array_equal(fpr, their_fpr)
        np.testing.assert_array_equal(tpr, their_tpr)
        for far in (1e-4, 1e-3, 1e-2, 0.1, 0.37):
            assert ver.tar_at_far(fpr, tpr, far) == insightface_tar(labels, scores, far)


def brute_force_tar(genuine, impostor, far):
    """The largest TAR of a threshold whose FAR is at most `far`, accepting score >= t, every
    score (and +inf) tried as t."""
    genuine, impostor = np.asarray(genuine), np.asarray(impostor)
    best = 0.0
    for threshold in [math.inf, *sorted(set(genuine) | set(impostor))]:
        false_accepts = int(np.sum(impostor >= threshold))
        if false_accepts / len(impostor) <= far:
            best = max(best, int(np.sum(genuine >= threshold)) / len(genuine))
    return best


def test_tar_at_far_is_brute_force_where_the_roc_has_that_far():
    # 2000 impostors: FAR 1e-3 is 2 false accepts, 1e-2 is 20. Genuine scores are planted
    # between the 2nd and 3rd and between the 20th and 21st highest impostor scores, so the ROC
    # turns at exactly those FARs, where insightface's closest point is the brute-force one.
    impostor = RNG.normal(0.0, 1.0, 2000)
    top = np.sort(impostor)[::-1]
    genuine = np.r_[RNG.normal(2.5, 1.0, 300), (top[1] + top[2]) / 2, (top[19] + top[20]) / 2]
    labels = np.r_[np.ones(len(genuine), int), np.zeros(len(impostor), int)]
    fpr, tpr = ver.roc_curve(labels, np.r_[genuine, impostor])
    for far in (1e-3, 1e-2):
        expected = brute_force_tar(genuine, impostor, far)
        assert ver.tar_at_far(fpr, tpr, far) == expected
        assert 0.2 < expected < 0.99


def test_tar_at_far_reads_the_roc_with_collinear_points_dropped():
    # (fp, tp): genuine 10, impostors 9 8 7, genuine 6. The points at FPR 1/3 and 2/3 lie on a
    # line and scikit-learn drops them; the closest point to FPR 0.6 is then FPR 1, TPR 1.0
    # (on the full curve it would be FPR 2/3, TPR 0.5). insightface reports 1.0.
    labels = np.array([1, 0, 0, 0, 1])
    scores = np.array([10.0, 9.0, 8.0, 7.0, 6.0])
    fpr, tpr = ver.roc_curve(labels, scores)
    np.testing.assert_array_equal(fpr, [0, 0, 1, 1])
    assert ver.tar_at_far(fpr, tpr, 0.6) == 1.0 == insightface_tar(labels, scores, 0.6)


def summary_meta(labels):
    return ver.IjbMeta(
        names=["a"],
        templates=np.array([1]),
        medias=np.array([1]),
        landmarks=np.zeros((1, 5, 2), np.float32),
        detector_scores=np.ones(1, np.float32),
        pair_templates=np.ones((len(labels), 2), np.int64),
        labels=labels,
        landmark_file=ver.Path("x"),
    )


def test_far_1e6_is_reported_only_with_a_million_impostor_pairs():
    few = np.r_[np.ones(50, int), np.zeros(1000, int)]
    summary = ver.ijb_summary(summary_meta(few), RNG.normal(few, 1.0), "ijbb")
    assert summary["tar_at_far"]["1e-6"] is None
    assert summary["tar_at_far"]["1e-4"] is not None and summary["target"] == "IJBB"
    many = np.r_[np.ones(50, int), np.zeros(1_000_000, int)]
    scores = RNG.normal(many * 4.0, 1.0)
    summary = ver.ijb_summary(summary_meta(many), scores, "IJBC")
    assert summary["tar_at_far"]["1e-6"] == insightface_tar(many, scores, 1e-6)
    assert 0 < summary["tar_at_far"]["1e-6"] < summary["tar_at_far"]["1e-4"] < 1
    assert summary["impostor_pairs"] == 1_000_000 and summary["genuine_pairs"] == 50


# --- IJB: template features --------------------------------------------------------------------


def test_template_features_average_media_then_sum_then_normalise():
    features = RNG.normal(size=(6, 4))
    templates = np.array([7, 7, 7, 3, 3, 7])
    medias = np.array([1, 1, 2, 1, 5, 9])
    ids, feats = ver.template_features(features, templates, medias)
    np.testing.assert_array_equal(ids, [3, 7])
    t7 = (features[0] + features[1]) / 2 + features[2] + features[5]
    t3 = features[3] + features[4]  # media 1 of template 3 is not media 1 of template 7
    expected = np.array([t3 / np.linalg.norm(t3), t7 / np.linalg.norm(t7)])
    np.testing.assert_allclose(feats, expected, rtol=1e-12)
    scores = ver.pair_scores(ids, feats, np.array([[7, 3], [3, 3]]))
    np.testing.assert_allclose(scores, [expected[1] @ expected[0], 1.0], rtol=1e-12)


# --- IJB: a planted folder ---------------------------------------------------------------------

TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]]
)  # fmt: skip
COLOURS = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}  # an identity is a colour


def planted_face(identity, scale, angle, centre, side=220):
    """A noise image whose disk around `centre` is the identity's colour, and the landmarks of
    a face there: the template rotated by `angle`, scaled and moved. The aligned crop lies
    inside the disk only if the landmarks are followed."""
    image = RNG.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    y, x = np.mgrid[:side, :side]
    radius = 56 * scale * math.sqrt(2) + 4
    image[(x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2] = COLOURS[identity]
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    landmarks = (TEMPLATE - 56.0) @ rotation.T * scale + np.array(centre)
    return image, landmarks


def channel_mean_embed(batch: torch.Tensor) -> torch.Tensor:
    """A stub recognizer: the mean of each channel, (1, -1, -1) for a pure red face."""
    return batch.mean(dim=(2, 3))


IMAGES = [  # name, template, media, identity, scale, angle, centre, detector score
    ("a.png", 1, 10, 0, 1.0, 0.0, (110, 110), 0.9),
    ("b.png", 1, 10, 0, 0.8, 0.3, (100, 115), 0.7),
    ("c.png", 1, 11, 0, 1.2, -0.2, (110, 105), 0.95),
    ("d.png", 2, 12, 0, 0.9, 0.1, (105, 110), 0.8),
    ("e.png", 3, 13, 1, 1.1, -0.4, (112, 108), 0.99),
    ("f.png", 4, 14, 1, 1.0, 0.2, (108, 112), 0.6),
    ("g.png", 4, 15, 1, 0.85, 0.0, (110, 110), 0.75),
    ("h.png", 5, 16, 2, 1.0, 0.5, (110, 110), 0.9),
    ("i.png", 6, 17, 2, 0.95, -0.1, (111, 109), 0.85),
]
IDENTITY_OF_TEMPLATE = {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2}


def plant_ijb(root, prefix="ijbc", images=tuple(IMAGES)):
    (root / "meta").mkdir(parents=True)
    (root / "loose_crop").mkdir()
    tid_mid, points = [], []
    for name, template, media, identity, scale, angle, centre, score in images:
        image, landmarks = planted_face(identity, scale, angle, centre)
        Image.fromarray(image).save(root / "loose_crop" / name)
        tid_mid.append(f"{name} {template} {media}")
        coordinates = " ".join(f"{v:.4f}" for v in landmarks.reshape(-1))
        points.append(f"{name} {coordinates} {score}")
    pairs = [
        f"{a} {b} {int(IDENTITY_OF_TEMPLATE[a] == IDENTITY_OF_TEMPLATE[b])}"
        for a in IDENTITY_OF_TEMPLATE
        for b in IDENTITY_OF_TEMPLATE
        if a < b
    ]
    (root / "meta" / f"{prefix}_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    (root / "meta" / f"{prefix}_name_5pts_score.txt").write_text("\n".join(points) + "\n")
    (root / "meta" / f"{prefix}_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    return root


def test_planted_ijb_templates_of_one_identity_match_exactly(tmp_path):
    root = plant_ijb(tmp_path / "IJBC")
    result = ver.ijb_verification(root, "IJBC", channel_mean_embed, batch_size=4)
    assert result["tar_at_far"]["1e-4"] == 1.0 and result["tar_at_far"]["1e-5"] == 1.0
    assert result["tar_at_far"]["1e-6"] is None  # 12 impostor pairs cannot measure it
    assert (result["templates"], result["pairs"], result["images"]) == (6, 15, 9)
    assert (result["genuine_pairs"], result["impostor_pairs"]) == (3, 12)

    meta = ver.read_ijb_meta(root, "ijbc")
    features = ver.ijb_image_features(root, meta, channel_mean_embed, batch_size=4)
    # RGB, the flip sum (2x) and the detector score: a.png, red, score 0.9
    np.testing.assert_allclose(features[0], 2 * 0.9 * np.array([1, -1, -1]), atol=1e-5)
    scores = ver.ijb_scores(meta, features)
    genuine = meta.labels == 1
    # The crop is the identity's colour only if the landmarks were followed; a crop with noise
    # in it would move a genuine score off 1.
    np.testing.assert_allclose(scores[genuine], 1.0, atol=1e-6)
    np.testing.assert_allclose(scores[~genuine], -1 / 3, atol=1e-6)


def test_planted_ijb_tar_matches_a_brute_force_count(tmp_path):
    # Template 2 (red) also holds a green face, of a better detector score: it scores 0.23
    # with template 1, its genuine pair, and 0.84 with the green templates 3 and 4. No
    # threshold accepts none of those impostors and the 1-2 pair: TAR 2/3 at FAR 1e-4.
    polluted = [*IMAGES, ("j.png", 2, 18, 1, 1.0, 0.0, (110, 110), 0.9)]
    polluted[3] = ("d.png", 2, 12, 0, 0.9, 0.1, (105, 110), 0.5)
    root = plant_ijb(tmp_path / "IJBB", prefix="ijbb", images=polluted)
    result = ver.ijb_verification(root, "IJBB", channel_mean_embed, batch_size=3)
    meta = ver.read_ijb_meta(root, "ijbb")
    scores = ver.ijb_scores(meta, ver.ijb_image_features(root, meta, channel_mean_embed, 3))
    genuine, impostor = scores[meta.labels == 1], scores[meta.labels == 0]
    for label, far in (("1e-4", 1e-4), ("1e-5", 1e-5)):
        assert result["tar_at_far"][label] == brute_force_tar(genuine, impostor, far)
        assert result["tar_at_far"][label] == insightface_tar(meta.labels, scores, far)
    assert result["tar_at_far"]["1e-4"] == pytest.approx(2 / 3)
    assert result["images"] == 10


def test_ijb_meta_problems_name_the_file_and_line(tmp_path):
    root = plant_ijb(tmp_path / "IJBC")
    meta = root / "meta"
    originals = {path.name: path.read_text() for path in meta.iterdir()}

    def broken(name, edit, expected):
        for path in meta.iterdir():
            path.write_text(originals[path.name])
        (meta / name).write_text(edit(originals[name]))
        with pytest.raises(DataError, match=expected) as error:
            ver.read_ijb_meta(root, "IJBC")
        assert "\n" not in str(error.value)

    pairs, points, tid = (
        "ijbc_template_pair_label.txt",
        "ijbc_name_5pts_score.txt",
        "ijbc_face_tid_mid.txt",
    )
    broken(pairs, lambda t: "\n\n" + t.replace("1 2 1", "1 99 1"), rf"{pairs}:3: template 99")
    broken(pairs, lambda t: t.replace("1 3 0", "1 3 x"), rf"{pairs}:2: 'x' is not int")
    broken(pairs, lambda t: t.replace("1 4 0", "1 4"), rf"{pairs}:3: 2 fields, not 3")
    broken(pairs, lambda t: t.replace("1 5 0", "1 5 2"), rf"{pairs}:4: label 2, not 0 or 1")
    broken(pairs, lambda t: "1 2 1\n", rf"{pairs}: every pair has label 1")
    broken(pairs, lambda t: "", rf"{pairs}: no lines")
    broken(points, lambda t: t.replace(" 0.7\n", " 0.7 1\n"), rf"{points}:2: 13 fields")
    broken(points, lambda t: t.replace(" 0.7\n", " nan\n"), rf"{points}:2: 'nan' is not a finite")
    lines = originals[points].splitlines()
    swapped = "\n".join([lines[1], lines[0], *lines[2:]])
    broken(points, lambda t: swapped, rf"{points}:1: image b.png, but .*{tid} has a.png")
    broken(points, lambda t: "\n".join(lines[:-1]), rf"{points}: 8 images, .*{tid} 9")
    broken(tid, lambda t: t.replace("c.png 1 11", "c.png one 11"), rf"{tid}:3: 'one' is not")
    (meta / tid).unlink()
    with pytest.raises(DataError, match=rf"{tid}: no such file"):
        ver.read_ijb_meta(root, "IJBC")


def test_a_missing_ijb_image_is_named(tmp_path):
    root = plant_ijb(tmp_path / "IJBC")
    (root / "loose_crop" / "e.png").unlink()
    with pytest.raises(DataError, match=r"ijbc_name_5pts_score.txt, image 5: .*e.png"):
        ver.ijb_verification(root, "ijbc", channel_mean_embed, batch_size=4)
