"""Model paths come from the config; each mistake is one line naming key, path and expectation."""

import pickle

import pytest
import torch

from digi2real import models
from digi2real.errors import Digi2RealError, ModelFileError

pytestmark = pytest.mark.unit


def config_with(tmp_path, **paths):
    """A `models:` slice; relative paths made absolute under `tmp_path`."""
    return {"models": {k: str(tmp_path / v) for k, v in paths.items()}}


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_missing_key_is_named(tmp_path):
    with pytest.raises(Exception, match="config key models.arc2face_encoder is missing"):
        models.model_path({"models": {}}, models.ENCODER)


def test_a_key_left_unset_is_named_in_one_line():
    """evaluation.recognizer is null unless a second recognizer is asked for: a stage asked to
    embed with it says so, instead of failing deep inside."""
    with pytest.raises(ModelFileError, match="config key evaluation.recognizer is not set;"):
        models.model_path({"evaluation": {"recognizer": None}}, models.RECOGNIZER)


def test_missing_folder_names_key_path_and_expectation(tmp_path):
    config = config_with(tmp_path, arc2face_encoder="nowhere/encoder")
    with pytest.raises(ModelFileError) as error:
        models.model_path(config, models.ENCODER)
    message = str(error.value)
    assert "models.arc2face_encoder" in message
    assert str(tmp_path / "nowhere/encoder") in message
    assert "Arc2Face's CLIP text encoder" in message
    assert "\n" not in message


def test_folder_lacking_a_file_lists_it(tmp_path):
    touch(tmp_path / "encoder/config.json")
    config = config_with(tmp_path, arc2face_encoder=tmp_path / "encoder")
    with pytest.raises(ModelFileError, match="lacks pytorch_model.bin"):
        models.model_path(config, models.ENCODER)


def test_complete_folder_is_accepted(tmp_path):
    touch(tmp_path / "unet/config.json")
    touch(tmp_path / "unet/diffusion_pytorch_model.safetensors")
    config = config_with(tmp_path, arc2face_unet="unet")
    assert models.model_path(config, models.UNET) == tmp_path / "unet"


def test_nested_antelopev2_folder_is_recognised(tmp_path):
    touch(tmp_path / "antelopev2/antelopev2/scrfd_10g_bnkps.onnx")
    config = config_with(tmp_path, detector="antelopev2/scrfd_10g_bnkps.onnx")
    with pytest.raises(ModelFileError) as error:
        models.model_path(config, models.DETECTOR)
    assert "antelopev2/antelopev2/" in str(error.value)
    assert "point the key there" in str(error.value)


def test_detector_key_pointing_at_the_pack_folder_suggests_the_file(tmp_path):
    touch(tmp_path / "antelopev2/scrfd_10g_bnkps.onnx")
    config = config_with(tmp_path, detector="antelopev2")
    with pytest.raises(ModelFileError, match="did you mean .*scrfd_10g_bnkps.onnx"):
        models.model_path(config, models.DETECTOR)


def test_glintr100_is_refused_as_arcface(tmp_path):
    touch(tmp_path / "antelopev2/glintr100.onnx")
    config = config_with(tmp_path, arcface="antelopev2/glintr100.onnx")
    with pytest.raises(ModelFileError, match="different embedding space"):
        models.model_path(config, models.ARCFACE)


def test_corrupt_encoder_checkpoint_names_the_file(tmp_path):
    touch(tmp_path / "encoder/config.json")
    (tmp_path / "encoder/pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(ModelFileError, match="pytorch_model.bin could not be read"):
        models.load_text_encoder(tmp_path / "encoder")


class Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_encoder_checkpoint_is_loaded_with_weights_only(tmp_path, capsys):
    touch(tmp_path / "encoder/config.json")
    with open(tmp_path / "encoder/pytorch_model.bin", "wb") as stream:
        pickle.dump({"text_model.x": Payload()}, stream)
    with pytest.raises(ModelFileError, match="could not be read"):
        models.load_text_encoder(tmp_path / "encoder")
    assert "code ran" not in capsys.readouterr().out


def test_resolve_dtype_defaults_to_fp16_on_cuda_and_fp32_on_cpu():
    assert models.resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert models.resolve_dtype("auto", torch.device("cuda")) is torch.float16
    with pytest.raises(ModelFileError, match="unknown dtype"):
        models.resolve_dtype("fp8", torch.device("cpu"))


def test_unknown_scheduler_names_the_key(tmp_path):
    with pytest.raises(ModelFileError, match="generation.scheduler"):
        models.load_scheduler(tmp_path, "pndm-fast")


CPU_BUILD = ["AzureExecutionProvider", "CPUExecutionProvider"]  # onnxruntime 1.32.0's wheel
GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture
def onnxruntime_build(monkeypatch):
    """Sets what the onnxruntime module offers and whether onnxruntime-gpu is installed."""
    import onnxruntime

    def set_build(available: list[str], gpu_wheel: bool) -> None:
        monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: available)
        monkeypatch.setattr(models, "_installed", lambda name: gpu_wheel)

    return set_build


def test_faces_run_on_cuda_with_the_heuristic_search_when_onnxruntime_has_it(onnxruntime_build):
    onnxruntime_build(GPU_BUILD, gpu_wheel=True)
    cuda = ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})
    assert models.onnx_providers("auto") == [cuda, "CPUExecutionProvider"]
    assert models.onnx_providers("cuda") == [cuda, "CPUExecutionProvider"]
    assert models.onnx_providers("cpu") == ["CPUExecutionProvider"]


def test_cpu_onnxruntime_runs_on_the_cpu_unless_cuda_is_demanded(onnxruntime_build):
    onnxruntime_build(CPU_BUILD, gpu_wheel=False)
    assert models.onnx_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(ModelFileError, match="face.providers is cuda .* no CUDA provider"):
        models.onnx_providers("cuda")


def test_gpu_wheel_overwritten_by_the_cpu_one_names_the_fix(onnxruntime_build):
    """What `pip install '.[gpu]'` leaves (measured): onnxruntime-gpu's metadata, with the CPU
    wheel's module installed after it."""
    onnxruntime_build(CPU_BUILD, gpu_wheel=True)
    for name in ("auto", "cuda"):
        with pytest.raises(Digi2RealError, match="pip install --force-reinstall --no-deps"):
            models.onnx_providers(name)
    assert models.onnx_providers("cpu") == ["CPUExecutionProvider"]


def test_installed_reads_the_package_metadata():
    assert models._installed("onnxruntime")
    assert not models._installed("no-such-distribution-for-digi2real")


def test_a_models_hash_covers_the_files_its_loader_reads_and_no_other(tmp_path):
    """A README edited beside the weights must not regenerate every image; a weights file or
    an optional tokenizer file the loader reads must."""
    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text("{}")
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    before = models.model_sha256(vae, models.VAE)
    (vae / "README.md").write_text("notes")
    (vae / "diffusion_pytorch_model.bin").write_bytes(b"not read: the safetensors are")
    assert models.model_sha256(vae, models.VAE) == before
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"other weights")
    assert models.model_sha256(vae, models.VAE) != before
    (vae / "diffusion_pytorch_model.safetensors").unlink()  # then the pickle is what loads
    assert models.files_read(vae, models.VAE) == [
        vae / "config.json",
        vae / "diffusion_pytorch_model.bin",
    ]
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    for name in ("vocab.json", "merges.txt", "notes.txt"):
        (tokenizer / name).write_text(name)
    before = models.model_sha256(tokenizer, models.TOKENIZER)
    (tokenizer / "tokenizer_config.json").write_text('{"model_max_length": 77}')
    assert models.model_sha256(tokenizer, models.TOKENIZER) != before
    assert tokenizer / "notes.txt" not in models.files_read(tokenizer, models.TOKENIZER)
    onnx = tmp_path / "arcface.onnx"
    onnx.write_bytes(b"graph")
    assert models.model_sha256(onnx, models.ARCFACE) == models.file_sha256(onnx)
