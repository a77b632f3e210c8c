"""Training throughput and the data loader's share, needing no dataset: a RecordIO export of
synthetic 112x112 JPEG faces is written first, in the layout the workflow's export has.

    python scripts/benchmark_training.py           # CUDA: IResNet-50, batch 128, fp16
    python scripts/benchmark_training.py --tiny    # anywhere, in a minute: IResNet-18, batch 8,
                                                   # on the CPU (what the tests run)

One run measures and prints:
(a) the loader per worker: images/s of one process decoding, flipping and normalising faces
    from the export (digi2real/training_data.py's TrainingImages), the work each loader
    worker does;
(b) training alone: images/s of the steps (forward, margin loss, backward, clip, SGD) on
    batches already on the device, the rate a GPU consumes faces at;
(c) training fed by the loader with --workers processes: images/s, and the share of each
    step's time spent waiting for the next batch;
the loader's margin, (a) x workers / (b): it must be at least 3 for the loader never to be the
bottleneck (the issue's bound); the workers that margin needs; peak host and GPU memory.
The last line is the figures as JSON. `train.images_per_second` takes (c)'s rate on a GPU.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from digi2real.config import resolve_config  # noqa: E402
from digi2real.exports import SYNTHETIC, Classes, write_labelled_recordio  # noqa: E402
from digi2real.iresnet import iresnet  # noqa: E402
from digi2real.margin import MarginHead  # noqa: E402
from digi2real.training import Recognizer, TrainingSet, training_step  # noqa: E402
from digi2real.training_data import RecordIOFaces, TrainingImages  # noqa: E402

MARGIN = 3.0  # the loader must be able to feed at least this many times what training eats
GRAD_CLIP = resolve_config({})["train"]["grad_clip"]  # the recipe's default, arcface_torch's


def synthetic_export(folder: Path, images: int, classes: int) -> RecordIOFaces:
    """A RecordIO export of `images` smooth random faces (JPEG quality 95, as the export's), so
    that decoding costs what a real face's does rather than noise's."""
    rng = np.random.default_rng(0)

    def faces():
        for k in range(images):
            small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
            face = Image.fromarray(small).resize((112, 112), Image.BICUBIC)
            buffer = io.BytesIO()
            face.save(buffer, format="JPEG", quality=95)
            yield k * classes // images, buffer.getvalue()

    folder.mkdir()
    names = [f"id{c}" for c in range(classes)]
    write_labelled_recordio(folder, Classes(names, [SYNTHETIC] * classes), faces())
    return RecordIOFaces(folder)


def loader_rate_per_worker(dataset: TrainingImages, count: int) -> float:
    """(a): images/s of one process doing a worker's work, on one thread as PyTorch runs each
    loader worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset[0]  # the file opened, the decoder loaded
        started = time.perf_counter()
        for index in range(count):
            dataset[index % len(dataset)]
        return count / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="IResNet-18, batch 8, on the CPU")
    parser.add_argument("--network", default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps of (b) and (c)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers of (c)")
    args = parser.parse_args()

    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    network = args.network or ("iresnet50" if cuda else "iresnet18")
    batch = args.batch_size or (128 if cuda else 8)
    steps = args.steps or (50 if cuda else 3)
    workers = args.workers if args.workers is not None else (8 if cuda else 1)
    classes = 1000 if cuda else 16
    print(f"device {device}, {network}, batch {batch}, fp16 {cuda}, {workers} loader workers")

    with tempfile.TemporaryDirectory() as scratch:
        records = synthetic_export(Path(scratch) / "recordio", batch * 8, classes)
        data = TrainingSet.without(records, set())
        dataset = TrainingImages(records, data.classes, seed=0, flip=True)

        # (a) one worker's work
        per_worker = loader_rate_per_worker(dataset, min(len(dataset), 64 if args.tiny else 2000))
        print(f"(a) loader, one worker: {per_worker:.0f} images/s (decode, flip, normalise)")

        # (b) training alone, on batches already on the device
        torch.manual_seed(0)
        backbone = iresnet(network, fp16=cuda)
        model = Recognizer(backbone, MarginHead(data.num_classes, 512)).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=cuda)
        faces = torch.stack([dataset[i][0] for i in range(batch)]).to(device)
        labels = torch.as_tensor(data.classes[:batch]).to(device)
        for _ in range(2):  # warm-up: cuDNN's algorithm search, the allocator
            training_step(model, backbone, optimizer, scaler, faces, labels, GRAD_CLIP)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            training_step(model, backbone, optimizer, scaler, faces, labels, GRAD_CLIP)
        synchronize(device)
        training_rate = steps * batch / (time.perf_counter() - started)
        print(f"(b) training alone: {training_rate:.1f} images/s")

        # (c) training fed by the loader
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            pin_memory=cuda,
            drop_last=True,
            persistent_workers=workers > 0,
        )
        waited, done, started = 0.0, 0, time.perf_counter()
        while done < steps:
            fetched = time.perf_counter()
            for batch_faces, batch_labels in loader:
                waited += time.perf_counter() - fetched
                training_step(
                    model,
                    backbone,
                    optimizer,
                    scaler,
                    batch_faces.to(device, non_blocking=True),
                    batch_labels.to(device, non_blocking=True),
                    GRAD_CLIP,
                )
                synchronize(device)  # so that the wait measured is the device's idle time
                done += 1
                if done == steps:
                    break
                fetched = time.perf_counter()
        elapsed = time.perf_counter() - started
        fed_rate = done * batch / elapsed
        wait_share = waited / elapsed
        print(f"(c) training with the loader: {fed_rate:.1f} images/s, {wait_share:.1%} waiting")

    margin = per_worker * max(workers, 1) / training_rate
    needed = int(np.ceil(MARGIN * training_rate / per_worker))
    verdict = "enough" if margin >= MARGIN else f"too few: {needed} workers give {MARGIN:.0f}x"
    ratio = f"{per_worker:.0f} x {max(workers, 1)} / {training_rate:.1f} = {margin:.1f}x"
    print(f"loader margin: {ratio} ({verdict})")
    print(f"workers for a {MARGIN:.0f}x margin: {needed} per GPU (train.loader_workers)")
    peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_gpu = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else 0.0
    print(f"peak host memory {peak_host:.0f} MB, peak GPU memory {peak_gpu:.0f} MB")
    figures = {
        "device": device.type,
        "network": network,
        "batch_size": batch,
        "loader_images_per_second_per_worker": per_worker,
        "training_images_per_second": training_rate,
        "fed_images_per_second": fed_rate,
        "data_wait_share": wait_share,
        "workers": workers,
        "loader_margin": margin,
        "workers_for_margin": needed,
        "peak_host_mb": peak_host,
        "peak_gpu_mb": peak_gpu,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
