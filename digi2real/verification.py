"""Benchmarking a trained recognizer the way insightface does: the 1:1 verification sets (LFW,
CFP-FP, AgeDB-30, CALFW, CPLFW, CFP-FF) in insightface's `.bin` files, and IJB-B/C 1:1.

The figures are comparable with published ones only if every step is insightface's. The steps,
and where they are (deepinsight/insightface at 7fadd42; `eval/verification.py` is
recognition/arcface_torch/eval/verification.py, `eval_ijbc.py` recognition/arcface_torch/
eval_ijbc.py, `ijb_11.py` recognition/_evaluation_/ijb/ijb_11.py):

Verification sets (`eval/verification.py`)
- A `.bin` is a pickle of (2N encoded images, N "same identity" flags), read with
  `pickle.load(f, encoding='bytes')` because Python 2 wrote them (l.202-206). Pair i is images
  2i and 2i+1 (`embeddings[0::2]`, `embeddings[1::2]`, l.182-183).
- Images are decoded as RGB and normalised (x / 255 - 0.5) / 0.5 (l.242); each is embedded as
  it is and flipped along its width (`flip(axis=2)` of C x H x W, l.217-219); its embedding is
  the L2-normalised sum of the two (l.268-269), in float64 (l.249).
- Distance: squared L2 of the normalised embeddings (l.72-73); candidate thresholds
  np.arange(0, 4, 0.01) (l.181); predicted same: distance < threshold (l.110).
- Ten contiguous folds in order, sklearn's KFold(n_splits=10, shuffle=False) (l.41-51, 64). Per
  fold the threshold with the best accuracy on the other nine, the first of equals (np.argmax,
  l.91-95), is scored on the fold (l.100-102); the figure is the mean and np.std of the ten
  fold accuracies (l.273). The accuracy is (TP + TN) / pairs (l.120).

IJB-B/C 1:1 (`ijb_11.py`, same steps in `eval_ijbc.py`)
- meta/<t>_face_tid_mid.txt: image, template, media per line (l.51-56); meta/<t>_template_
  pair_label.txt: template, template, label (l.62-69); meta/<t>_name_5pts_score.txt: image,
  five landmarks (x, y), detector score (l.95-104), images in loose_crop/ (l.256-257). The
  landmark file and the template file are matched line by line, never by name: this module
  checks that their names agree.
- Alignment: a similarity transform (skimage) of the five landmarks onto ArcFace's template,
  cv2.warpAffine to 112x112 with black borders, BGR read then RGB (`eval_ijbc.py` l.64-94):
  insightface.utils.face_align.norm_crop, the alignment digi2real.faces uses already.
- Flip test "F2": the image's feature is the SUM of the unnormalised features of the image and
  of its width flip (`eval_ijbc.py` l.95, `ijb_11.py` l.280-287).
- use_norm_score=True (l.45): the image feature is NOT normalised, its norm weights it;
  use_detector_score=True (l.46): it is multiplied by the detector score (l.296-299).
- Template feature: features of the same media averaged, the media features summed, the sum
  L2-normalised (l.114-148); pair score: the dot product of the two template features
  (l.153-179).
- TAR@FAR: sklearn's roc_curve (collinear points dropped, drop_intermediate's default) of
  (label, score); from its points flipped, the one whose FPR is closest to the target, the
  first of equals (min over (|fpr - target|, index), l.350-366): the largest TPR at that FPR.
  The ROC is computed here with numpy, the same points as scikit-learn's (a dev dependency
  only; the tests compare the two).

Loading a `.bin` never runs code from it: the unpickler refuses every global (no class, no
function, so no reduce payload) and the result may hold only bytes, str, lists, tuples, bools,
ints and floats.
"""

from __future__ import annotations

import io
import math
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from digi2real.atomic import atomic_path
from digi2real.errors import DataError
from digi2real.face_tensors import FACE_SIZE, decode_face, normalised
from digi2real.layout import ijb_meta_files

Embed = Callable[[torch.Tensor], torch.Tensor]

THRESHOLDS = np.arange(0, 4, 0.01)  # insightface's candidates, this exact array (l.181)
FOLDS = 10
IJB_TARGETS = ("IJBB", "IJBC")
# TAR is reported at these FARs; insightface's table has 1e-6 to 1e-1 (ijb_11.py l.346).
IJB_FARS = {"1e-4": 1e-4, "1e-5": 1e-5, "1e-6": 1e-6}
# 1e-4 and 1e-5 are reported whatever the number of impostor pairs, as insightface prints them;
# 1e-6 only where at least a million impostor pairs make one false accept a rate of 1e-6
# (IJB-B and IJB-C have 8 and 15.6 million): below that the closest ROC point is FPR 0.
_ALWAYS_REPORTED = ("1e-4", "1e-5")

# --- the .bin files ----------------------------------------------------------------------------

_ADMITTED = (bytes, str, list, tuple, bool, int, float)
_ADMITTED_NAMES = "bytes, str, lists, tuples, bools, ints and floats"


@dataclass
class VerificationSet:
    name: str  # the file's stem: lfw, cfp_fp, agedb_30, ...
    images: np.ndarray  # uint8 (2N, 112, 112, 3) RGB; pair i is images 2i and 2i + 1
    issame: np.ndarray  # bool (N,)

    @property
    def pairs(self) -> int:
        return len(self.issame)


class _ForbiddenGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.reference = f"{module}.{name}"


class _DataOnlyUnpickler(pickle.Unpickler):
    """Builds only what pickle's opcodes make without a global: no class, no function, so no
    reduce, build or persistent payload can run."""

    def find_class(self, module: str, name: str):
        raise _ForbiddenGlobal(module, name)

    def persistent_load(self, pid):
        raise _ForbiddenGlobal("persistent id", repr(pid)[:60])


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _unpickle(path: Path, data: bytes):
    try:
        # encoding="bytes": Python 2's str (the encoded images) becomes bytes, as insightface
        # reads them (eval/verification.py l.206), never text decoded as ASCII.
        return _DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _ForbiddenGlobal as error:
        raise DataError(
            f"{path}: refers to {error.reference}: a verification file holds only bytes, "
            "lists and bools"
        ) from None
    except (pickle.UnpicklingError, EOFError) as error:
        raise DataError(f"{path}: truncated or not a pickle ({_one_line(error)})") from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as error:
        # What malformed opcodes raise (a bad memo index, a string that does not decode, ...).
        raise DataError(f"{path}: not a readable pickle ({_one_line(error)})") from None


def _check_admitted(path: Path, value: object) -> None:
    """Every object inside `value` is of an admitted type. Iterative, so a deeply nested list
    cannot exhaust the recursion limit; each list or tuple walked once, so a list holding
    itself (pickle's memo makes one without a global) or a list shared a million times (a
    few bytes of pickle) ends."""
    pending, seen = [value], set()
    while pending:
        item = pending.pop()
        if type(item) not in _ADMITTED:  # exact types: a subclass would need a global anyway
            raise DataError(
                f"{path}: holds a {type(item).__name__}: a verification file holds only "
                f"{_ADMITTED_NAMES}"
            )
        if type(item) in (list, tuple) and id(item) not in seen:
            seen.add(id(item))
            pending.extend(item)


def _flags(path: Path, issame: Sequence) -> np.ndarray:
    for index, flag in enumerate(issame):
        # Python 2 and protocol 0 write True as "I01", read back as a bool; 0 and 1 are the
        # same flags written by a tool without bools.
        if type(flag) is not bool and not (type(flag) is int and flag in (0, 1)):
            raise DataError(
                f"{path}: pair {index}'s flag is {_one_line(repr(flag))[:40]}, not a bool"
            )
    return np.array([bool(flag) for flag in issame], dtype=bool)


def load_bin(path: Path) -> VerificationSet:
    """An insightface verification file, read without running anything from it; every problem
    is a DataError of one line naming `path`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None
    content = _unpickle(path, data)
    _check_admitted(path, content)
    # insightface unpacks `bins, issame_list = pickle.load(f)`: any pair of sequences.
    if type(content) not in (tuple, list) or len(content) != 2:
        kind = type(content).__name__
        if type(content) in (tuple, list):
            kind = f"{kind} of {len(content)}"
        raise DataError(f"{path}: holds a {kind}, not the pair (images, same-identity flags)")
    images, issame = content
    for part, what in ((images, "images"), (issame, "same-identity flags")):
        if type(part) not in (list, tuple):
            raise DataError(f"{path}: its {what} are a {type(part).__name__}, not a list")
    if len(issame) == 0:
        raise DataError(f"{path}: holds no pairs")
    if len(images) != 2 * len(issame):
        raise DataError(
            f"{path}: {len(images)} images for {len(issame)} pairs; a pair is two images, "
            f"so {2 * len(issame)} were expected"
        )
    flags = _flags(path, issame)
    faces = np.empty((len(images), FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    for index, encoded in enumerate(images):
        if type(encoded) is not bytes:
            raise DataError(f"{path}: image {index} is a {type(encoded).__name__}, not bytes")
        faces[index] = decode_face(encoded, f"{path}: image {index}")
    return VerificationSet(name=path.stem, images=faces, issame=flags)


def write_bin(path: Path, encoded_images: list[bytes], issame: list[bool]) -> None:
    """A verification file in insightface's format, written atomically (a reader sees the old
    file or the whole new one)."""
    if len(encoded_images) != 2 * len(issame):
        raise ValueError(f"{len(encoded_images)} images for {len(issame)} pairs")
    content = ([bytes(image) for image in encoded_images], [bool(flag) for flag in issame])
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        pickle.dump(content, handle, protocol=4)


# --- embeddings --------------------------------------------------------------------------------


def l2_normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, a zero row left zero: sklearn.preprocessing.normalize,
    which insightface calls (eval/verification.py l.269, ijb_11.py l.145)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    # normalize's _handle_zeros_in_scale: a norm under 10 eps divides by 1.
    norms[norms < 10 * np.finfo(np.float64).eps] = 1.0
    return vectors / norms[:, None]


def _embed_batch(embed: Embed, faces: np.ndarray) -> np.ndarray:
    """`embed` of uint8 N x 112 x 112 x 3 RGB faces, normalised as the recognizer reads them,
    as float64 (N, D)."""
    with torch.no_grad():
        features = embed(normalised(np.ascontiguousarray(faces)))
    features = features.detach().float().cpu().numpy().astype(np.float64)
    if features.ndim != 2 or features.shape[0] != len(faces):
        raise ValueError(f"embed gave {features.shape} for {len(faces)} faces, not (N, D)")
    return features


def flip_sums(embed: Embed, faces: np.ndarray) -> np.ndarray:
    """Per face, the unnormalised sum of the embeddings of the face and of its flip along the
    width (axis 2 of N x H x W x C), float64 (N, D)."""
    return _embed_batch(embed, faces) + _embed_batch(embed, faces[:, :, ::-1])


def flip_embeddings(embed: Embed, images: np.ndarray, batch_size: int) -> np.ndarray:
    """insightface's embedding of each uint8 RGB face (2N x 112 x 112 x 3): the L2-normalised
    sum of the embeddings of the face and of its horizontal flip, float64 (2N, D)."""
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} is not positive")
    sums = [
        flip_sums(embed, images[start : start + batch_size])
        for start in range(0, len(images), batch_size)
    ]
    embeddings = np.concatenate(sums)
    if not np.all(np.isfinite(embeddings)):
        bad = int(np.sum(~np.all(np.isfinite(embeddings), axis=1)))
        raise DataError(f"the recognizer gave {bad} non-finite embeddings of {len(images)} faces")
    return l2_normalised(embeddings)


# --- 1:1 verification, 10 folds ----------------------------------------------------------------


@dataclass
class VerificationResult:
    accuracy: float  # mean of the fold accuracies, insightface's "Accuracy-Flip"
    std: float  # np.std of the fold accuracies (population std, as insightface)
    threshold: float  # mean of the folds' chosen thresholds on the squared distance
    pairs: int
    fold_accuracies: list[float]
    fold_thresholds: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def fold_indices(pairs: int, folds: int = FOLDS) -> list[np.ndarray]:
    """The test indices of each fold: contiguous runs in order, the first `pairs % folds` one
    longer, as sklearn's KFold(n_splits=folds, shuffle=False); one fold is every pair, trained
    and tested on (insightface's LFold with n_splits=1)."""
    if folds < 1 or folds > pairs:
        raise ValueError(f"{folds} folds of {pairs} pairs")
    sizes = np.full(folds, pairs // folds)
    sizes[: pairs % folds] += 1
    ends = np.cumsum(sizes)
    return [np.arange(end - size, end) for size, end in zip(sizes, ends, strict=True)]


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """Squared L2 distance of rows 2i and 2i + 1, insightface's subtract, square, sum."""
    embeddings = np.asarray(embeddings)
    return np.sum(np.square(np.subtract(embeddings[0::2], embeddings[1::2])), axis=1)


def _correct_counts(distances: np.ndarray, issame: np.ndarray) -> np.ndarray:
    """For each threshold of THRESHOLDS, how many of the pairs `distance < threshold` gets
    right; by sorting, not a pairs x thresholds table."""
    same = np.sort(distances[issame])
    different = np.sort(distances[~issame])
    # searchsorted "left" counts the values strictly below the threshold, np.less's test; a NaN
    # sorts last and is never below, predicted different as np.less predicts it.
    accepted_same = np.searchsorted(same, THRESHOLDS, side="left")
    rejected_different = len(different) - np.searchsorted(different, THRESHOLDS, side="left")
    return accepted_same + rejected_different


def verification(
    embeddings: np.ndarray, issame: np.ndarray, folds: int = FOLDS
) -> VerificationResult:
    """insightface's 10-fold accuracy of pairs (rows 2i, 2i + 1) of normalised `embeddings`."""
    issame = np.asarray(issame, dtype=bool)
    if len(embeddings) != 2 * len(issame):
        raise ValueError(f"{len(embeddings)} embeddings for {len(issame)} pairs")
    distances = pair_distances(embeddings)
    test_sets = fold_indices(len(issame), folds)
    correct = np.stack([_correct_counts(distances[t], issame[t]) for t in test_sets])
    total = correct.sum(axis=0)
    accuracies, thresholds = [], []
    for fold, test in enumerate(test_sets):
        # The training folds' counts: every pair's minus this fold's (one fold: every pair).
        train = total - correct[fold] if folds > 1 else total
        # Dividing by the training size changes no order: argmax of counts is argmax of
        # accuracies, the first of equals as np.argmax picks it.
        best = int(np.argmax(train))
        accuracies.append(float(correct[fold, best]) / len(test))
        thresholds.append(float(THRESHOLDS[best]))
    return VerificationResult(
        accuracy=float(np.mean(accuracies)),
        std=float(np.std(accuracies)),
        threshold=float(np.mean(thresholds)),
        pairs=len(issame),
        fold_accuracies=accuracies,
        fold_thresholds=thresholds,
    )


def benchmark(data: VerificationSet, embed: Embed, batch_size: int) -> VerificationResult:
    """A verification set's figure for a recognizer: flip embeddings, then 10 folds."""
    return verification(flip_embeddings(embed, data.images, batch_size), data.issame)


# --- IJB-B/C 1:1 ---------------------------------------------------------------------------------


@dataclass
class IjbMeta:
    names: list[str]  # image names, in the order of the landmark file
    templates: np.ndarray  # int64 (M,) the template of each image
    medias: np.ndarray  # int64 (M,) the media (photo or video) of each image
    landmarks: np.ndarray  # float32 (M, 5, 2) in the loose crop's pixels
    detector_scores: np.ndarray  # float32 (M,)
    pair_templates: np.ndarray  # int64 (P, 2)
    labels: np.ndarray  # int64 (P,), 1: same identity
    landmark_file: Path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of `path` with their numbers, read as they come (a pair file is 15 million
    lines); one line naming the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            yield from enumerate(handle, start=1)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({_one_line(error)})") from None


def _rows(path: Path, count: int, what: str) -> Iterator[tuple[int, list[str]]]:
    """The whitespace-separated fields of each non-empty line of `path`, with its number;
    a line of another number of fields is a DataError naming the file and line."""
    empty = True
    for number, line in _lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != count:
            raise DataError(f"{path}:{number}: {len(fields)} fields, not {count} ({what})")
        empty = False
        yield number, fields
    if empty:
        raise DataError(f"{path}: no lines ({what})")


def _number(path: Path, line: int, text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise DataError(f"{path}:{line}: {text[:40]!r} is not {kind.__name__}") from None
    if kind is float and not math.isfinite(value):
        raise DataError(f"{path}:{line}: {text[:40]!r} is not a finite number")
    return value


def _integer_table(path: Path, count: int, what: str) -> np.ndarray:
    """The integers of `path`, `count` a line, as int64 rows. numpy's
    loadtxt reads a pair file's 15 million lines in seconds; where it fails, a scan line by
    line finds the line to name."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({_one_line(error)})") from None
    except ValueError as error:
        for number, fields in _rows(path, count, what):
            for field in fields:
                _number(path, number, field, int)
        raise DataError(f"{path}: {_one_line(error)} ({what})") from None
    if table.size == 0:
        raise DataError(f"{path}: no lines ({what})")
    if table.shape[1] != count:
        for _ in _rows(path, count, what):  # names the first line of another length
            pass
    return table


def _line_of_row(path: Path, row: int) -> int:
    """The line number of the `row`-th non-empty line of `path` (from 0), for a message."""
    rows = (number for number, line in _lines(path) if line.strip())
    return next(number for rank, number in enumerate(rows) if rank == row)


def read_ijb_meta(root: Path, target: str) -> IjbMeta:
    """insightface's IJB meta files under `root`/meta, checked: every line whole, every number
    a number, the landmark file's images those of the template file in the same order, every
    pair's templates known, both labels present."""
    if target.upper() not in IJB_TARGETS:
        raise ValueError(f"IJB target {target!r} is not one of {', '.join(IJB_TARGETS)}")
    files = ijb_meta_files(root, target)
    tid_mid, pair_label, five_points = files["images"], files["pairs"], files["landmarks"]

    image_rows = list(_rows(tid_mid, 3, "image, template, media"))
    templates = np.array([_number(tid_mid, n, f[1], int) for n, f in image_rows], np.int64)
    medias = np.array([_number(tid_mid, n, f[2], int) for n, f in image_rows], np.int64)

    names, numbers = [], []
    point_rows = _rows(five_points, 12, "image, 5 landmarks x y, detector score")
    for rank, (number, fields) in enumerate(point_rows):
        # insightface matches the two files by line, never by name: a shuffled or shorter
        # file would give images the wrong templates silently.
        if rank >= len(image_rows) or fields[0] != image_rows[rank][1][0]:
            theirs = image_rows[rank][1][0] if rank < len(image_rows) else "no line"
            raise DataError(
                f"{five_points}:{number}: image {fields[0]}, but {tid_mid} has {theirs} at "
                "this rank; insightface pairs the two files' lines in order"
            )
        names.append(fields[0])
        numbers.append([_number(five_points, number, x, float) for x in fields[1:]])
    if len(names) != len(image_rows):
        raise DataError(
            f"{five_points}: {len(names)} images, {tid_mid} {len(image_rows)}; insightface "
            "pairs the two files' lines in order"
        )
    points = np.array(numbers, dtype=np.float32)

    pairs = _integer_table(pair_label, 3, "template, template, label")
    known = np.unique(templates)
    for column in (0, 1):
        unknown = ~np.isin(pairs[:, column], known)
        if unknown.any():
            row = int(np.argmax(unknown))
            raise DataError(
                f"{pair_label}:{_line_of_row(pair_label, row)}: template {pairs[row, column]} "
                f"has no image "
                f"in {tid_mid}"
            )
    bad_label = ~np.isin(pairs[:, 2], (0, 1))
    if bad_label.any():
        row = int(np.argmax(bad_label))
        line = _line_of_row(pair_label, row)
        raise DataError(f"{pair_label}:{line}: label {pairs[row, 2]}, not 0 or 1")
    if pairs[:, 2].min() == pairs[:, 2].max():
        raise DataError(f"{pair_label}: every pair has label {pairs[0, 2]}; a ROC needs both")
    return IjbMeta(
        names=names,
        templates=templates,
        medias=medias,
        landmarks=points[:, :10].reshape(-1, 5, 2),
        detector_scores=points[:, 10],
        pair_templates=pairs[:, :2],
        labels=pairs[:, 2],
        landmark_file=five_points,
    )


def align_face(image_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 RGB face of a BGR image, its five landmarks mapped onto ArcFace's template:
    insightface's norm_crop, the alignment of digi2real.faces and of eval_ijbc.py."""
    from insightface.utils import face_align

    with warnings.catch_warnings():
        # insightface calls a scikit-image API that newer releases deprecate; not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        aligned = face_align.norm_crop(image_bgr, landmark=landmarks, image_size=FACE_SIZE)
    return np.ascontiguousarray(aligned[..., ::-1])  # eval_ijbc.py l.94: BGR to RGB


def ijb_image_features(root: Path, meta: IjbMeta, embed: Embed, batch_size: int) -> np.ndarray:
    """Each image's flip-sum feature times its detector score, unnormalised (use_norm_score
    and use_detector_score), float32 (M, D) as insightface keeps them."""
    from digi2real.faces import UnreadableImage, read_image

    features: list[np.ndarray] = []
    for start in range(0, len(meta.names), batch_size):
        faces = []
        for index in range(start, min(start + batch_size, len(meta.names))):
            try:
                image = read_image(Path(root) / "loose_crop" / meta.names[index])
            except UnreadableImage as error:
                raise DataError(f"{meta.landmark_file}, image {index + 1}: {error}") from None
            faces.append(align_face(image, meta.landmarks[index]))
        features.append(flip_sums(embed, np.stack(faces)).astype(np.float32))
    weighted = np.concatenate(features) * meta.detector_scores[:, None]
    if not np.all(np.isfinite(weighted)):
        raise DataError(f"the recognizer gave non-finite features for {meta.landmark_file}")
    return weighted


def template_features(
    features: np.ndarray, templates: np.ndarray, medias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(the sorted template ids, their L2-normalised features): per template, the mean feature
    of each of its media, summed over its media (ijb_11.py l.114-148)."""
    keys, media_of_image = np.unique(
        np.stack([templates, medias], axis=1), axis=0, return_inverse=True
    )
    media_of_image = media_of_image.reshape(-1)
    media_sums = np.zeros((len(keys), features.shape[1]))
    np.add.at(media_sums, media_of_image, features)
    media_means = media_sums / np.bincount(media_of_image, minlength=len(keys))[:, None]
    template_ids, template_of_media = np.unique(keys[:, 0], return_inverse=True)
    template_sums = np.zeros((len(template_ids), features.shape[1]))
    np.add.at(template_sums, template_of_media.reshape(-1), media_means)
    return template_ids, l2_normalised(template_sums)


def pair_scores(
    template_ids: np.ndarray, features: np.ndarray, pair_templates: np.ndarray
) -> np.ndarray:
    """Cosine of each pair's template features (they are normalised: the dot product)."""
    first = features[np.searchsorted(template_ids, pair_templates[:, 0])]
    second = features[np.searchsorted(template_ids, pair_templates[:, 1])]
    return np.sum(first * second, axis=-1)


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of accepting score >= t, t from +inf down through every distinct score, the
    collinear points dropped: sklearn.metrics.roc_curve's points with its defaults."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, positive = np.asarray(scores)[order], np.asarray(labels)[order] == 1
    last_of_score = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(positive, dtype=np.float64)[last_of_score]
    false_positives = 1 + last_of_score - true_positives
    if len(true_positives) > 2:
        # A point is kept where the curve turns: a nonzero second difference of either count.
        corner = np.r_[
            True,
            np.logical_or(np.diff(false_positives, 2), np.diff(true_positives, 2)),
            True,
        ]
        true_positives, false_positives = true_positives[corner], false_positives[corner]
    true_positives = np.r_[0.0, true_positives]
    false_positives = np.r_[0.0, false_positives]
    return false_positives / false_positives[-1], true_positives / true_positives[-1]


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """insightface's TAR at `far`: of the ROC points, the one whose FPR is closest to `far`,
    the last in ROC order of equals (first of the flipped arrays), i.e. the largest TPR."""
    flipped_fpr, flipped_tpr = fpr[::-1], tpr[::-1]
    return float(flipped_tpr[int(np.argmin(np.abs(flipped_fpr - far)))])


def ijb_scores(meta: IjbMeta, features: np.ndarray) -> np.ndarray:
    template_ids, template_feats = template_features(features, meta.templates, meta.medias)
    return pair_scores(template_ids, template_feats, meta.pair_templates)


def ijb_summary(meta: IjbMeta, scores: np.ndarray, target: str) -> dict:
    """TAR at FAR 1e-4, 1e-5 and 1e-6 (None where the set cannot measure it, see IJB_FARS)
    and the counts."""
    fpr, tpr = roc_curve(meta.labels, scores)
    impostors = int(np.sum(meta.labels == 0))
    tar = {
        label: tar_at_far(fpr, tpr, far)
        if label in _ALWAYS_REPORTED or far * impostors >= 1
        else None
        for label, far in IJB_FARS.items()
    }
    return {
        "target": target.upper(),
        "tar_at_far": tar,
        "templates": int(len(np.unique(meta.templates))),
        "pairs": int(len(meta.labels)),
        "genuine_pairs": int(np.sum(meta.labels == 1)),
        "impostor_pairs": impostors,
        "images": int(len(meta.names)),
    }


def ijb_verification(root: Path, target: str, embed: Embed, batch_size: int) -> dict:
    """IJB-B or IJB-C 1:1 verification of a recognizer, insightface's protocol (module doc)."""
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} is not positive")
    meta = read_ijb_meta(Path(root), target)
    features = ijb_image_features(Path(root), meta, embed, batch_size)
    return ijb_summary(meta, ijb_scores(meta, features), target)
