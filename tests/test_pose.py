"""Head pose from five landmarks against independent references: scipy's Euler rotations under
exact orthographic and pinhole projection, hand-made image-plane cases, and OpenCV's solvePnP."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from digi2real.pose import MEAN_FACE_3D, head_pose, pose_spread

pytestmark = pytest.mark.unit

FOCAL = 1000.0
DISTANCE = 600.0
SIZE = 512
CAMERA = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1]])
# OpenCV's camera frame (x right, y down, z forward) from the model's (x right, y up, z back).
FLIP = np.diag([1.0, -1.0, -1.0])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The documented convention R = Rz(roll) Ry(yaw) Rx(-pitch), by scipy (extrinsic xyz)."""
    return Rotation.from_euler("xyz", [-pitch, yaw, roll], degrees=True).as_matrix()


def orthographic(r: np.ndarray, scale: float = 2.7, centre=(250.0, 270.0)) -> np.ndarray:
    """(5, 2) image landmarks (y down) of the rotated mean face, scaled orthographic."""
    rotated = MEAN_FACE_3D @ r.T
    return np.stack([centre[0] + scale * rotated[:, 0], centre[1] - scale * rotated[:, 1]], 1)


def perspective(r: np.ndarray) -> np.ndarray:
    """(5, 2) image landmarks of the rotated mean face, nose tip DISTANCE mm in front of a
    pinhole camera (FOCAL px, principal point at the centre of a SIZE px image)."""
    camera = MEAN_FACE_3D @ (FLIP @ r).T + [0.0, 0.0, DISTANCE]
    return camera[:, :2] / camera[:, 2:] * FOCAL + SIZE / 2


def grid(yaws, pitches, rolls) -> np.ndarray:
    return np.array(list(itertools.product(yaws, pitches, rolls)), dtype=np.float64)


def test_mean_face_proportions():
    assert MEAN_FACE_3D.shape == (5, 3)
    np.testing.assert_array_equal(MEAN_FACE_3D[2], 0.0)
    assert MEAN_FACE_3D[0, 0] < 0 < MEAN_FACE_3D[1, 0]  # image-left eye at negative x
    assert MEAN_FACE_3D[0, 1] > 0 > MEAN_FACE_3D[3, 1]  # eyes above, mouth below, y up
    assert (MEAN_FACE_3D[[0, 1, 3, 4], 2] < 0).all()  # all behind the nose tip
    # Mirror-symmetric, in the ranges of common 3D mean-face models (mm).
    np.testing.assert_array_equal(MEAN_FACE_3D[[1, 4]], MEAN_FACE_3D[[0, 3]] * [-1, 1, 1])
    eye, mouth = MEAN_FACE_3D[1], MEAN_FACE_3D[4]
    assert 31 <= eye[0] <= 33 and 30 <= eye[1] <= 36 and -30 <= eye[2] <= -24
    assert 23 <= mouth[0] <= 27 and -33 <= mouth[1] <= -27 and -25 <= mouth[2] <= -19


def test_orthographic_recovers_angles_exactly():
    truth = grid([-45, -30, -15, 0, 15, 30, 45], [-30, -15, 0, 15, 30], [-30, -15, 0, 15, 30])
    landmarks = np.stack([orthographic(rotation(*angles)) for angles in truth]).astype(np.float32)
    found = head_pose(landmarks)
    assert found.shape == truth.shape and found.dtype == np.float64
    np.testing.assert_allclose(found, truth, atol=0.01)


def test_scale_and_translation_do_not_matter():
    r = rotation(20, -10, 5)
    landmarks = np.stack([orthographic(r, s, c) for s, c in [(0.5, (10, 10)), (6, (900, 40))]])
    np.testing.assert_allclose(head_pose(landmarks), [[20, -10, 5]] * 2, atol=0.01)


def test_perspective_within_three_degrees():
    truth = grid([-30, -15, 0, 15, 30], [-30, -15, 0, 15, 30], [-30, 0, 30])
    landmarks = np.stack([perspective(rotation(*angles)) for angles in truth])
    assert (landmarks >= 0).all() and (landmarks < SIZE).all()
    error = np.abs(head_pose(landmarks) - truth)
    assert error.max() < 3.0, error.max(axis=0)


def frontal() -> np.ndarray:
    """Frontal landmarks by hand: the mean face's x, y scaled 3 px/mm, y flipped to image."""
    return np.stack([200 + 3 * MEAN_FACE_3D[:, 0], 300 - 3 * MEAN_FACE_3D[:, 1]], 1)


def test_frontal_is_zero():
    np.testing.assert_allclose(head_pose(frontal()[None]), 0.0, atol=1e-9)


def test_nose_towards_image_right_is_positive_yaw():
    # Turning right swings the nose tip (in front of eyes and mouth) towards image right.
    landmarks = frontal()
    landmarks[2, 0] += 15
    yaw, pitch, roll = head_pose(landmarks[None])[0]
    assert yaw > 5 and abs(yaw) > 3 * max(abs(pitch), abs(roll))
    landmarks[2, 0] -= 30
    assert head_pose(landmarks[None])[0, 0] < -5


def test_nose_up_is_positive_pitch():
    landmarks = frontal()
    landmarks[2, 1] -= 15  # image y down: up in the image
    yaw, pitch, roll = head_pose(landmarks[None])[0]
    assert pitch > 5 and abs(pitch) > 3 * max(abs(yaw), abs(roll))


@pytest.mark.parametrize("degrees", [-35.0, -10.0, 20.0])
def test_counter_clockwise_in_image_is_positive_roll(degrees):
    # Counter-clockwise on screen (y down): x' = x cos + y sin, y' = -x sin + y cos.
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    points = frontal() - [200, 300]
    turned = np.stack([c * points[:, 0] + s * points[:, 1], -s * points[:, 0] + c * points[:, 1]])
    landmarks = turned.T + [200, 300]
    if degrees > 0:  # the right eye (image right) rises above the left one
        assert landmarks[1, 1] < landmarks[0, 1]
    np.testing.assert_allclose(head_pose(landmarks[None])[0], [0, 0, degrees], atol=1e-6)


def solve_pnp(landmarks: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) by OpenCV's solvePnP with the same mean face, in our convention."""
    ok, rvec, tvec = cv2.solvePnP(
        MEAN_FACE_3D, landmarks.astype(np.float64), CAMERA, None, flags=cv2.SOLVEPNP_SQPNP
    )
    assert ok
    ok, rvec, tvec = cv2.solvePnP(
        MEAN_FACE_3D,
        landmarks.astype(np.float64),
        CAMERA,
        None,
        rvec,
        tvec,
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    assert ok
    np.testing.assert_allclose(tvec.ravel(), [0, 0, DISTANCE], atol=1.0)
    r_model_to_ours = FLIP @ cv2.Rodrigues(rvec)[0]  # FLIP is its own inverse
    minus_pitch, yaw, roll = Rotation.from_matrix(r_model_to_ours).as_euler("xyz", degrees=True)
    return np.array([yaw, -minus_pitch, roll])


def test_agrees_with_opencv_solvepnp():
    truth = grid([-25, 0, 25], [-20, 0, 20], [-20, 0, 20])
    landmarks = np.stack([perspective(rotation(*angles)) for angles in truth])
    opencv = np.stack([solve_pnp(points) for points in landmarks])
    # The frames agree: on exact perspective data solvePnP returns the true angles...
    np.testing.assert_allclose(opencv, truth, atol=0.05)
    # ...and the weak-perspective fit is within a few degrees of it.
    error = np.abs(head_pose(landmarks) - opencv)
    assert error.max() < 3.0, error.max(axis=0)


def test_non_finite_rows_give_nan():
    landmarks = np.stack([orthographic(rotation(10, 5, -5))] * 3).astype(np.float32)
    landmarks[1, 2, 0] = np.nan
    landmarks[2, 4, 1] = np.inf
    found = head_pose(landmarks)
    assert np.isnan(found[1:]).all()
    np.testing.assert_allclose(found[0], [10, 5, -5], atol=0.01)
    assert head_pose(np.zeros((0, 5, 2), np.float32)).shape == (0, 3)


def test_wrong_shape_raises():
    with pytest.raises(ValueError):
        head_pose(np.zeros((5, 2)))


def test_pose_spread_matches_numpy():
    rng = np.random.default_rng(0)
    angles = rng.normal([5, -3, 1], [10, 6, 4], size=(200, 3))
    with_nan = np.vstack([angles, [[np.nan, np.nan, np.nan]]])
    spread = pose_spread(with_nan)
    for column, name in enumerate(("yaw", "pitch", "roll")):
        v = angles[:, column]
        assert spread[name]["mean"] == pytest.approx(np.mean(v))
        assert spread[name]["std"] == pytest.approx(np.std(v))
        assert spread[name]["std"] != pytest.approx(np.std(v, ddof=1))
        expected = np.percentile(v, [5, 50, 95])
        got = [spread[name][k] for k in ("p5", "p50", "p95")]
        np.testing.assert_allclose(got, expected)
    small = pose_spread(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, -3.0]]))
    assert small["yaw"]["mean"] == 2.0 and small["yaw"]["std"] == 1.0
    assert small["roll"]["std"] == 3.0 and small["pitch"]["std"] == 0.0


def test_pose_spread_empty():
    for empty in (np.zeros((0, 3)), np.full((2, 3), np.nan)):
        spread = pose_spread(empty)
        assert set(spread) == {"yaw", "pitch", "roll"}
        for stats in spread.values():
            assert stats == dict.fromkeys(("mean", "std", "p5", "p50", "p95"))
