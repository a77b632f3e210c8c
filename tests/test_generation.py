"""Generation through the package equals diffusers' own pipeline, whatever the batch."""

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters

from digi2real import models
from digi2real.config import resolve_config
from digi2real.generation import (
    Arc2FaceGenerator,
    GenerationSettings,
    build_pipeline,
    image_generators,
    initial_latents,
)
from digi2real.models import ModelPaths
from digi2real.projection import Arc2FaceProjector

pytestmark = pytest.mark.unit

# Batching changes the CPU kernels' reduction order, so images of one seed generated in batches
# of 1 and 4 may differ in the last float bits; after 8-bit quantisation that is at most one
# level of 255 on a few pixels. Bound it at 1/255 per pixel, the quantisation step.
BATCH_TOLERANCE = 1.0 / 255.0


@pytest.fixture(scope="module")
def config(demo_root):
    m = demo_root / "models"
    return resolve_config(
        {
            "models": {
                "arc2face_encoder": str(m / "arc2face/encoder"),
                "arc2face_unet": str(m / "arc2face/arc2face"),
                "vae": str(m / "sd15/vae"),
                "tokenizer": str(m / "sd15/tokenizer"),
                "scheduler": str(m / "sd15/scheduler"),
            },
            "generation": {"steps": 6, "height": 64, "width": 64, "device": "cpu"},
            "delta": {"scale": 0.7},
        }
    )


@pytest.fixture(scope="module")
def delta():
    return np.random.default_rng(5).normal(scale=0.05, size=(77, 576)).astype(np.float32)


@pytest.fixture(scope="module")
def generator(config, delta):
    settings = GenerationSettings.from_config(config)
    return Arc2FaceGenerator(pipeline_of(config, settings), settings, delta)


def pipeline_of(config, settings):
    """build_pipeline with the models' paths resolved from `config`, as a stage resolves them."""
    return build_pipeline(ModelPaths.from_config(config, *settings.models()), settings)


def conditions(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, 512))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_defaults_are_the_methods():
    settings = GenerationSettings.from_config(resolve_config({}))
    assert (settings.steps, settings.guidance, settings.height, settings.width) == (
        25,
        3.0,
        512,
        512,
    )
    assert settings.scheduler == "dpmsolver++" and settings.delta_scale == 1.0
    lcm = GenerationSettings.from_config(resolve_config({"models": {"lcm_lora": "x.safetensors"}}))
    assert (lcm.steps, lcm.guidance, lcm.scheduler) == (4, 1.0, "lcm")


def test_prompt_embeds_are_projection_plus_scaled_delta(generator, delta):
    cond = conditions(2)
    expected = generator.projector.project(torch.from_numpy(cond)) + 0.7 * torch.from_numpy(delta)
    torch.testing.assert_close(generator.prompt_embeds(cond), expected, rtol=0, atol=1e-6)


def test_latents_come_from_each_images_own_seed():
    latents = initial_latents(image_generators([11, 22, 33]), 64, 64, 8)
    assert latents.shape == (3, 4, 8, 8)
    alone = initial_latents(image_generators([22]), 64, 64, 8)
    torch.testing.assert_close(latents[1], alone[0], rtol=0, atol=0)
    expected = torch.randn((4, 8, 8), generator=torch.Generator("cpu").manual_seed(33))
    torch.testing.assert_close(latents[2], expected, rtol=0, atol=0)


def diffusers_pipeline(m: dict) -> StableDiffusionPipeline:
    """An independent pipeline from the files, built with diffusers' own loaders."""
    return StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(m["vae"]),
        text_encoder=models.load_text_encoder(models.Path(m["arc2face_encoder"])),
        tokenizer=models.load_tokenizer(models.Path(m["tokenizer"])),
        unet=UNet2DConditionModel.from_pretrained(m["arc2face_unet"]),
        scheduler=DPMSolverMultistepScheduler.from_pretrained(m["scheduler"]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def test_generation_equals_diffusers_pipeline_called_directly(config, generator, delta):
    """Driven with diffusers' documented arguments only."""
    pipeline = diffusers_pipeline(config["models"])
    cond, seeds = conditions(2, seed=1), [5, 6]
    projector = Arc2FaceProjector(pipeline.text_encoder, pipeline.tokenizer)
    prompt_embeds = projector.project(torch.from_numpy(cond)) + 0.7 * torch.from_numpy(delta)
    # No negative_prompt_embeds: diffusers computes encoder("") itself, as Arc2Face relies on.
    # No latents: diffusers draws them itself, one image from each generator of the list.
    expected = pipeline(
        prompt_embeds=prompt_embeds,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        num_inference_steps=6,
        guidance_scale=3.0,
        height=64,
        width=64,
        output_type="np",
    ).images
    ours = generator.generate(cond, seeds)
    assert ours.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(ours, expected)


def test_an_image_does_not_depend_on_its_batch(generator):
    cond, seeds = conditions(4, seed=2), [101, 102, 103, 104]
    batched = generator.generate(cond, seeds)
    singles = np.concatenate(
        [generator.generate(cond[k : k + 1], seeds[k : k + 1]) for k in range(4)]
    )
    difference = np.abs(batched - singles).max()
    assert difference <= BATCH_TOLERANCE, difference
    # Same batch, same order, same inputs: bitwise.
    np.testing.assert_array_equal(generator.generate(cond, seeds), batched)


def test_different_seeds_or_conditions_give_different_images(generator):
    cond = conditions(1, seed=3)
    a = generator.generate(cond, [1])
    assert np.abs(a - generator.generate(cond, [2])).max() > 1e-3
    assert np.abs(a - generator.generate(conditions(1, seed=4), [1])).max() > 1e-4


def test_stop_request_interrupts_between_steps(generator):
    from digi2real.generation import Interrupted

    with pytest.raises(Interrupted):
        generator.generate(conditions(1), [1], should_stop=lambda: True)


# The exact speed-ups change only the order of float operations: images within this of the
# plain pipeline's (measured on the CPU: 2.4e-7 channels-last, 3.6e-7 compiled), far below one
# 8-bit level (1/255 = 3.9e-3).
OPTIMIZED_TOLERANCE = 1e-5


def optimized_generator(config, delta, **generation):
    from digi2real.config import resolve_config

    given = {**config, "generation": {**config["generation"], **generation}}
    settings = GenerationSettings.from_config(resolve_config(given))
    return Arc2FaceGenerator(pipeline_of(resolve_config(given), settings), settings, delta)


def test_speedups_are_off_on_the_cpu_unless_asked(generator):
    unet = generator.pipeline.unet
    assert not isinstance(unet, OptimizedModule)
    assert unet.conv_in.weight.is_contiguous()  # not channels-last


def test_channels_last_keeps_the_images(config, generator, delta):
    optimized = optimized_generator(config, delta, channels_last=True)
    conv = optimized.pipeline.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    cond, seeds = conditions(2, seed=5), [11, 12]
    difference = np.abs(optimized.generate(cond, seeds) - generator.generate(cond, seeds)).max()
    assert difference <= OPTIMIZED_TOLERANCE, difference


def test_compiled_pipeline_keeps_the_images(
    config, generator, delta, caplog, tmp_path, monkeypatch
):
    """torch.compile (inductor, C++ kernels on the CPU) with channels-last: about a minute of
    compiling on 2 cores, paid once per job on a cluster, and with generation.compile_cache
    once for all the jobs that share it."""
    kernels = tmp_path / "kernels"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # as it was, after the test
    compiled = {"channels_last": True, "compile": True, "compile_cache": str(kernels)}
    with caplog.at_level("INFO", logger="digi2real"):
        optimized = optimized_generator(config, delta, **compiled)
    assert f"torch.compile (mode default; kernel cache: {kernels})" in caplog.text
    assert isinstance(optimized.pipeline.unet, OptimizedModule)
    cond, seeds = conditions(2, seed=6), [21, 22]
    difference = np.abs(optimized.generate(cond, seeds) - generator.generate(cond, seeds)).max()
    assert difference <= OPTIMIZED_TOLERANCE, difference
    assert any(kernels.iterdir())
    # Compiling is paid once per job: the next batches (other identities, seeds, generators)
    # reuse the compiled graphs; a guard on anything that changes per batch would recompile.
    graphs = dict(counters["stats"])
    for seed in (7, 8):
        optimized.generate(conditions(2, seed=seed), [seed, seed + 100])
    assert dict(counters["stats"]) == graphs
    # A later job (here: this process with dynamo's memory cleared) finds the compiled graphs
    # in the cache folder instead of compiling them again.
    torch._dynamo.reset()
    misses = counters["inductor"]["fxgraph_cache_miss"]
    again = optimized_generator(config, delta, **compiled)
    np.testing.assert_array_equal(again.generate(cond, seeds), optimized.generate(cond, seeds))
    assert counters["inductor"]["fxgraph_cache_hit"] >= 2  # the UNet's graph and the VAE's
    assert counters["inductor"]["fxgraph_cache_miss"] == misses


def write_tiny_lcm_lora(unet_dir, folder):
    """A LoRA for the tiny UNet, saved the way diffusers saves LCM-LoRA for SD 1.5."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:  # zero at init: give the LoRA an effect to detect
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state)
    return folder / "pytorch_lora_weights.safetensors"


def test_lcm_lora_fast_mode_equals_diffusers_with_the_lora_fused(config, tmp_path):
    from diffusers import LCMScheduler

    pytest.importorskip("peft")
    lora = write_tiny_lcm_lora(config["models"]["arc2face_unet"], tmp_path)
    # The fast mode's steps, guidance and scheduler come from the config's resolution.
    fast = resolve_config(
        {
            "models": {**config["models"], "lcm_lora": str(lora)},
            "generation": {"height": 64, "width": 64, "device": "cpu"},
        }
    )
    settings = GenerationSettings.from_config(fast)
    ours = Arc2FaceGenerator(pipeline_of(fast, settings), settings, None)

    pipeline = diffusers_pipeline(config["models"])
    pipeline.load_lora_weights(str(tmp_path))
    pipeline.fuse_lora()
    pipeline.scheduler = LCMScheduler.from_config(pipeline.scheduler.config)
    cond, seeds = conditions(2, seed=7), [8, 9]
    expected = pipeline(
        prompt_embeds=ours.projector.project(torch.from_numpy(cond)),
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        num_inference_steps=4,
        guidance_scale=1.0,
        height=64,
        width=64,
        output_type="np",
    ).images
    images = ours.generate(cond, seeds)
    np.testing.assert_array_equal(images, expected)

    generation = {**fast["generation"], "steps": 4, "guidance": 1.0, "scheduler": "ddim"}
    plain = resolve_config({"models": config["models"], "generation": generation})
    plain_settings = GenerationSettings.from_config(plain)
    without = Arc2FaceGenerator(pipeline_of(plain, plain_settings), plain_settings, None)
    assert np.abs(without.generate(cond, seeds) - images).max() > 1e-3, "the LoRA had no effect"


def test_unreadable_lcm_lora_names_the_key(config, tmp_path):
    bad = tmp_path / "pytorch_lora_weights.safetensors"
    bad.write_bytes(b"not safetensors")
    models_with_lora = {**config["models"], "lcm_lora": str(bad)}
    fast = resolve_config({"models": models_with_lora, "generation": {"device": "cpu"}})
    with pytest.raises(models.ModelFileError, match="models.lcm_lora"):
        pipeline_of(fast, GenerationSettings.from_config(fast))
