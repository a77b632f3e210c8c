"""Rule `train`: a face recognizer trained on the run's own export (digi2real/training.py), the
backbone in arcface_torch's layout. One process on the CPU or one GPU; with train.gpus > 1 it
starts torchrun, which starts one process per GPU of the node (DDP). A SIGTERM checkpoints and
exits 143; the retry resumes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from digi2real.config import Config
from digi2real.stages import Argument

CONFIG_KEYS: list[str] = ["seed", "train", "benchmark.bins", "benchmark.batch_size"]

# The identities a sub-run trains on, by their source in labels.csv (the mix-in's are "real").
CLASSES = ("all", "synthetic", "real")

HELP = "train a face recognizer on an export (GPU job; under torchrun, one process per GPU)"
ARGUMENTS = (
    Argument("--export", "the export folder it reads (train.data's format)"),
    Argument("--work", "folder of the checkpoint and the running metrics, kept for a resume"),
    Argument("--backbone", "backbone.pt to write: the trained backbone's state dict"),
    Argument("--metrics", "metrics.jsonl to write: loss, lr, throughput, accuracy"),
    Argument(
        "--leaks",
        "synthetic identities to leave out (evaluation/benchmark_leaks.csv, an `identity` "
        "column); with train.exclude_benchmark_leaks",
        default=None,
    ),
    Argument(
        "--real-leaks",
        "real identities of the mix-in to leave out (mixin/benchmark_leaks.csv)",
        default=None,
    ),
    Argument(
        "--classes",
        "the identities trained on, by source: all, synthetic (without the mix-in) or real",
        type=str,
        default="all",
        choices=CLASSES,
    ),
    Argument(
        "--init",
        "a backbone.pt to fine-tune (train.mixin_mode finetune) with train.finetune's scales",
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
    real_leaks: Path | None = None,
    classes: str = "all",
    init: Path | None = None,
) -> int:
    """Train on the `classes` of `export` (from `init`'s backbone, for a fine-tuning), resuming
    from `work`; write `backbone` and `metrics` once done, or return STOPPED after a checkpoint
    when SIGTERM or SIGINT asked to stop."""
    import csv

    import torch
    import torch.distributed as dist

    from digi2real import training, verification
    from digi2real.atomic import atomic_path
    from digi2real.exports import REAL, SYNTHETIC
    from digi2real.iresnet import embedder
    from digi2real.progress import STOPPED, StopFlag, log
    from digi2real.training_data import open_export

    settings = training.TrainSettings.from_config(config)
    train = config["train"]

    # 1. The processes: for several GPUs, torchrun starting this command once per GPU; under
    # it, one per GPU (NCCL), or gloo's on the CPU; else one.
    if train["gpus"] > 1 and "WORLD_SIZE" not in os.environ:
        return launch(train["gpus"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and train["gpus"] > 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    elif train["gpus"] > 0:
        log.warning("train: train.gpus is %d but CUDA is not available: on the CPU", train["gpus"])
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0

    # 2. The training set: the identities of `classes`, without those flagged as benchmark
    # leaks (each file's identities of its own source: a real one may bear a synthetic name).
    records = open_export(export, train["data"])
    excluded: set[tuple[str, str]] = set()
    for source, path in ((SYNTHETIC, leaks), (REAL, real_leaks)):
        if path is not None and train["exclude_benchmark_leaks"]:
            with open(path, newline="") as file:
                excluded |= {(source, row["identity"]) for row in csv.DictReader(file)}
    sources = {"all": {SYNTHETIC, REAL}, "synthetic": {SYNTHETIC}, "real": {REAL}}[classes]
    data = training.TrainingSet.without(records, excluded, frozenset(sources))
    flagged = excluded & set(zip(records.sources, records.identities, strict=True))
    log.info(
        "train: %d images of %d identities (%s) from %s (%d left out as benchmark leaks)",
        len(data.images), data.num_classes, classes, export, len(flagged),
    )  # fmt: skip
    # A fine-tuning: the pre-trained backbone, at train.finetune's learning-rate scales.
    start = None
    if init is not None:
        from digi2real.iresnet import load_backbone

        start = load_backbone(init, train["network"]).state_dict()
        settings = settings.fine_tuning(config)
        log.info(
            "train: fine-tuning %s, backbone lr x%g, head lr x%g",
            init, settings.backbone_lr_scale, settings.head_lr_scale,
        )  # fmt: skip

    # 3. The benchmarks evaluated after each epoch, if any are configured: by process 0 only,
    # which alone holds them (the six standard files decoded are about 3 GB).
    bins = {
        name: verification.load_bin(Path(path))
        for name, path in config["benchmark"]["bins"].items()
        if rank == 0
    }

    def evaluate(network: torch.nn.Module) -> dict[str, float]:
        # As the benchmark job embeds (stages/benchmark.py): the last evaluation is its figure.
        embed = embedder(network, device)
        batch = config["benchmark"]["batch_size"]
        return {
            name: verification.benchmark(faces, embed, batch).accuracy
            for name, faces in bins.items()
        }

    # 4. Train, then write the outputs (process 0); a stop leaves the checkpoint.
    work.mkdir(parents=True, exist_ok=True)
    with StopFlag() as stop:
        trained = training.train(
            settings, data, work, device, stop, evaluate if bins else None, init=start
        )
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


def launch(processes: int) -> int:
    """This command again under torchrun, one process per GPU, as a child: a SIGTERM (SLURM's,
    to every process of the job) reaches torchrun, which passes it on to each process; they
    checkpoint and exit 143. torchrun then reports a failure of its own (1): this process says
    143 for it, as a single-GPU job does, once it was itself asked to stop."""
    import contextlib
    import signal
    import subprocess
    import sys
    import time

    from digi2real.progress import STOPPED, StopFlag, log

    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={processes}", "-m", "digi2real", *sys.argv[1:],
    ]  # fmt: skip
    log.info("train: %s", " ".join(command))
    child = subprocess.Popen(command)
    asked: float | None = None
    with StopFlag() as stop:
        while child.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
            if stop() and asked is None:
                asked = time.monotonic()
            # SLURM and a terminal signal every process of the job at once; a signal sent to
            # this one alone (kill PID) is passed on, once the processes had time to react.
            if asked is not None and time.monotonic() - asked > 30 and child.poll() is None:
                child.send_signal(signal.SIGTERM)
                asked = float("inf")
    if child.returncode != 0 and stop():
        # Last in the log, after torchrun's report of its processes' exit 143.
        log.warning("train: stopped after a checkpoint; the retry resumes from it")
        return STOPPED
    return child.returncode
