"""Random Arc2Face/SD 1.5 parts written in the real Hugging Face on-disk layouts: the CLIP
tokenizer, the CLIP text encoder (as transformers 4.36 saved it), the UNet, the VAE and the
scheduler config. Tiny for the demo and the tests; at SD 1.5's own sizes (`size="sd15"`) for
the generation benchmark, which times the real architecture with random weights."""

from __future__ import annotations

import json
from pathlib import Path

TINY_HIDDEN_SIZE = 576
PROMPT = "photo of a id person"

# The published Stable Diffusion 1.5 configs (unet/config.json, vae/config.json), value for
# value where they differ from diffusers' defaults; Arc2Face's UNet has SD 1.5's architecture.
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
# CLIP ViT-L/14's text model, which Arc2Face's encoder is.
SD15_ENCODER = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
}


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte alphabet: printable bytes stand for themselves, the rest map above U+0100."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[byte] for byte in sorted(chars, key=lambda b: (b not in printable, b))]


def write_tokenizer(folder: Path) -> dict[str, int]:
    """A CLIP BPE tokenizer folder whose vocabulary holds PROMPT's words as whole tokens.

    Laid out like CLIP's own vocabulary: the byte alphabet, the same with `</w>`, merge results,
    then the two special tokens, so any text still tokenizes (letter by letter).
    """
    alphabet = _bytes_to_unicode()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[str] = []
    for word in dict.fromkeys(PROMPT.split()):
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            merge = f"{symbols[0]} {symbols[1]}"
            merged = symbols[0] + symbols[1]
            if merge not in merges:
                merges.append(merge)
                tokens.append(merged)
            symbols = [merged, *symbols[2:]]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8"
    )
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(
        folder / "tokenizer_config.json",
        {
            **special,
            "add_prefix_space": False,
            "do_lower_case": True,
            "errors": "replace",
            "model_max_length": 77,
            "tokenizer_class": "CLIPTokenizer",
        },
    )
    return vocab


def write_scheduler(folder: Path) -> None:
    # Stable Diffusion 1.5's scheduler/scheduler_config.json, value for value.
    _write_json(
        folder / "scheduler_config.json",
        {
            "_class_name": "PNDMScheduler",
            "_diffusers_version": "0.6.0",
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "clip_sample": False,
            "num_train_timesteps": 1000,
            "set_alpha_to_one": False,
            "skip_prk_steps": True,
            "steps_offset": 1,
            "trained_betas": None,
        },
    )


# The config keys transformers 4.36 wrote for a CLIPTextModel; newer versions add more.
_ENCODER_CONFIG_KEYS = (
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "hidden_act",
    "hidden_size",
    "initializer_factor",
    "initializer_range",
    "intermediate_size",
    "layer_norm_eps",
    "max_position_embeddings",
    "model_type",
    "num_attention_heads",
    "num_hidden_layers",
    "pad_token_id",
    "projection_dim",
    "vocab_size",
)


def _encoder_config(vocab: dict[str, int], size: str = "tiny"):
    from transformers import CLIPTextConfig

    sizes = {
        "vocab_size": len(vocab),
        "hidden_size": TINY_HIDDEN_SIZE,
        "intermediate_size": 2 * TINY_HIDDEN_SIZE,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    return CLIPTextConfig(
        **(SD15_ENCODER if size == "sd15" else sizes),
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        hidden_act="quick_gelu",
    )


def _build_encoder(vocab: dict[str, int], seed: int, size: str = "tiny"):
    import torch
    from transformers import CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 100 + 1)
        return CLIPTextModel(_encoder_config(vocab, size)).eval()


def write_encoder(folder: Path, vocab: dict[str, int], seed: int, size: str = "tiny") -> None:
    """Saved as transformers 4.36 saved Arc2Face's encoder: a pickle with `text_model.` keys."""
    import torch

    model = _build_encoder(vocab, seed, size)
    config = model.config
    # transformers 5 dropped the `text_model` wrapper module; 4.x checkpoints still carry it.
    state = {
        (key if key.startswith("text_model.") else f"text_model.{key}"): value.contiguous()
        for key, value in model.state_dict().items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "pytorch_model.bin")
    values = config.to_dict()
    saved = {key: values[key] for key in _ENCODER_CONFIG_KEYS if key in values}
    saved.update(
        architectures=["CLIPTextModel"],
        model_type="clip_text_model",
        torch_dtype="float32",
        transformers_version="4.36.2",
    )
    _write_json(folder / "config.json", saved)


def write_unet(folder: Path, seed: int, size: str = "tiny") -> None:
    import torch
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 100 + 2)
        if size == "sd15":
            UNet2DConditionModel(**SD15_UNET).save_pretrained(folder, safe_serialization=True)
            return
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TINY_HIDDEN_SIZE,
            attention_head_dim=8,
            norm_num_groups=8,
        )
    unet.save_pretrained(folder, safe_serialization=True)


def write_vae(folder: Path, seed: int, size: str = "tiny") -> None:
    import torch
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 100 + 3)
        if size == "sd15":
            AutoencoderKL(**SD15_VAE).save_pretrained(folder, safe_serialization=True)
            return
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            # Four blocks, three downsamplings: latents are 1/8 of the image, as in SD 1.5.
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
            scaling_factor=0.18215,
        )
        # Untrained, the decoder paints grey noise in which no detector finds a face, and the
        # demo's dataset would be empty. A faint skin-toned bias makes the tiny detector find
        # one at a score that varies with the latents (about 0.75-0.9), so the quality filter
        # has something to accept and something to reject.
        with torch.no_grad():
            vae.decoder.conv_out.weight.mul_(0.3)
            vae.decoder.conv_out.bias.copy_(torch.tensor([0.4, 0.2, 0.1]))
    vae.save_pretrained(folder, safe_serialization=True)
