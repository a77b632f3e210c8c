"""Loading every model from the on-disk layouts users have, by the paths in the config.

Nothing is downloaded: Hugging Face libraries run offline (see `digi2real/__init__.py`),
insightface models are loaded by file, and pickle checkpoints with `weights_only=True`.
Each missing or misplaced file is one error line naming the config key, the path and what
was expected there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from digi2real.config import Config, resolve_path
from digi2real.errors import Digi2RealError, ModelFileError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelSpec:
    key: str
    files: tuple[str, ...]  # empty: the path is itself a file
    what: str
    # Read by the loader when they are there (a folder's other files, a README say, are not).
    optional: tuple[str, ...] = ()


ENCODER = ModelSpec(
    "models.arc2face_encoder",
    ("config.json", "pytorch_model.bin"),
    "Arc2Face's CLIP text encoder folder (encoder/ of FoivosPar/Arc2Face)",
)
UNET = ModelSpec(
    "models.arc2face_unet",
    ("config.json", "diffusion_pytorch_model.safetensors"),
    "Arc2Face's UNet folder (arc2face/ of FoivosPar/Arc2Face)",
)
ARCFACE = ModelSpec(
    "models.arcface",
    (),
    "arcface.onnx, the ArcFace model Arc2Face was trained with (FoivosPar/Arc2Face)",
)
DETECTOR = ModelSpec(
    "models.detector",
    (),
    "scrfd_10g_bnkps.onnx, the SCRFD face detector of insightface's antelopev2 pack",
)
VAE = ModelSpec(
    "models.vae",
    ("config.json", "diffusion_pytorch_model.safetensors"),
    "the vae/ folder of stable-diffusion-v1-5",
)
TOKENIZER = ModelSpec(
    "models.tokenizer",
    ("vocab.json", "merges.txt"),
    "the tokenizer/ folder of stable-diffusion-v1-5",
    ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.json"),
)
SCHEDULER = ModelSpec(
    "models.scheduler",
    ("scheduler_config.json",),
    "the scheduler/ folder of stable-diffusion-v1-5",
)
LCM_LORA = ModelSpec(
    "models.lcm_lora",
    (),
    "the LCM-LoRA weights for SD 1.5 (pytorch_lora_weights.safetensors of lcm-lora-sdv1-5)",
)

RECOGNIZER = ModelSpec(
    "evaluation.recognizer",
    (),
    "an ArcFace-shaped ONNX recognizer, (N, 3, 112, 112) -> (N, 512), e.g. insightface's "
    "w600k_r50.onnx",
)

FACE_MODELS = (ARCFACE, DETECTOR)
GENERATION_MODELS = (ENCODER, UNET, VAE, TOKENIZER, SCHEDULER)
# The spec of each key of the config's `models:` section.
BY_KEY = {spec.key: spec for spec in (*GENERATION_MODELS, *FACE_MODELS, LCM_LORA)}


def model_path(config: Config, spec: ModelSpec) -> Path:
    """The checked path of one model; raises a one-line error when it is not as expected."""
    path = resolve_path(config, spec.key)
    if path is None:
        raise ModelFileError(f"config key {spec.key} is not set; expected {spec.what}")
    prefix = f"config key {spec.key}: {path}"
    if not spec.files:
        if path.is_file():
            if spec is ARCFACE and path.name == "glintr100.onnx":
                raise ModelFileError(
                    f"{prefix} is insightface's glintr100, a different embedding space from the "
                    f"ArcFace Arc2Face was trained with; expected {spec.what}"
                )
            return path
        hint = _nested_pack_hint(path)
        if path.is_dir() and (path / _expected_name(spec)).is_file():
            hint = f"; did you mean {path / _expected_name(spec)}?"
        raise ModelFileError(f"{prefix} is not a file; expected {spec.what}{hint}")
    if not path.is_dir():
        raise ModelFileError(f"{prefix} is not a folder; expected {spec.what}")
    missing = [name for name in spec.files if not (path / name).is_file()]
    if spec is VAE and missing == ["diffusion_pytorch_model.safetensors"]:
        if (path / "diffusion_pytorch_model.bin").is_file():
            missing = []
    if missing:
        nested = path / path.name
        hint = f"; found a nested {nested}, point the key there" if nested.is_dir() else ""
        raise ModelFileError(f"{prefix} lacks {', '.join(missing)}; expected {spec.what}{hint}")
    return path


@dataclass(frozen=True)
class ModelPaths:
    """The checked path of each model a stage loads, by its spec: resolved once at the
    stage's door (`from_config`), so that a missing or misplaced model is one line naming its
    config key before any model loads, and nothing past the door reads the config."""

    by_key: dict[str, Path]

    @classmethod
    def from_config(cls, config: Config, *specs: ModelSpec) -> ModelPaths:
        return cls({spec.key: model_path(config, spec) for spec in specs})

    def __getitem__(self, spec: ModelSpec) -> Path:
        return self.by_key[spec.key]


def _expected_name(spec: ModelSpec) -> str:
    return {"models.arcface": "arcface.onnx", "models.detector": "scrfd_10g_bnkps.onnx"}.get(
        spec.key, ""
    )


def _nested_pack_hint(path: Path) -> str:
    """The antelopev2 zip unpacks into antelopev2/antelopev2/: recognise it and say so."""
    nested = path.parent / path.parent.name / path.name
    if nested.is_file():
        return (
            f"; found {nested}: the antelopev2 zip unpacks into a nested "
            f"{path.parent.name}/{path.parent.name}/ folder, point the key there"
        )
    return ""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_read(path: Path, spec: ModelSpec) -> list[Path]:
    """The files of a model that its loader reads: the file itself, or the folder's required
    and optional files that are there (the VAE's weights as diffusers takes them: safetensors,
    else the pickle). Nothing else of the folder: a README edited beside the weights is not
    the model."""
    if not spec.files:
        return [path]
    names = [*spec.files, *spec.optional]
    if spec is VAE and not (path / "diffusion_pytorch_model.safetensors").is_file():
        names = [name.replace(".safetensors", ".bin") for name in names]
    return [path / name for name in names if (path / name).is_file()]


def model_sha256(path: Path, spec: ModelSpec) -> str:
    """sha256 of a model file, or of the files of a folder its loader reads (names and
    contents, in sorted order)."""
    if not spec.files:
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(files_read(path, spec)):
        digest.update(str(item.relative_to(path)).encode())
        digest.update(file_sha256(item).encode())
    return digest.hexdigest()


# --- torch-side models -------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if name not in dtypes:
        raise ModelFileError(f"unknown dtype {name!r}; expected auto, {', '.join(dtypes)}")
    return dtypes[name]


def load_text_encoder(path: Path):
    """Arc2Face's encoder as saved by transformers 4.36: pytorch_model.bin, keys `text_model.*`.

    Newer transformers releases dropped the `text_model` submodule of CLIPTextModel, so the
    keys are mapped onto whichever layout the installed version builds.
    """
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    checkpoint = path / "pytorch_model.bin"
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe pickles
        raise ModelFileError(f"{checkpoint} could not be read as a weights file: {error}") from None
    config = CLIPTextConfig.from_json_file(str(path / "config.json"))
    model = CLIPTextModel(config)
    expected = set(model.state_dict())
    has_prefix = any(name.startswith("text_model.") for name in expected)
    remapped = {}
    for name, tensor in state.items():
        bare = name.removeprefix("text_model.")
        if bare == "embeddings.position_ids":  # a buffer some releases saved, others do not
            continue
        remapped[f"text_model.{bare}" if has_prefix else bare] = tensor
    missing = sorted(expected - set(remapped) - {_position_ids(has_prefix)})
    unexpected = sorted(set(remapped) - expected)
    if missing or unexpected:
        raise ModelFileError(
            f"{checkpoint} does not match {path / 'config.json'}: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model.load_state_dict(remapped, strict=False)
    return model.eval().requires_grad_(False)


def _position_ids(has_prefix: bool) -> str:
    return ("text_model." if has_prefix else "") + "embeddings.position_ids"


def load_tokenizer(path: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(path), local_files_only=True)


def load_unet(path: Path, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(
        str(path), torch_dtype=dtype, local_files_only=True
    ).requires_grad_(False)


def load_vae(path: Path, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(
        str(path), torch_dtype=dtype, local_files_only=True
    ).requires_grad_(False)


SCHEDULERS = {
    "dpmsolver++": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "lcm": "LCMScheduler",
}


def load_scheduler(path: Path, name: str = "dpmsolver++"):
    """SD 1.5's scheduler config, run by the scheduler Arc2Face uses (DPM-Solver++ multistep)."""
    import diffusers

    if name not in SCHEDULERS:
        raise ModelFileError(
            f"config key generation.scheduler: unknown scheduler {name!r}; "
            f"expected one of {', '.join(SCHEDULERS)}"
        )
    config = diffusers.DPMSolverMultistepScheduler.load_config(str(path))
    if name == "lcm":
        # Arc2Face's fast mode builds LCM from its DPM-Solver++ scheduler's config, whose
        # timestep spacing differs from LCM's default; follow that chain exactly.
        config = diffusers.DPMSolverMultistepScheduler.from_config(config).config
    return getattr(diffusers, SCHEDULERS[name]).from_config(config)


# --- insightface models ------------------------------------------------------------------


# cuDNN's exhaustive search (onnxruntime's default) benchmarks every convolution again for each
# new input shape, and SCRFD sees a new shape for every image size: the heuristic choice is
# made once.
CUDA_PROVIDER = ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})


def onnx_providers(name: str = "auto") -> list:
    """onnxruntime's providers for `face.providers`: CUDA (with its options) first where
    onnxruntime has it (the `gpu` extra's onnxruntime-gpu, or envs/gpu.yaml's CUDA build) and
    it is wanted, then the CPU."""
    import onnxruntime

    if name == "cpu":
        return ["CPUExecutionProvider"]
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available and _installed("onnxruntime-gpu"):
        # Both wheels write the onnxruntime module, and pip installs insightface's onnxruntime
        # after the `gpu` extra's onnxruntime-gpu: without this the faces would run on the CPU.
        raise Digi2RealError(
            f"config key face.providers is {name}: onnxruntime-gpu is installed, but the "
            f"onnxruntime module is the CPU build {onnxruntime.__version__} that insightface "
            "requires, written over it; run: pip install --force-reinstall --no-deps "
            "onnxruntime-gpu (or set face.providers to cpu)"
        )
    if name == "cuda" and "CUDAExecutionProvider" not in available:
        raise ModelFileError(
            "config key face.providers is cuda but onnxruntime has no CUDA provider; "
            "install the gpu extra (README, Generation speed) or set it to auto"
        )
    cuda = name in ("auto", "cuda") and "CUDAExecutionProvider" in available
    return [CUDA_PROVIDER, "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


def _installed(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def load_detector(
    path: Path, providers: list[str], key: str = DETECTOR.key, threads: int | None = None
):
    """SCRFD loaded by file through insightface's model zoo, never by folder magic."""
    from insightface.model_zoo.scrfd import SCRFD

    model = _load_onnx(path, providers, key, threads)
    if not isinstance(model, SCRFD):
        raise ModelFileError(
            f"config key {key}: {path} is not an SCRFD detector "
            f"(insightface read it as {type(model).__name__}); expected {DETECTOR.what}"
        )
    return model


def load_recognizer(
    path: Path, providers: list[str], spec: ModelSpec = ARCFACE, threads: int | None = None
):
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    model = _load_onnx(path, providers, spec.key, threads)
    shaped = isinstance(model, ArcFaceONNX) and tuple(model.input_size) == (112, 112)
    if not shaped or model.output_shape[-1] != 512:
        raise ModelFileError(
            f"config key {spec.key}: {path} is not an ArcFace recognition model "
            f"(insightface read it as {type(model).__name__}); expected {spec.what}"
        )
    return model


def _load_onnx(path: Path, providers: list[str], key: str, threads: int | None = None):
    """An insightface model of an ONNX file; with `threads`, onnxruntime computes with exactly
    that many intra-op threads and its deterministic kernels (by default one thread per
    physical core: another machine would round some reductions differently)."""
    import onnxruntime
    from insightface.model_zoo import model_zoo

    from digi2real.progress import log

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.use_deterministic_compute = True
    try:
        model = model_zoo.get_model(str(path), providers=providers, sess_options=options)
    except Exception as error:  # onnxruntime raises its own types for a corrupt graph
        raise ModelFileError(
            f"config key {key}: {path} could not be loaded as ONNX: {error}"
        ) from None
    # What onnxruntime applied, not what was asked: a CUDA/cuDNN mismatch falls back to the
    # CPU with no error.
    session = getattr(model, "session", None)
    if session is not None:
        log.info("%s (%s): onnxruntime providers %s", key, path.name, session.get_providers())
    return model
