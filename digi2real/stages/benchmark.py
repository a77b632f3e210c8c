"""Rule `benchmark`: a trained backbone (the run's own, the DigiFace baseline's, or any
arcface_torch checkpoint) tested on the real verification sets of benchmark.bins, with
insightface's protocol, and on IJB-B/C when benchmark.ijb is set (digi2real/verification.py)."""

from __future__ import annotations

from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS: list[str] = ["benchmark"]

HELP = "a trained backbone on the verification benchmarks"
ARGUMENTS = (
    Argument("--backbone", "the backbone's state dict (backbone.pt, or arcface_torch's model.pt)"),
    Argument("--network", "its architecture", type=str),
    Argument("--out", "benchmark.json to write"),
)


def run(config: Config, backbone: Path, network: str, out: Path) -> dict:
    """`out`: {"network", "backbone", "verification": {name: {accuracy, std, threshold,
    pairs}}, "ijb": {...} or null}; accuracies are fractions (the report gives percents)."""
    import json

    import torch

    from digi2real import verification
    from digi2real.atomic import atomic_path
    from digi2real.iresnet import embedder, load_backbone
    from digi2real.progress import log

    settings = config["benchmark"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    embed = embedder(load_backbone(backbone, network).to(device).eval(), device)

    # 1. Each verification file: 10-fold accuracy of flip-summed embeddings.
    results: dict = {"network": network, "backbone": str(backbone), "verification": {}}
    for name, path in settings["bins"].items():
        faces = verification.load_bin(Path(path))
        result = verification.benchmark(faces, embed, settings["batch_size"]).as_dict()
        results["verification"][name] = result
        log.info("benchmark: %s accuracy %.4f +- %.4f", name, result["accuracy"], result["std"])
    # 2. IJB-B/C 1:1, when configured.
    ijb = settings["ijb"]
    results["ijb"] = (
        verification.ijb_verification(
            Path(ijb["root"]), ijb["target"], embed, settings["batch_size"]
        )
        if ijb
        else None
    )
    with atomic_path(out) as temporary:
        temporary.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results
