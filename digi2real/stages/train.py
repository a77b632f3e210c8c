"""Rule `train`: a face recognizer trained on the run's own export (digi2real/training.py), the
backbone in arcface_torch's layout. One process on the CPU or one GPU; under torchrun, one
process per GPU of the node (DDP). A SIGTERM checkpoints and exits 143; the retry resumes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS: list[str] = ["seed", "train", "benchmark.bins", "benchmark.batch_size"]
STOPPED = 143  # exit code after SIGTERM, as a shell reports a process ended by it

HELP = "train a face recognizer on an export (GPU job; under torchrun, one process per GPU)"
ARGUMENTS = (
    Argument("--export", "the export folder it reads (train.data's format)"),
    Argument("--work", "folder of the checkpoint and the running metrics, kept for a resume"),
    Argument("--backbone", "backbone.pt to write: the trained backbone's state dict"),
    Argument("--metrics", "metrics.jsonl to write: loss, lr, throughput, accuracy"),
    Argument(
        "--leaks",
        "identities to leave out (benchmark_leaks.csv, an `identity` column); with "
        "train.exclude_benchmark_leaks",
        default=None,
    ),
)


def run(
    config: Config,
    export: Path,
    work: Path,
    backbone: Path,
    metrics: Path,
    leaks: Path | None = None,
) -> int:
    """Train on `export`, resuming from `work`; write `backbone` and `metrics` once done, or
    return STOPPED after a checkpoint when SIGTERM or SIGINT asked to stop."""
    import csv

    import torch
    import torch.distributed as dist

    from digi2real import training, verification
    from digi2real.atomic import atomic_path
    from digi2real.progress import StopFlag, log
    from digi2real.training_data import open_export

    settings = training.TrainSettings.from_config(config)
    train = config["train"]

    # 1. The processes: under torchrun one per GPU (NCCL), or gloo's on the CPU; else one.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and train["gpus"] > 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0

    # 2. The training set, without the identities flagged as benchmark leaks.
    records = open_export(export, train["data"])
    excluded: set[str] = set()
    if leaks is not None and train["exclude_benchmark_leaks"]:
        with open(leaks, newline="") as file:
            excluded = {row["identity"] for row in csv.DictReader(file)}
    data = training.TrainingSet.without(records, excluded)
    log.info(
        "train: %d images of %d identities from %s (%d identities left out as benchmark leaks)",
        len(data.images), data.num_classes, export, len(excluded & set(records.identities)),
    )  # fmt: skip

    # 3. The benchmarks evaluated after each epoch, if any are configured.
    bins = {
        name: verification.load_bin(Path(path))
        for name, path in config["benchmark"]["bins"].items()
    }

    def evaluate(network: torch.nn.Module) -> dict[str, float]:
        def embed(faces: torch.Tensor) -> torch.Tensor:
            return network(faces.to(device)).float().cpu()

        batch = config["benchmark"]["batch_size"]
        return {
            name: verification.benchmark(faces, embed, batch).accuracy
            for name, faces in bins.items()
        }

    # 4. Train, then write the outputs (process 0); a stop leaves the checkpoint.
    work.mkdir(parents=True, exist_ok=True)
    with StopFlag() as stop:
        trained = training.train(settings, data, work, device, stop, evaluate if bins else None)
    if trained is None:
        log.warning("train: stopped; the checkpoint in %s resumes it", work)
        return STOPPED
    if rank == 0:
        training.save_backbone(trained, backbone)
        with atomic_path(metrics) as temporary:
            shutil.copyfile(work / training.METRICS, temporary)
        log.info("train: wrote %s", backbone)
    if world > 1:
        dist.destroy_process_group()
    return 0
