"""digi2real.margin against the ArcFace and CosFace formulas computed independently in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digi2real.margin import MarginHead

pytestmark = pytest.mark.unit

# float32 module against the float64 closed form: cosines are exact to ~1e-7, the logits
# (s = 64) to ~1e-5 absolute, the loss (~45 at random) to ~1e-7 relative (measured).
LOSS_RTOL = 1e-4
LOGIT_ATOL = 1e-4

N, CLASSES, DIM = 8, 11, 32


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    # Offset from head()'s seed: the same seed would draw embeddings parallel to the centres.
    generator = torch.Generator().manual_seed(1000 + seed)
    embeddings = torch.randn(N, DIM, generator=generator) * 3
    labels = torch.randint(0, CLASSES, (N,), generator=generator)
    return embeddings, labels


def head(loss: str, margin: float | None = None, seed: int = 0) -> MarginHead:
    torch.manual_seed(seed)
    return MarginHead(CLASSES, DIM, loss=loss, margin=margin)


def closed_form_logits(
    embeddings: np.ndarray, weight: np.ndarray, labels: np.ndarray, loss: str, s: float, m: float
) -> np.ndarray:
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    w = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    cos = np.clip(x @ w.T, -1.0, 1.0)
    rows = np.arange(len(labels))
    theta_y = np.arccos(cos[rows, labels])
    logits = s * cos
    if loss == "arcface":
        logits[rows, labels] = s * np.cos(theta_y + m)
    else:
        logits[rows, labels] = s * (np.cos(theta_y) - m)
    return logits


def closed_form_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean of -log(exp(z_y) / sum_j exp(z_j)), shifted by the row max for range."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(labels)), labels].mean())


def reference(model: MarginHead, embeddings: torch.Tensor, labels: torch.Tensor, m: float):
    logits = closed_form_logits(
        embeddings.double().numpy(),
        model.weight.detach().double().numpy(),
        labels.numpy(),
        model.loss,
        model.scale,
        m,
    )
    return logits, closed_form_loss(logits, labels.numpy())


@pytest.mark.parametrize("loss", ["arcface", "cosface"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_closed_form(loss: str, seed: int) -> None:
    model = head(loss, seed=seed)
    embeddings, labels = inputs(seed)
    logits, expected = reference(model, embeddings, labels, model.margin)
    with torch.no_grad():
        got_logits = model.logits(embeddings, labels)
        got = model(embeddings, labels)
    assert got.dtype == torch.float32 and got.shape == ()
    np.testing.assert_allclose(got_logits.numpy(), logits, rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(got.item(), expected, rtol=LOSS_RTOL)


def test_defaults() -> None:
    arcface, cosface = MarginHead(5, 4), MarginHead(5, 4, loss="cosface")
    assert (arcface.loss, arcface.scale, arcface.margin) == ("arcface", 64.0, 0.5)
    assert (cosface.loss, cosface.scale, cosface.margin) == ("cosface", 64.0, 0.4)
    assert MarginHead(5, 4, scale=30.0, margin=0.3).margin == 0.3


def test_weight_is_the_only_parameter_drawn_normal_0_01() -> None:
    torch.manual_seed(0)
    model = MarginHead(1000, 512)
    assert [name for name, _ in model.named_parameters()] == ["weight"]
    assert model.weight.shape == (1000, 512)
    # 512k draws: the sample std is within ~1e-5 of 0.01, the mean within ~1e-5 of 0.
    assert abs(model.weight.std().item() - 0.01) < 1e-4
    assert abs(model.weight.mean().item()) < 1e-4


@pytest.mark.parametrize("loss", ["arcface", "cosface"])
def test_zero_margin_is_the_scaled_normalised_softmax(loss: str) -> None:
    model = head(loss, margin=0.0)
    embeddings, labels = inputs()
    plain = 64.0 * F.normalize(embeddings) @ F.normalize(model.weight).T
    with torch.no_grad():
        torch.testing.assert_close(model.logits(embeddings, labels), plain.detach())
        torch.testing.assert_close(model(embeddings, labels), F.cross_entropy(plain, labels))
    _, expected = reference(model, embeddings, labels, 0.0)
    with torch.no_grad():
        np.testing.assert_allclose(model(embeddings, labels).item(), expected, rtol=LOSS_RTOL)


@pytest.mark.parametrize("loss", ["arcface", "cosface"])
def test_margin_makes_the_loss_larger(loss: str) -> None:
    model = head(loss)
    embeddings, labels = inputs()
    without_logits, without = reference(model, embeddings, labels, 0.0)
    with_logits, with_margin = reference(model, embeddings, labels, model.margin)
    rows = np.arange(N)
    # Only the true class changes, and it goes down (every theta_y < pi - m / 2 here).
    assert (with_logits[rows, labels.numpy()] < without_logits[rows, labels.numpy()]).all()
    assert with_margin > without
    with torch.no_grad():
        assert model(embeddings, labels).item() > head(loss, margin=0.0)(embeddings, labels).item()


@pytest.mark.parametrize("loss", ["arcface", "cosface"])
def test_gradient_against_gradcheck(loss: str) -> None:
    # float64 throughout; s = 8 keeps the softmax away from saturation so that finite
    # differences see every term.
    torch.manual_seed(0)
    model = MarginHead(5, 6, loss=loss, scale=8.0).double()
    embeddings = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 3, 1])
    weight = model.weight

    def loss_of(e: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, {"weight": w}, (e, labels))

    assert torch.autograd.gradcheck(loss_of, (embeddings, weight))


def test_arcface_gradient_goes_through_the_margin() -> None:
    # d/dc s cos(acos(c) + m) = s sin(theta + m) / sin(theta), not the s that arcface_torch's
    # margin, applied without gradient, passes back.
    model = head("arcface")
    embeddings, labels = inputs()
    rows = torch.arange(N)
    e = embeddings.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(model.logits(e, labels)[rows, labels].sum(), e)
    e = embeddings.clone().requires_grad_(True)
    cos = (F.normalize(e) @ F.normalize(model.weight.detach()).T)[rows, labels]
    (dcos,) = torch.autograd.grad(cos.sum(), e)  # row i depends on embedding i only
    theta = torch.acos(cos.detach())
    slope = 64.0 * torch.sin(theta + 0.5) / torch.sin(theta)
    torch.testing.assert_close(got, slope[:, None] * dcos, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, 64.0 * dcos, rtol=1e-2)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_arcface_gradient_is_finite_at_cosine_one(sign: float) -> None:
    # Embeddings exactly along (or against) their class centre: acos' derivative is infinite
    # at +-1, the clamp keeps the loss's gradient finite.
    model = head("arcface")
    labels = torch.tensor([0, 2, 4])
    embeddings = (sign * 5.0 * model.weight[labels]).detach().requires_grad_(True)
    model(embeddings, labels).backward()
    assert torch.isfinite(embeddings.grad).all() and torch.isfinite(model.weight.grad).all()


def test_float32_under_autocast() -> None:
    model = head("arcface")
    embeddings, labels = inputs()
    with torch.no_grad():
        plain = model(embeddings, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(embeddings.bfloat16(), labels)
    assert autocast.dtype == torch.float32
    # The only difference is the bfloat16 rounding of the embeddings themselves.
    torch.testing.assert_close(
        autocast, model(embeddings.bfloat16().float(), labels).detach(), rtol=1e-6, atol=0
    )
    assert abs(autocast.item() - plain.item()) / plain.item() < 1e-2


def test_unknown_loss() -> None:
    with pytest.raises(ValueError) as error:
        MarginHead(5, 4, loss="sphereface")
    message = str(error.value)
    assert "\n" not in message and "sphereface" in message
    assert "arcface" in message and "cosface" in message
