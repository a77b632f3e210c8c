"""IResNet face-recognition backbones, in the layout of insightface's arcface_torch.

The architecture is the ResNet with the "improved residual unit" (BN-conv-BN-PReLU-conv-BN) of
ArcFace (Deng et al., CVPR 2019, arXiv:1801.07698) as published in insightface's
`recognition/arcface_torch/backbones/iresnet.py` (github.com/deepinsight/insightface); this is
an independent implementation of that published architecture, written so that its
`state_dict()` has the same keys, in the same order, with the same shapes, and so that a
checkpoint trained with arcface_torch loads here with `strict=True` and gives the same
embeddings (tests/data/arcface_torch_iresnet_layouts.json holds their layouts).

Layout, for a 3x112x112 face in [-1, 1]:

- stem: 3x3 conv (64, stride 1), BatchNorm, PReLU;
- four stages of pre-activation basic blocks, 64, 128, 256 and 512 channels, each stage
  halving the resolution in its first block (112 -> 56 -> 28 -> 14 -> 7). A block is
  BN -> 3x3 conv -> BN -> PReLU -> 3x3 conv (carrying the stride) -> BN, plus a shortcut
  (1x1 strided conv + BN where the shape changes, identity otherwise); no activation after
  the sum;
- head: BN over the 512x7x7 map, dropout, flatten, a fully connected layer to the embedding,
  BatchNorm1d with its scale fixed at 1 (the embedding is not normalised here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

# Blocks per stage, as arcface_torch's iresnet18/34/50/100.
NETWORKS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}

# BatchNorm settings of arcface_torch: eps 1e-5 everywhere, PyTorch's default momentum (0.1).
BN_EPS = 1e-5
BN_MOMENTUM = 0.1

STAGE_WIDTHS = (64, 128, 256, 512)
# The final feature map of a 112x112 input after the four stride-2 stages.
FINAL_SIDE = 7


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation basic block: BN, conv, BN, PReLU, conv (strided), BN, plus shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        # Registration order fixes the state_dict order: arcface_torch registers
        # bn1, conv1, bn2, prelu, conv2, bn3, downsample.
        self.bn1 = _bn2d(in_channels)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = _bn2d(channels)
        self.prelu = nn.PReLU(channels)
        # The stride sits on the second conv, as in arcface_torch (not on the first).
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = _bn2d(channels)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                _bn2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """IResNet for 112x112 faces; `blocks` is the number of blocks per stage."""

    def __init__(
        self,
        blocks: tuple[int, int, int, int],
        embedding_size: int = 512,
        fp16: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.fp16 = fp16
        self.conv1 = _conv3x3(3, STAGE_WIDTHS[0])
        self.bn1 = _bn2d(STAGE_WIDTHS[0])
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        in_channels = STAGE_WIDTHS[0]
        for index, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks, strict=True), start=1):
            # Every stage, the first included, opens with a stride-2 block (so layer1 has a
            # downsample shortcut although its width does not change), as arcface_torch.
            stage = [IBasicBlock(in_channels, width, stride=2)]
            stage += [IBasicBlock(width, width) for _ in range(count - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            in_channels = width
        self.bn2 = _bn2d(in_channels)
        # arcface_torch's default dropout is 0; the module is kept (it has no state) so that a
        # non-zero rate can be set as theirs can.
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_channels * FINAL_SIDE * FINAL_SIDE, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS, momentum=BN_MOMENTUM)

        # Initialisation as arcface_torch: convs normal(0, 0.1), BatchNorm2d scale 1 and shift
        # 0; fc and PReLU keep PyTorch's defaults (kaiming-uniform, 0.25).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)
        # The embedding BN's scale is fixed at 1 and never trained (arcface_torch): only its
        # shift and running statistics change, so the scale cannot shrink the embedding.
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp16 as arcface_torch: CUDA float16 autocast over the convolutional body only (their
        # torch.cuda.amp.autocast, a no-op on CPU tensors, as here). With fp16 off, autocast is
        # disabled over the body, as their autocast(False) does inside an outer autocast.
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16 and x.is_cuda):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.dropout(torch.flatten(self.bn2(x), 1))
        # The head in float32, as theirs (x.float() before fc). Autocast is also disabled here so
        # that an outer autocast of a training loop cannot run it in half precision.
        with torch.autocast("cuda", enabled=False):
            x = self.fc(x.float() if self.fp16 else x)
            return self.features(x)


def iresnet(name: str, embedding_size: int = 512, fp16: bool = False) -> IResNet:
    """A freshly initialised IResNet by arcface_torch's name (see `NETWORKS`)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown IResNet {name!r}; choose one of {', '.join(NETWORKS)}")
    return IResNet(NETWORKS[name], embedding_size=embedding_size, fp16=fp16)


def embedder(backbone: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """`backbone` (in eval mode) as the embedding function of N x 3 x 112 x 112 faces that
    the benchmarks call, computing on `device`; float32 embeddings on the CPU. On the CPU it
    runs a channels-last copy of the backbone, which is left as it was (a training goes on
    with it): oneDNN's convolutions in that layout took a fifth less time for IResNet-18 (80
    faces on 2 threads: 5.3 s of CPU instead of 6.7 s). The same math: embeddings within float
    noise (3e-6 of their size) of the plain layout's."""
    channels_last = device.type == "cpu"
    if channels_last:
        backbone = copy.deepcopy(backbone).to(memory_format=torch.channels_last)

    def embed(faces: torch.Tensor) -> torch.Tensor:
        faces = faces.to(device)
        if channels_last:
            faces = faces.contiguous(memory_format=torch.channels_last)
        return backbone(faces).float().cpu()

    return embed


def load_backbone(path: Path, name: str) -> IResNet:
    """The backbone whose state dict `path` holds (ours, or arcface_torch's `model.pt`; a DDP
    wrapper's `module.` prefix is taken off), as network `name` of the embedding size its fc
    has; one line naming the file when it is not that network's."""
    from digi2real.errors import ModelFileError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such backbone file") from None
    except Exception:  # a pickle of anything but tensors (run: never), a truncated file
        raise ModelFileError(
            f"{path}: not a state dict of tensors that torch.load(weights_only=True) reads; "
            "nothing in it was run"
        ) from None
    if not isinstance(state, dict) or "fc.weight" not in {
        key.removeprefix("module.") for key in state
    }:
        raise ModelFileError(f"{path}: not an IResNet state dict (no fc.weight)")
    state = {key.removeprefix("module."): tensor for key, tensor in state.items()}
    network = iresnet(name, embedding_size=state["fc.weight"].shape[0])
    expected = network.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ModelFileError(
            f"{path}: not an {name} backbone ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(wrong)} misshapen tensors, e.g. "
            f"{(missing + unexpected + wrong)[0]}); benchmark.checkpoints' network or "
            "train.network names its depth"
        )
    network.load_state_dict(state)
    return network
