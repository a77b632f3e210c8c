"""Additive-margin softmax heads for training face recognisers: ArcFace and CosFace.

Formulas: ArcFace, Deng et al., CVPR 2019 (arXiv:1801.07698), Eq. 3; CosFace, Wang et al.,
CVPR 2018 (arXiv:1801.09414), Eq. 4; the class-centre matrix, its initialisation and the
defaults (s = 64, m = 0.5 ArcFace, m = 0.4 CosFace) as insightface's arcface_torch
(`partial_fc_v2.py` with `losses.py`, github.com/deepinsight/insightface), on one device.

With x_i the embedding of sample i, y_i its class, W_j the centre of class j and
cos(theta_ij) = <x_i / |x_i|, W_j / |W_j|>, the logits are

    ArcFace:  s * cos(theta_iy + m) for the true class,  s * cos(theta_ij) for the others;
    CosFace:  s * (cos(theta_iy) - m) for the true class, s * cos(theta_ij) for the others;

and the loss is their mean softmax cross-entropy over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Default margin per loss, as arcface_torch's configs.
DEFAULT_MARGINS: dict[str, float] = {"arcface": 0.5, "cosface": 0.4}

# acos has an infinite derivative at +-1: the true-class cosine is kept this far inside
# [-1, 1] before acos, so that the gradient through the ArcFace margin stays finite. In float32
# a cosine of exactly 1 is then read as an angle of 4.9e-4 rad, the order of what float32 can
# resolve there anyway (the float below 1 is 1 - 6e-8, an angle of 3.5e-4 rad).
ACOS_EPS = 1e-7


class MarginHead(nn.Module):
    """Class centres and an ArcFace or CosFace margin loss over them."""

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        loss: str = "arcface",
        scale: float = 64.0,
        margin: float | None = None,
    ) -> None:
        super().__init__()
        if loss not in DEFAULT_MARGINS:
            raise ValueError(
                f"unknown margin loss {loss!r}; choose one of {', '.join(DEFAULT_MARGINS)}"
            )
        self.loss = loss
        self.scale = float(scale)
        self.margin = DEFAULT_MARGINS[loss] if margin is None else float(margin)
        # normal(0, 0.01), as arcface_torch's PartialFC_V2; only the direction of each centre
        # matters since they are normalised in the forward.
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (num_classes, embedding_size)))

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The scaled logits with the margin on each sample's true class, shape (N, classes)."""
        # At least float32 (float64 stays float64, for gradcheck), with autocast off: float16
        # rounds a cosine in [0.5, 1) by up to 2.4e-4, 0.016 in a logit after s = 64 (bfloat16:
        # 0.12).
        dtype = torch.promote_types(
            torch.promote_types(embeddings.dtype, self.weight.dtype), torch.float32
        )
        with torch.autocast(embeddings.device.type, enabled=False):
            cos = F.linear(F.normalize(embeddings.to(dtype)), F.normalize(self.weight.to(dtype)))
            # Rounding can carry a cosine just past +-1; arcface_torch clamps to [-1, 1] too.
            cos = cos.clamp(-1.0, 1.0)
            index = labels.view(-1, 1).long()
            target = cos.gather(1, index)
            if self.loss == "arcface":
                # The gradient flows through acos and the margin here. arcface_torch instead
                # applies the margin under no_grad, passing the gradient of cos(theta + m) as
                # if it were that of cos(theta); this head differentiates the formula itself.
                theta = torch.acos(target.clamp(-1.0 + ACOS_EPS, 1.0 - ACOS_EPS))
                target = torch.cos(theta + self.margin)
            else:
                target = target - self.margin
            return cos.scatter(1, index, target) * self.scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean margin-softmax cross-entropy of `embeddings` (N, D) with class `labels` (N,)."""
        logits = self.logits(embeddings, labels)
        with torch.autocast(logits.device.type, enabled=False):
            return F.cross_entropy(logits, labels.long())
