"""Training a face recognizer on the dataset, the field's verdict on a synthetic FR set.

The recipe is arcface_torch's: an IResNet backbone (digi2real/iresnet.py) and a margin-softmax
head (digi2real/margin.py) trained with SGD (momentum, weight decay on both), the backbone's
gradient norm clipped at 5, mixed precision with a gradient scaler on CUDA. The learning rate
is multiplied by lr_gamma after each epoch of lr_steps (the step schedule of the comparison
table Vec2Face's authors give; arcface_torch's own default is a polynomial decay).

One process per GPU under DDP (torchrun), or one process on the CPU. Stopping and resuming:
- A checkpoint holds everything the next step depends on: backbone, head, optimizer (momentum
  buffers), gradient scaler, scheduler, the step reached (the data position: an epoch's order
  and flips derive from the seed and the epoch, digi2real/training_data.py) and the RNG states.
- It is written every checkpoint_minutes and when SIGTERM or SIGINT arrives (SLURM's warning
  before a time limit or a preemption), after the step under way; the caller then exits 143
  and the profile's retry resumes from it.
- So on the CPU, at the same thread count, a run stopped (or killed) after k steps and resumed
  ends with weights bitwise equal to an uninterrupted run's (tests/test_training.py). On CUDA,
  cuDNN's kernels make no such promise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from digi2real import testing
from digi2real.atomic import atomic_path
from digi2real.errors import DataError
from digi2real.exports import REAL, SYNTHETIC
from digi2real.iresnet import iresnet
from digi2real.margin import MarginHead
from digi2real.progress import log
from digi2real.training_data import EpochPlan, FaceRecords, TrainingImages

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"

# A function of the backbone (in eval mode, on the training device) giving each benchmark's
# verification accuracy: the evaluations logged during training.
Evaluate = Callable[[torch.nn.Module], dict[str, float]]


@dataclass(frozen=True)
class TrainSettings:
    """The `train:` settings a run's weights depend on, and those that pace it."""

    network: str
    embedding_size: int
    loss: str
    scale: float
    margin: float | None
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    epochs: int
    lr_steps: tuple[int, ...]
    lr_gamma: float
    max_steps: int | None
    flip: bool
    fp16: bool
    grad_clip: float
    seed: int
    cpu_threads: int
    loader_workers: int = 0
    checkpoint_minutes: float = 30.0
    log_every_steps: int = 100
    # Fine-tuning (train.mixin_mode finetune): the learning rates of the backbone and of the
    # head, relative to `lr`; 1 for a training from scratch.
    backbone_lr_scale: float = 1.0
    head_lr_scale: float = 1.0

    # Settings that change no weight beyond rounding: a checkpoint written under other values
    # of these is resumed (another cpu_threads then makes the result equal within rounding,
    # not bitwise).
    PACING = ("loader_workers", "checkpoint_minutes", "log_every_steps", "cpu_threads")

    @classmethod
    def from_config(cls, config) -> TrainSettings:
        train = config["train"]
        names = {field.name for field in dataclasses.fields(cls)} - {
            "seed", "lr_steps", "backbone_lr_scale", "head_lr_scale"
        }  # fmt: skip
        return cls(
            **{name: train[name] for name in names},
            lr_steps=tuple(train["lr_steps"]),
            seed=config["seed"],
        )

    def fine_tuning(self, config) -> TrainSettings:
        """These settings with train.finetune's learning-rate scales."""
        scales = config["train"]["finetune"]
        return dataclasses.replace(
            self,
            backbone_lr_scale=scales["backbone_lr_scale"],
            head_lr_scale=scales["head_lr_scale"],
        )

    def fingerprint(
        self, data: TrainingSet, world: int, init: dict[str, torch.Tensor] | None = None
    ) -> str:
        """What a checkpoint must have been trained with to be resumed: the weight-changing
        settings, the number of processes (a step's batch and an epoch's steps depend on it),
        the training images (their count, labels, classes and which are kept) and the initial
        backbone a fine-tuning starts from."""
        settings = {
            key: value for key, value in dataclasses.asdict(self).items() if key not in self.PACING
        }
        settings["processes"] = world
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(data.records.labels).tobytes())
        digest.update(np.ascontiguousarray(data.classes).tobytes())
        for name, tensor in sorted((init or {}).items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


class Recognizer(torch.nn.Module):
    """Backbone and margin head as one module: DDP then reduces both's gradients."""

    def __init__(self, backbone: torch.nn.Module, head: MarginHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, faces: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(faces), labels)


@dataclass(frozen=True)
class TrainingSet:
    """The images trained on: `classes[i]` is image i's class, -1 for an image left out (an
    identity flagged as a benchmark leak, or of a source not trained on); classes are
    0..num_classes-1."""

    records: FaceRecords
    classes: np.ndarray
    num_classes: int

    @classmethod
    def without(
        cls,
        records: FaceRecords,
        excluded: set[tuple[str, str]],
        sources: frozenset[str] = frozenset({SYNTHETIC, REAL}),
    ) -> TrainingSet:
        """Every image of `records` of the identities of `sources` but those `excluded`, each
        a (source, identity) pair, the classes of the others renumbered in label order. By its
        source too: a real identity may bear a synthetic one's name."""
        kept = [
            source in sources and (source, identity) not in excluded
            for identity, source in zip(records.identities, records.sources, strict=True)
        ]
        renumbered = np.cumsum(kept) - 1
        class_of_label = np.where(kept, renumbered, -1)
        classes = class_of_label[records.labels] if len(records) else records.labels
        return cls(records, classes.astype(np.int64), int(sum(kept)))

    @property
    def images(self) -> np.ndarray:
        return np.flatnonzero(self.classes >= 0)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _any_rank(device: torch.device, *flags: bool) -> list[bool]:
    """Each flag, true on every process where it is true on any: all stop at the same step.
    On the training device: NCCL reduces only CUDA tensors."""
    if _world()[1] == 1:
        return list(flags)
    tensor = torch.tensor([int(flag) for flag in flags], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(value) for value in tensor.tolist()]


class MetricsLog:
    """metrics.jsonl: one JSON object a line, written by process 0. On resume, lines past the
    checkpoint's step are dropped: the resumed run writes them again."""

    def __init__(self, path: Path, through_step: int, writes: bool) -> None:
        self.path, self.writes = path, writes
        if not writes:
            return
        kept = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    break  # a line cut by a kill: the last one
                if record.get("step", 0) <= through_step:
                    kept.append(line)
        with atomic_path(path) as temporary:
            temporary.write_text("".join(f"{line}\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.writes:
            with open(self.path, "a") as file:
                file.write(json.dumps(record, sort_keys=True) + "\n")


def _rng_states() -> dict:
    states = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def training_step(
    model: torch.nn.Module,
    backbone: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    faces: torch.Tensor,
    labels: torch.Tensor,
    grad_clip: float,
) -> torch.Tensor:
    """One step of arcface_torch's recipe: the margin loss of `model` (backbone and head, or
    their DDP wrapper), its gradients scaled (a no-op off CUDA), unscaled to clip the
    backbone's norm at `grad_clip`, then the optimizer's step; the loss."""
    loss = model(faces, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(backbone.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss


def train(
    settings: TrainSettings,
    data: TrainingSet,
    work: Path,
    device: torch.device,
    stop: Callable[[], bool],
    evaluate: Evaluate | None = None,
    init: dict[str, torch.Tensor] | None = None,
) -> torch.nn.Module | None:
    """Train on `data`, resuming from `work`'s checkpoint when one of the same settings and
    data is there; the trained backbone (on the CPU, eval mode), or None when `stop` asked to
    stop (a checkpoint is then written). A fine-tuning starts from the backbone state `init`,
    with a new head. Every process of a DDP run calls it."""
    rank, world = _world()
    # 1. Deterministic set-up: initial weights from the seed, a fixed thread count on the CPU.
    if device.type == "cpu":
        torch.set_num_threads(settings.cpu_threads)
    torch.manual_seed(settings.seed)
    mixed = settings.fp16 and device.type == "cuda"

    # 2. The network, head, optimizer, schedule and scaler.
    backbone = iresnet(settings.network, settings.embedding_size, fp16=mixed)
    if init is not None:
        backbone.load_state_dict(init)
    head = MarginHead(
        data.num_classes, settings.embedding_size, settings.loss, settings.scale, settings.margin
    )
    model = Recognizer(backbone, head).to(device)
    trained: torch.nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = torch.optim.SGD(
        [
            {"params": backbone.parameters(), "lr": settings.lr * settings.backbone_lr_scale},
            {"params": head.parameters(), "lr": settings.lr * settings.head_lr_scale},
        ],
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    plan = EpochPlan(data.images, settings.batch_size, world, settings.seed)
    if plan.steps == 0:
        raise DataError(
            f"train: {len(data.images)} images, fewer than one step's batch_size x gpus = "
            f"{settings.batch_size * world}"
        )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [epoch * plan.steps for epoch in settings.lr_steps], settings.lr_gamma
    )
    scaler = torch.amp.GradScaler(device.type, enabled=mixed)
    total = settings.epochs * plan.steps
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)

    # 3. Resume from the checkpoint, if it is one of these settings and data.
    fingerprint = settings.fingerprint(data, world, init)
    step = 0
    checkpoint_path = work / CHECKPOINT
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            _set_rng_states(state["rng"])
            step = state["step"]
            log.info("train: resumed at step %d of %d from %s", step, total, checkpoint_path)
        else:
            log.warning("train: %s is of other settings or data: starting over", checkpoint_path)
    # A fresh start keeps no line of an earlier run's log (of other settings, or killed before
    # its first checkpoint).
    metrics = MetricsLog(work / METRICS, step if step > 0 else -1, writes=rank == 0)
    if step == 0:
        metrics.write(
            {
                "step": 0,
                "images": len(data.images),
                "classes": data.num_classes,
                "steps": total,
                "steps_per_epoch": plan.steps,
                "processes": world,
            }
        )

    def save_checkpoint() -> None:
        if rank == 0:
            state = {
                "fingerprint": fingerprint,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_states(),
            }
            with atomic_path(checkpoint_path) as temporary:
                torch.save(state, temporary)
        if world > 1:
            dist.barrier()

    def evaluation(epoch: int) -> None:
        if evaluate is not None and rank == 0:
            backbone.eval()
            with torch.no_grad():
                accuracies = evaluate(backbone)
            backbone.train()
            metrics.write({"step": step, "epoch": epoch, "verification": accuracies})
            log.info("train: step %d: %s", step, accuracies)
        if world > 1:
            dist.barrier()

    # 4. The steps, epoch by epoch, from where the checkpoint left off.
    dataset = TrainingImages(data.records, data.classes, settings.seed, settings.flip)
    faults = testing.TrainingFaults(work)
    if step == 0:
        # The untrained network's accuracy: what the training's is to be read against (on a
        # benchmark whose identities differ in colour, as the demo's, it is far from chance).
        evaluation(0)
    model.train()
    last_checkpoint = time.monotonic()
    while step < total:
        epoch, start = divmod(step, plan.steps)
        dataset.set_epoch(epoch)  # before the loader copies the dataset into its workers
        batches = plan.batches(epoch, rank, start)[: total - step]
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=settings.loader_workers,
            pin_memory=device.type == "cuda",
        )
        interval = {"loss": 0.0, "steps": 0, "wait": 0.0, "start": time.monotonic()}
        fetched = time.monotonic()
        for faces, labels in loader:
            interval["wait"] += time.monotonic() - fetched
            faces = faces.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            loss = training_step(
                trained, backbone, optimizer, scaler, faces, labels, settings.grad_clip
            )
            # This step's, before the schedule moves on: the backbone's, and the head's.
            lr, head_lr = (group["lr"] for group in optimizer.param_groups)
            scheduler.step()
            step += 1
            # Summed on the device: a float() each step would wait for the GPU every step.
            interval["loss"] = interval["loss"] + loss.detach()
            interval["steps"] += 1
            if step % settings.log_every_steps == 0 or step == total:
                elapsed = time.monotonic() - interval["start"]
                record = {
                    "step": step,
                    "epoch": epoch,
                    "loss": float(interval["loss"]) / interval["steps"],
                    "lr": lr,
                    "head_lr": head_lr,
                    "images_per_second": interval["steps"] * settings.batch_size * world / elapsed,
                    "data_wait_share": interval["wait"] / elapsed,
                }
                metrics.write(record)
                log.info(
                    "train: step %d/%d epoch %d loss %.4f lr %g %.1f images/s",
                    step, total, epoch, record["loss"], record["lr"], record["images_per_second"],
                )  # fmt: skip
                interval = {"loss": 0.0, "steps": 0, "wait": 0.0, "start": time.monotonic()}
            if step % plan.steps == 0 or step == total:
                # Before the stop check: a run stopped at an epoch's end has its evaluation.
                evaluation(epoch)
            due = time.monotonic() - last_checkpoint >= settings.checkpoint_minutes * 60
            stopping, due = _any_rank(device, stop(), due)
            if stopping or due:
                save_checkpoint()
                last_checkpoint = time.monotonic()
                log.info("train: checkpoint at step %d", step)
            if stopping:
                return None
            faults.step_done(step)
            fetched = time.monotonic()

    # 5. The final checkpoint (a rerun of a finished run only writes the outputs again).
    save_checkpoint()
    backbone.eval()
    return backbone.cpu()


def save_backbone(backbone: torch.nn.Module, path: Path) -> None:
    """The backbone's state dict, arcface_torch's `model.pt` layout, written atomically."""
    with atomic_path(path) as temporary:
        torch.save(
            {name: tensor.cpu() for name, tensor in backbone.state_dict().items()}, temporary
        )
