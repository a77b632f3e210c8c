"""ArcFace (N, 512) -> Arc2Face's CLIP space (N, 77, hidden), exactly as Arc2Face does it.

The prompt `photo of a id person` is tokenised and padded to 77 tokens; the token embedding at
the position of `id` is replaced by the L2-normalised ArcFace vector zero-padded to the hidden
size; position embeddings and the causal encoder then run as usual, and the last hidden state
(after the final layer norm) is the diffusion model's `prompt_embeds`.

Arc2Face's reference code patches CLIPTextModel.forward and only works for one face at a time.
Here the replacement is a forward hook on the token-embedding layer, so the installed
transformers' own forward does the rest for any batch size, whatever its signature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PROMPT = "photo of a id person"
ID_TOKEN = "id"
ARCFACE_DIM = 512


class Arc2FaceProjector:
    def __init__(self, text_encoder, tokenizer) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.hidden_size = int(text_encoder.config.hidden_size)
        if self.hidden_size < ARCFACE_DIM:
            raise ValueError(f"encoder hidden size {self.hidden_size} < ArcFace's {ARCFACE_DIM}")
        self.prompt_ids = self._tokenize(PROMPT)
        id_tokens = tokenizer.encode(ID_TOKEN, add_special_tokens=False)
        if len(id_tokens) != 1 or int((self.prompt_ids == id_tokens[0]).sum()) != 1:
            raise ValueError(
                f"the tokenizer does not encode {ID_TOKEN!r} as one token of the prompt"
            )
        self.id_position = int((self.prompt_ids[0] == id_tokens[0]).nonzero()[0, 0])
        self._unconditional: dict[int, torch.Tensor] = {}

    def _tokenize(self, text: str) -> torch.Tensor:
        return self.tokenizer(
            text,
            truncation=True,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.text_encoder.parameters()).dtype

    @torch.no_grad()
    def project(self, arcface: torch.Tensor) -> torch.Tensor:
        """(N, 512) ArcFace embeddings -> (N, 77, hidden) prompt embeddings."""
        if arcface.ndim != 2 or arcface.shape[1] != ARCFACE_DIM:
            raise ValueError(
                f"expected ArcFace embeddings of shape (N, 512), got {tuple(arcface.shape)}"
            )
        identity = F.normalize(arcface.to(self.device, torch.float32), dim=1)
        identity = F.pad(identity, (0, self.hidden_size - ARCFACE_DIM)).to(self.dtype)
        input_ids = self.prompt_ids.to(self.device).repeat(len(identity), 1)

        def replace_id_token(_module, _inputs, token_embeddings: torch.Tensor) -> torch.Tensor:
            token_embeddings = token_embeddings.clone()
            token_embeddings[:, self.id_position] = identity
            return token_embeddings

        token_embedding = self.text_encoder.get_input_embeddings()
        handle = token_embedding.register_forward_hook(replace_id_token)
        try:
            return self.text_encoder(input_ids=input_ids)[0]
        finally:
            handle.remove()

    @torch.no_grad()
    def unconditional(self, batch_size: int = 1) -> torch.Tensor:
        """(batch_size, 77, hidden): the encoder's output for the empty prompt, encoded as
        diffusers encodes it, `[""] * batch_size` in one call (computed once per batch size).
        Not one row expanded: CPU kernels round a batch of one and a batch of N differently
        in the last bits, and the pixels would then differ from diffusers' own."""
        if batch_size not in self._unconditional:
            ids = self._tokenize("").to(self.device).repeat(batch_size, 1)
            self._unconditional[batch_size] = self.text_encoder(input_ids=ids)[0]
        return self._unconditional[batch_size]
