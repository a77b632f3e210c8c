"""Head pose (yaw, pitch, roll in degrees) from SCRFD's five facial landmarks.

Landmarks are insightface SCRFD's five points in image pixels (x right, y down), in SCRFD's
order: left eye (image left), right eye, nose tip, left mouth corner, right mouth corner;
shape (N, 5, 2).

Method: a closed-form scaled-orthographic (weak-perspective) fit of a generic 3D mean face
(`MEAN_FACE_3D`), which needs no camera intrinsics.

1. Flip the image y axis so that y points up; centre the 2D points and the 3D model.
2. Least squares: the 2x3 linear map M minimising ||X M^T - x|| over the five points (X the
   centred model, x the centred 2D points).
3. The nearest scaled orthonormal 2x3 map to M: with M = U S V^T (thin SVD), s R2 where
   R2 = U V^T (its two rows orthonormal) and s = (S1 + S2) / 2.
4. The third row is R2[0] x R2[1]: R is a proper rotation (det +1) mapping model coordinates
   to camera coordinates (x right, y up, z towards the viewer); a frontal face gives R = I.

Euler convention (camera frame, x right, y up, z towards the viewer):

    R = Rz(roll) @ Ry(yaw) @ Rx(-pitch)

i.e. scipy's `Rotation.from_euler("xyz", [-pitch, yaw, roll], degrees=True)` (extrinsic x,
then y, then z). Signs: yaw > 0 when the face turns towards image right; pitch > 0 when the
face looks up; roll > 0 when the face tilts counter-clockwise as seen in the image.

Weak perspective ignores the depth spread of the face against its distance from the camera;
for a face ~600 mm away it agrees with a full perspective solve (OpenCV's solvePnP) to a few
degrees at moderate angles. The mean face is generic, so angles are approximate for any one
face. Rows with non-finite landmarks give NaN angles.
"""

from __future__ import annotations

import numpy as np

# A generic 3D mean face of SCRFD's five points, millimetres; x right, y up, z towards the
# camera, nose tip at the origin. Approximate proportions in line with common 3D mean-face
# models (Basel Face Model / FLAME means, the generic head model of OpenCV head-pose
# tutorials): interpupillary distance ~63 mm, eye centres ~33 mm above and ~27 mm behind the
# nose tip, mouth corners ~50 mm apart, ~30 mm below and ~22 mm behind it.
MEAN_FACE_3D: np.ndarray = np.array(
    [
        [-31.5, 33.0, -27.0],  # left eye (image left)
        [31.5, 33.0, -27.0],  # right eye
        [0.0, 0.0, 0.0],  # nose tip
        [-25.0, -30.0, -22.0],  # left mouth corner
        [25.0, -30.0, -22.0],  # right mouth corner
    ],
    dtype=np.float64,
)
MEAN_FACE_3D.setflags(write=False)

_CENTRED = MEAN_FACE_3D - MEAN_FACE_3D.mean(axis=0)
# M = x^T X (X^T X)^-1 for every face at once: x (5, 2) centred landmarks, X the centred model.
_SOLVE = _CENTRED @ np.linalg.inv(_CENTRED.T @ _CENTRED)  # (5, 3)


def _rotations(landmarks: np.ndarray) -> np.ndarray:
    """(N, 5, 2) image landmarks -> (N, 3, 3) rotations model -> camera (x right, y up, z to
    the viewer); NaN for rows with non-finite landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must have shape (N, 5, 2), got {points.shape}")
    valid = np.isfinite(points).all(axis=(1, 2))
    points = np.where(valid[:, None, None], points, 0.0)
    points = points * np.array([1.0, -1.0])  # y up
    centred = points - points.mean(axis=1, keepdims=True)
    affine = np.einsum("nki,kj->nij", centred, _SOLVE)  # (N, 2, 3)
    u, _, vt = np.linalg.svd(affine, full_matrices=False)
    rows = u @ vt  # (N, 2, 3): the orthonormal factor of the nearest scaled orthonormal map
    rotation = np.concatenate([rows, np.cross(rows[:, 0], rows[:, 1])[:, None]], axis=1)
    rotation[~valid] = np.nan
    return rotation


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """(N, 5, 2) SCRFD landmarks (pixels, y down) -> (N, 3) float64 degrees: yaw, pitch, roll.

    Conventions in the module docstring; NaN rows for non-finite landmarks."""
    r = _rotations(landmarks)
    # R = Rz(roll) Ry(yaw) Rx(a), a = -pitch: R[2,0] = -sin(yaw), R[2,1:] ~ (sin a, cos a),
    # R[:2,0] ~ (cos roll, sin roll).
    yaw = np.arcsin(np.clip(-r[:, 2, 0], -1.0, 1.0))
    pitch = -np.arctan2(r[:, 2, 1], r[:, 2, 2])
    roll = np.arctan2(r[:, 1, 0], r[:, 0, 0])
    return np.degrees(np.stack([yaw, pitch, roll], axis=1))


def pose_spread(angles: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Per angle of an (N, 3) yaw/pitch/roll array: mean, population std and p5/p50/p95 over
    the rows whose three angles are finite; None values when there are none."""
    values = np.asarray(angles, dtype=np.float64).reshape(-1, 3)
    values = values[np.isfinite(values).all(axis=1)]
    spread: dict[str, dict[str, float | None]] = {}
    for column, name in enumerate(("yaw", "pitch", "roll")):
        if len(values) == 0:
            spread[name] = dict.fromkeys(("mean", "std", "p5", "p50", "p95"))
            continue
        v = values[:, column]
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        spread[name] = {
            "mean": float(v.mean()),
            "std": float(v.std()),
            "p5": float(p5),
            "p50": float(p50),
            "p95": float(p95),
        }
    return spread
