"""SpecTran: CALM's spectral (patch) transformer, trained from scratch on log-mel frames.

Sachidananda, Tseng, Marchi, Kajarekar, Georgiou, "CALM: Contrastive Aligned Audio-Language
Multirate and Multimodal Representations", arXiv:2202.03587, 2022 (SpecTran); patch tokenisation as
in ViT (Dosovitskiy et al., ICLR 2021) and AST (Gong et al., Interspeech 2021).

How this maps to the paper: the spectrogram (time x mel) is cut into non-overlapping
``patch_time x patch_mel`` patches, each patch is flattened and linearly projected ("linearised
patches"), a position embedding and a learnable CLS token are added, and a transformer encoder runs
over the sequence. The CLS output is the utterance-level audio embedding used by CALP; the patch
outputs are the audio tokens fed to CALM's multimodal transformer.

Positions: a fixed sinusoidal table over the time-patch index (any clip length works) plus a learned
embedding per mel-patch row. Padding: frames with mask False are zeroed before patchifying; a patch
is valid if any of its frames is valid (so a clip's last, partially padded patch is kept but sees only
zeros where the padding was); invalid patches are excluded as attention keys and zeroed on output.
Hence no output depends on the values at padded frames.
"""

from __future__ import annotations

import torch
from torch import nn

from sonalign.models.components.transformer_blocks import (
    TransformerStack,
    sinusoidal_positions,
    zero_padded,
)


class SpecTran(nn.Module):
    """``forward(mel (B, T, M), mask (B, T)) -> {"cls": (B, d), "tokens"/"patches": (B, N, .), "tokens_mask": (B, N)}``; tokens are time-major (Tp x Fp)."""

    def __init__(
        self,
        n_mels: int = 64,
        patch_time: int = 8,
        patch_mel: int = 16,
        dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        if n_mels % patch_mel:
            raise ValueError(f"n_mels {n_mels} must be a multiple of patch_mel {patch_mel}")
        self.n_mels, self.patch_time, self.patch_mel, self.dim = n_mels, patch_time, patch_mel, dim
        self.freq_patches = n_mels // patch_mel
        self.patch_embed = nn.Linear(patch_time * patch_mel, dim)
        self.freq_pos = nn.Parameter(torch.randn(self.freq_patches, dim) * 0.02)
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.encoder = TransformerStack(dim, depth, num_heads, ff_mult, dropout)
        self.norm = nn.LayerNorm(dim)

    def patchify(self, mel: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, M) -> patches (B, Tp, Fp, pt*pm) and time-patch validity (B, Tp)."""
        b, t, m = mel.shape
        if m != self.n_mels:
            raise ValueError(f"audio_mel has {m} mel bins, SpecTran expects {self.n_mels}")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=mel.device)
        mel = zero_padded(mel, mask)
        pad = (-t) % self.patch_time
        if pad:
            mel = torch.cat([mel, mel.new_zeros(b, pad, m)], dim=1)
            mask = torch.cat([mask, mask.new_zeros(b, pad)], dim=1)
        tp = mel.shape[1] // self.patch_time
        patches = mel.view(b, tp, self.patch_time, self.freq_patches, self.patch_mel).permute(0, 1, 3, 2, 4)
        patches = patches.reshape(b, tp, self.freq_patches, self.patch_time * self.patch_mel)
        valid = mask.view(b, tp, self.patch_time).any(-1)
        return patches, valid

    def forward(
        self, mel: torch.Tensor, mask: torch.Tensor | None = None, replace: torch.Tensor | None = None, replacement: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode; ``replace`` (B, N) marks patch tokens whose embedding is swapped for ``replacement`` (d,)
        before the encoder (masked-patch modelling). Also returns the raw flattened ``patches`` (B, N, pt*pm)."""
        patches, valid = self.patchify(mel, mask)
        b, tp, fp, size = patches.shape
        x = self.patch_embed(patches).reshape(b, tp * fp, self.dim)
        if replace is not None:
            x = torch.where(replace.unsqueeze(-1), replacement.to(x.dtype), x)
        pos = sinusoidal_positions(tp, self.dim, x.device, x.dtype)[:, None, :] + self.freq_pos[None, :, :]
        x = x + pos.reshape(1, tp * fp, self.dim)
        tokens_mask = valid.unsqueeze(-1).expand(b, tp, fp).reshape(b, tp * fp)
        x = torch.cat([self.cls.expand(b, 1, self.dim), x], dim=1)
        full_mask = torch.cat([tokens_mask.new_ones(b, 1), tokens_mask], dim=1)
        h = self.norm(self.encoder(x, full_mask)[-1])
        h = zero_padded(h, full_mask)
        return {"cls": h[:, 0], "tokens": h[:, 1:], "tokens_mask": tokens_mask, "patches": patches.reshape(b, tp * fp, size)}
