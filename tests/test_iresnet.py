"""digi2real.iresnet against the layouts of insightface arcface_torch's IResNets.

tests/data/arcface_torch_iresnet_layouts.json holds, per network, the [key, shape] list of
arcface_torch's own `state_dict()` (its "source" key names the repository, path and commit it
was dumped from): a checkpoint trained there loads here only if keys, order and shapes agree.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from digi2real.iresnet import NETWORKS, embedder, iresnet

pytestmark = pytest.mark.unit

LAYOUTS = json.loads(
    (Path(__file__).parent / "data/arcface_torch_iresnet_layouts.json").read_text()
)
LAYOUT_NETWORKS = ("iresnet18", "iresnet50", "iresnet100")


def random_faces(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 112, 112, generator=generator) * 2 - 1


def state_from_layout(layout: list, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in a layout, scaled so that an eval-mode forward stays finite."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = torch.randn(shape, generator=generator) * 0.1
        elif len(shape) > 1:  # conv and fc weights: unit gain over their fan-in
            fan_in = torch.Size(shape[1:]).numel()
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
        else:  # BN scales, PReLU slopes
            state[key] = torch.rand(shape, generator=generator) * 0.5 + 0.5
    return state


def test_networks() -> None:
    assert NETWORKS == {
        "iresnet18": (2, 2, 2, 2),
        "iresnet34": (3, 4, 6, 3),
        "iresnet50": (3, 4, 14, 3),
        "iresnet100": (3, 13, 30, 3),
    }


def test_layouts_record_their_source() -> None:
    source = LAYOUTS["source"]
    assert "deepinsight/insightface" in source["repository"]
    assert source["path"] == "recognition/arcface_torch/backbones/iresnet.py"
    assert len(source["commit"]) == 40


@pytest.mark.parametrize("name", LAYOUT_NETWORKS)
def test_state_dict_layout_is_arcface_torchs(name: str) -> None:
    # On the meta device: the shapes without allocating iresnet100's 65M parameters.
    with torch.device("meta"):
        model = iresnet(name)
    layout = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    assert layout == LAYOUTS[name]


@pytest.mark.parametrize("name", ["iresnet18", "iresnet50"])
def test_arcface_torch_layout_loads_strictly_and_runs(name: str) -> None:
    model = iresnet(name)
    model.load_state_dict(state_from_layout(LAYOUTS[name]), strict=True)
    model.eval()
    with torch.no_grad():
        embeddings = model(random_faces(2))
    assert embeddings.shape == (2, 512)
    assert embeddings.dtype == torch.float32
    assert torch.isfinite(embeddings).all()


def test_feature_map_before_fc_is_7x7() -> None:
    model = iresnet("iresnet18").eval()
    assert model.fc.in_features == 512 * 7 * 7
    seen: list[torch.Size] = []
    model.bn2.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model(random_faces(2))
    assert seen == [torch.Size([2, 512, 7, 7])]


def test_embedding_size() -> None:
    model = iresnet("iresnet18", embedding_size=128).eval()
    assert model.fc.out_features == 128 and model.features.num_features == 128
    with torch.no_grad():
        assert model(random_faces(2)).shape == (2, 128)


def test_features_scale_is_fixed_at_one() -> None:
    model = iresnet("iresnet18")
    assert model.features.weight.requires_grad is False
    assert torch.equal(model.features.weight, torch.ones(512))
    frozen = [key for key, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["features.weight"]


def test_initialisation_and_batchnorm_settings() -> None:
    torch.manual_seed(0)
    model = iresnet("iresnet18")
    convs = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d)])
    # 11M draws of normal(0, 0.1): the sample std is within 1e-4 of 0.1.
    assert abs(convs.std().item() - 0.1) < 1e-3
    assert abs(convs.mean().item()) < 1e-3
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in norms)
    for m in norms:
        assert torch.equal(m.weight, torch.ones_like(m.weight))
        assert torch.equal(m.bias, torch.zeros_like(m.bias))
    assert model.dropout.p == 0.0


def test_eval_forward_is_deterministic() -> None:
    model = iresnet("iresnet18").eval()
    faces = random_faces(2, seed=1)
    with torch.no_grad():
        first = model(faces)
        second = model(faces)
    assert torch.equal(first, second)


def test_the_benchmarks_embedder_is_the_backbone_within_float_noise_and_leaves_it_as_it_was():
    torch.manual_seed(0)
    backbone = iresnet("iresnet18").eval()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    faces = torch.rand(4, 3, 112, 112) * 2 - 1
    embed = embedder(backbone, torch.device("cpu"))
    with torch.no_grad():
        ours, plain = embed(faces), backbone(faces)
    # Another layout sums in another order: float noise, far below what tells faces apart.
    assert ours.dtype == torch.float32 and ours.shape == plain.shape
    assert torch.allclose(ours, plain, rtol=1e-4, atol=1e-4 * float(plain.abs().max()))
    # The backbone a training goes on with: its layout and weights as they were.
    assert backbone.conv1.weight.is_contiguous()
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_fp16_is_a_cuda_autocast_and_a_no_op_on_cpu() -> None:
    # As arcface_torch's torch.cuda.amp.autocast: CPU tensors run in float32 either way.
    plain = iresnet("iresnet18").eval()
    half = iresnet("iresnet18", fp16=True).eval()
    half.load_state_dict(plain.state_dict())
    faces = random_faces(2)
    with torch.no_grad():
        assert torch.equal(plain(faces), half(faces))


def test_unknown_network() -> None:
    with pytest.raises(ValueError) as error:
        iresnet("iresnet152")
    message = str(error.value)
    assert "\n" not in message and "iresnet152" in message
    assert all(name in message for name in NETWORKS)


def test_a_checkpoint_of_another_depth_or_not_a_state_dict_is_one_line_naming_the_file(tmp_path):
    from digi2real.errors import ModelFileError
    from digi2real.iresnet import load_backbone

    r18 = tmp_path / "r18.pt"
    torch.save(iresnet("iresnet18", embedding_size=64).state_dict(), r18)
    assert load_backbone(r18, "iresnet18").fc.out_features == 64
    # arcface_torch's DDP-wrapped saves carry a `module.` prefix: taken off.
    wrapped = tmp_path / "wrapped.pt"
    torch.save({f"module.{k}": v for k, v in torch.load(r18).items()}, wrapped)
    assert load_backbone(wrapped, "iresnet18").fc.out_features == 64
    with pytest.raises(ModelFileError, match=r"r18\.pt: not an iresnet50 backbone .*missing"):
        load_backbone(r18, "iresnet50")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(ModelFileError, match=r"notes\.pt: not a state dict of tensors"):
        load_backbone(tmp_path / "notes.pt", "iresnet18")
    # A checkpoint that would run a command when unpickled runs nothing.
    (tmp_path / "evil.pt").write_bytes(
        pickle.dumps(Payload(f"touch {tmp_path / 'pwned'}"), protocol=2)
    )
    with pytest.raises(ModelFileError, match=r"evil\.pt: .*nothing in it was run$"):
        load_backbone(tmp_path / "evil.pt", "iresnet18")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ModelFileError, match=r"nowhere\.pt: no such backbone file"):
        load_backbone(tmp_path / "nowhere.pt", "iresnet18")


class Payload:
    """Unpickled by pickle.load, it would run `command`."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))
