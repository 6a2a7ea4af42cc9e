"""The input block of sequence models: a token's word, shape and characters, embedded.

``[B, T, 2 + max_chars]`` long (`polytask.data.tokens`: word index, shape index, character
indices; 0 is padding) -> ``[B, T, out_dim]``: the word embedding, the shape embedding and,
with ``char_filters`` > 0, a character CNN (Ma & Hovy 2016, Chiu & Nichols 2016: character
embeddings, one convolution of width ``char_width``, max-pooled over the characters),
concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

WORD, SHAPE, CHARS = 0, 1, 2


class TokenInput(nn.Module):
    def __init__(
        self,
        *,
        cardinalities: Sequence[int],
        embedding_dim: int,
        shape_dim: int = 0,
        char_filters: int = 0,
        char_dim: int = 16,
        char_width: int = 3,
    ) -> None:
        super().__init__()
        sizes = [*cardinalities, 2, 2, 2][:3]  # before data: the smallest tables
        self.words = nn.Embedding(sizes[WORD], embedding_dim, padding_idx=0)
        nn.init.normal_(self.words.weight[1:], std=0.1)
        self.shapes = nn.Embedding(sizes[SHAPE], shape_dim, padding_idx=0) if shape_dim else None
        self.chars: nn.Embedding | None = None
        self.conv: nn.Conv1d | None = None
        if char_filters > 0:
            self.chars = nn.Embedding(sizes[CHARS], char_dim, padding_idx=0)
            self.conv = nn.Conv1d(char_dim, char_filters, char_width, padding=char_width // 2)
        self.out_dim = embedding_dim + shape_dim + char_filters

    def forward(self, tokens: Tensor, numeric: Tensor | None = None) -> Tensor:
        """``tokens [B, T, 2 + L]`` -> ``[B, T, out_dim]`` (``numeric`` is not used)."""
        parts = [self.words(tokens[..., WORD])]
        if self.shapes is not None:
            parts.append(self.shapes(tokens[..., SHAPE]))
        if self.chars is not None and self.conv is not None:
            b, t, _ = tokens.shape
            chars = tokens[..., CHARS:].reshape(b * t, -1)
            e = self.chars(chars).transpose(1, 2)  # [B*T, char_dim, L]
            h = self.conv(e)
            pad = (chars == 0).unsqueeze(1)[..., : h.shape[-1]]
            h = h.masked_fill(pad, float("-inf")).amax(dim=2)
            h = torch.where(torch.isfinite(h), h, 0.0)  # a padding token has no character
            parts.append(h.reshape(b, t, -1))
        return torch.cat(parts, dim=-1)
