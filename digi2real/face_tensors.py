"""Aligned 112x112 faces as the recognizer's input, one way for training and benchmark alike.

arcface_torch decodes RGB and normalises with torchvision's ToTensor (x / 255 in float32) then
Normalize(0.5, 0.5), i.e. (x / 255 - 0.5) / 0.5, and its verification code computes the same
from the decoded pixels. Decoding is PIL's, not MXNet's: for the same JPEG both give libjpeg's
pixels only up to the IDCT's rounding, so a benchmark figure is comparable across the two
within that, never bitwise.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from digi2real.errors import DataError

FACE_SIZE = 112  # the side of every aligned face a recognizer of this family reads


def decode_face(data: bytes, name: str) -> np.ndarray:
    """The encoded aligned face `data` as uint8 RGB, 112x112x3; one line naming `name` when it
    does not decode or is another size."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.array(image.convert("RGB"))  # writable: torch shares it
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{name}: not a decodable image ({error})") from None
    if pixels.shape[:2] != (FACE_SIZE, FACE_SIZE):
        height, width = pixels.shape[:2]
        raise DataError(
            f"{name}: a {width}x{height} image, not an aligned {FACE_SIZE}x{FACE_SIZE} face"
        )
    return pixels


def normalised(faces: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 faces, N x 112 x 112 x 3 RGB (or one face without N), as float32 N x 3 x 112 x 112
    in [-1, 1]: (x / 255 - 0.5) / 0.5, the operations in arcface_torch's order."""
    pixels = torch.as_tensor(faces)
    if pixels.dim() == 3:
        pixels = pixels.unsqueeze(0)
    return pixels.permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5).contiguous()
