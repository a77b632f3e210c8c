"""The face pipeline: every image mode decodes, every bad image gets its status."""

import numpy as np
import pytest
from PIL import Image

from digi2real.faces import FacePipeline, UnreadableImage, read_image
from digi2real.status import Status

pytestmark = pytest.mark.unit


def rgb_face(size=112):
    """A tiny synthetic picture with distinct channels, so colour-order mistakes show."""
    y, x = np.mgrid[:size, :size]
    return np.stack([x * 2 % 256, y * 2 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_rgb_png_decodes_to_bgr(tmp_path):
    rgb = rgb_face()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb[..., ::-1])


def test_rgba_composites_transparent_pixels_on_black(tmp_path):
    rgba = np.dstack([rgb_face(), np.full((112, 112), 255, np.uint8)])
    rgba[:10, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    bgr = read_image(tmp_path / "a.png")
    assert bgr.shape == (112, 112, 3) and bgr.dtype == np.uint8
    assert not bgr[:10].any()
    np.testing.assert_array_equal(bgr[10:], rgb_face()[10:, :, ::-1])


def test_grayscale_and_16_bit_become_three_channel_8_bit(tmp_path):
    gray = rgb_face()[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "i16.png")
    for name in ("l.png", "i16.png"):
        bgr = read_image(tmp_path / name)
        assert bgr.shape == (112, 112, 3) and bgr.dtype == np.uint8
        np.testing.assert_array_equal(bgr[..., 1], gray)


def test_palette_image_decodes(tmp_path):
    Image.fromarray(rgb_face()).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (112, 112, 3)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.png", b"", "not an image"),
        ("text.png", b"this is not a picture\n", "not an image"),
        ("missing.png", None, "file not found"),
    ],
)
def test_unreadable_files_raise_with_the_path(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(UnreadableImage, match=message) as error:
        read_image(tmp_path / name)
    assert name in str(error.value)


def test_truncated_png_is_unreadable(tmp_path):
    Image.fromarray(rgb_face()).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage, match="cut.png"):
        read_image(tmp_path / "cut.png")


class FakeDetector:
    """Finds a face only in images that are not all black."""

    def prepare(self, ctx_id, **kwargs):
        self.prepared = kwargs

    def detect(self, image, input_size, max_num, metric):
        if not image.any():
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        landmarks = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])
        return np.array([[0, 0, 112, 112, 0.9]], np.float32), landmarks[None].astype(np.float32)


class FakeRecognizer:
    """Returns NaN for images whose centre pixel is pure red (BGR 0,0,255)."""

    def __init__(self):
        self.batches = []

    def get_feat(self, images):
        self.batches.append(len(images))
        features = np.stack(
            [np.resize(image.astype(np.float32).ravel(), 512) + 1 for image in images]
        )
        for k, image in enumerate(images):
            if tuple(image[56, 56]) == (0, 0, 255):
                features[k] = np.nan
        return features


def test_statuses_of_a_mixed_batch(tmp_path):
    good = rgb_face()
    Image.fromarray(good).save(tmp_path / "good.png")
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(tmp_path / "black.png")
    red = np.zeros((112, 112, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    recognizer = FakeRecognizer()
    pipeline = FacePipeline(FakeDetector(), recognizer, det_size=128, batch_size=2)
    names = ["good.png", "black.png", "broken.png", "red.png", "good.png"]
    results = list(pipeline.process_paths(tmp_path / n for n in names))
    assert [r.status for r in results] == [
        Status.OK,
        Status.NO_FACE,
        Status.UNREADABLE,
        Status.NONFINITE,
        Status.OK,
    ]
    assert "broken.png" in results[2].message
    for result in (results[0], results[4]):
        assert result.embedding.shape == (512,)
        assert np.linalg.norm(result.embedding) == pytest.approx(1.0, abs=1e-6)
        assert result.det_score == pytest.approx(0.9)
        assert result.aligned.shape == (112, 112, 3)
    assert results[1].embedding is None and results[3].embedding is None
    assert max(recognizer.batches) <= 2, "recognition runs in batches of batch_size"


def test_prealigned_mode_skips_detection_and_resizes(tmp_path):
    Image.fromarray(rgb_face(128)).save(tmp_path / "big.png")
    pipeline = FacePipeline(None, FakeRecognizer(), prealigned=True)
    (result,) = pipeline.process_paths([tmp_path / "big.png"])
    assert result.status is Status.OK and result.aligned.shape == (112, 112, 3)
    assert np.isnan(result.det_score)


def test_padding_adds_a_black_border_before_detection():
    seen = {}

    class Recording(FakeDetector):
        def detect(self, image, **kwargs):
            seen["shape"] = image.shape
            return super().detect(image, **kwargs)

    pipeline = FacePipeline(Recording(), FakeRecognizer(), pad=0.25)
    pipeline.align(np.full((100, 100, 3), 200, np.uint8))
    assert seen["shape"] == (150, 150, 3)


class FakeSession:
    def __init__(self, providers):
        self.providers = providers

    def get_providers(self):
        return self.providers


class DetectorOnProviders:
    def __init__(self, providers):
        self.session = FakeSession(providers)
        self.prepared_with = None

    def prepare(self, ctx_id, **kwargs):
        self.prepared_with = ctx_id


@pytest.mark.parametrize(
    "providers, ctx_id",
    [(["CUDAExecutionProvider", "CPUExecutionProvider"], 0), (["CPUExecutionProvider"], -1)],
)
def test_the_detector_stays_on_the_provider_it_was_loaded_with(providers, ctx_id):
    """insightface's prepare(-1) moves a session to the CPU: a CUDA session gets 0."""
    from digi2real.faces import FacePipeline

    detector = DetectorOnProviders(providers)
    FacePipeline(detector, None)
    assert detector.prepared_with == ctx_id
