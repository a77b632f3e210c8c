"""Arc2Face projection against an independent reference written here from the algorithm."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline

from digi2real import models
from digi2real.projection import PROMPT, Arc2FaceProjector

pytestmark = pytest.mark.unit

TOLERANCE = 1e-5  # fp32, the bound; observed differences are ~1e-6


@pytest.fixture(scope="module")
def encoder_and_tokenizer(demo_root):
    folder = demo_root / "models"
    encoder = models.load_text_encoder(folder / "arc2face/encoder")
    tokenizer = models.load_tokenizer(folder / "sd15/tokenizer")
    return encoder, tokenizer


def weights_by_name(encoder) -> dict[str, torch.Tensor]:
    return {k.removeprefix("text_model."): v.double() for k, v in encoder.state_dict().items()}


def reference_projection(encoder, tokenizer, arcface: torch.Tensor) -> torch.Tensor:
    """Token replacement, position embeddings, causal pre-LN transformer, final layer norm:
    written out from the weights, one face at a time, in float64."""
    w = weights_by_name(encoder)
    config = encoder.config
    ids = tokenizer(PROMPT, padding="max_length", max_length=77).input_ids
    id_token = tokenizer.encode("id", add_special_tokens=False)[0]
    heads, hidden = config.num_attention_heads, config.hidden_size
    head_dim = hidden // heads
    causal = torch.full((77, 77), -math.inf, dtype=torch.float64).triu(1)

    def layer_norm(x, name):
        return F.layer_norm(
            x, (hidden,), w[f"{name}.weight"], w[f"{name}.bias"], config.layer_norm_eps
        )

    def linear(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    outputs = []
    for face in arcface.double():
        x = w["embeddings.token_embedding.weight"][ids].clone()
        x[ids.index(id_token)] = F.pad(face / face.norm(), (0, hidden - 512))
        x = x + w["embeddings.position_embedding.weight"][:77]
        for layer in range(config.num_hidden_layers):
            p = f"encoder.layers.{layer}"
            h = layer_norm(x, f"{p}.layer_norm1")
            q, k, v = (
                linear(h, f"{p}.self_attn.{n}_proj").reshape(77, heads, head_dim).transpose(0, 1)
                for n in "qkv"
            )
            attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(head_dim) + causal, dim=-1)
            x = x + linear(
                (attention @ v).transpose(0, 1).reshape(77, hidden), f"{p}.self_attn.out_proj"
            )
            h = linear(layer_norm(x, f"{p}.layer_norm2"), f"{p}.mlp.fc1")
            h = h * torch.sigmoid(1.702 * h)  # quick_gelu, CLIP's activation
            x = x + linear(h, f"{p}.mlp.fc2")
        outputs.append(layer_norm(x, "final_layer_norm"))
    return torch.stack(outputs)


def faces(n, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 512))).float()


def test_projection_equals_the_reference(encoder_and_tokenizer):
    encoder, tokenizer = encoder_and_tokenizer
    assert encoder.config.hidden_act == "quick_gelu"
    arcface = faces(3)
    projected = Arc2FaceProjector(encoder, tokenizer).project(arcface)
    assert projected.shape == (3, 77, encoder.config.hidden_size)
    expected = reference_projection(encoder, tokenizer, arcface)
    assert (projected.double() - expected).abs().max().item() <= TOLERANCE


def test_identity_changes_only_tokens_at_and_after_the_id_position(encoder_and_tokenizer):
    encoder, tokenizer = encoder_and_tokenizer
    projector = Arc2FaceProjector(encoder, tokenizer)
    a, b = projector.project(faces(2, seed=3)).unbind(0)
    position = projector.id_position
    assert position == 4  # <bos> photo of a id
    torch.testing.assert_close(a[:position], b[:position], rtol=0, atol=0)  # causal mask
    assert (a[position] - b[position]).abs().max() > 1e-3


def test_batched_projection_equals_single_calls(encoder_and_tokenizer):
    projector = Arc2FaceProjector(*encoder_and_tokenizer)
    arcface = faces(5, seed=1)
    batched = projector.project(arcface)
    singles = torch.cat([projector.project(arcface[k : k + 1]) for k in range(5)])
    assert (batched - singles).abs().max().item() <= TOLERANCE


def test_projection_normalises_its_input(encoder_and_tokenizer):
    projector = Arc2FaceProjector(*encoder_and_tokenizer)
    arcface = faces(2, seed=2)
    torch.testing.assert_close(projector.project(arcface), projector.project(7.5 * arcface))


def test_bad_shape_is_a_clear_error(encoder_and_tokenizer):
    with pytest.raises(ValueError, match=r"shape \(N, 512\)"):
        Arc2FaceProjector(*encoder_and_tokenizer).project(torch.zeros(2, 128))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_unconditional_is_what_diffusers_computes_for_no_negative_prompt(demo_root, batch_size):
    folder = demo_root / "models"
    encoder = models.load_text_encoder(folder / "arc2face/encoder")
    tokenizer = models.load_tokenizer(folder / "sd15/tokenizer")
    pipeline = StableDiffusionPipeline(
        vae=models.load_vae(folder / "sd15/vae", torch.float32),
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=models.load_unet(folder / "arc2face/arc2face", torch.float32),
        scheduler=models.load_scheduler(folder / "sd15/scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    projector = Arc2FaceProjector(encoder, tokenizer)
    prompt_embeds = projector.project(faces(batch_size))
    _, negative = pipeline.encode_prompt(
        prompt=None,
        device=torch.device("cpu"),
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        prompt_embeds=prompt_embeds,
    )
    torch.testing.assert_close(projector.unconditional(batch_size), negative, rtol=0, atol=0)


def test_loader_reads_the_4_36_checkpoint_as_the_model_it_was_saved_from(tmp_path, demo_root):
    """Save a freshly built encoder the way transformers 4.36 did, load it back, compare."""
    from transformers import CLIPTextConfig, CLIPTextModel

    source = demo_root / "models/arc2face/encoder"
    config = CLIPTextConfig.from_json_file(str(source / "config.json"))
    torch.manual_seed(123)
    fresh = CLIPTextModel(config).eval()
    state = {
        f"text_model.{k.removeprefix('text_model.')}": v for k, v in fresh.state_dict().items()
    }
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]  # older releases kept it
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    torch.save(state, folder / "pytorch_model.bin")
    loaded = models.load_text_encoder(folder)
    tokenizer = models.load_tokenizer(demo_root / "models/sd15/tokenizer")
    arcface = faces(3, seed=4)
    torch.testing.assert_close(
        Arc2FaceProjector(loaded, tokenizer).project(arcface),
        Arc2FaceProjector(fresh, tokenizer).project(arcface),
        rtol=0,
        atol=0,
    )


def test_loader_rejects_a_checkpoint_of_another_shape(tmp_path, demo_root):
    source = demo_root / "models/arc2face/encoder"
    state = torch.load(source / "pytorch_model.bin", weights_only=True)
    del state["text_model.final_layer_norm.weight"]
    state["text_model.extra.weight"] = torch.zeros(1)
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(models.ModelFileError, match="final_layer_norm.weight.*extra.weight"):
        models.load_text_encoder(folder)
