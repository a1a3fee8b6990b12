"""Batch builders and checks the model tests share (the contract over every method is
``test_model_contract.py``; the per-method files keep what is specific to one method)."""

from __future__ import annotations

import numpy as np
import torch

#: every padded sequence key of ``models/base.py`` and the mask that says which of its positions are valid
SEQUENCES = {
    "audio_segments": "audio_segments_mask",
    "audio_frames": "audio_frames_mask",
    "audio_frames_block2": "audio_frames_mask",
    "audio_frames_block3": "audio_frames_mask",
    "audio_mel": "audio_mel_mask",
    "text_tokens": "text_tokens_mask",
    "text_tokens_layer2": "text_tokens_mask",
    "text_tokens_layer4": "text_tokens_mask",
    "text_segments": "text_segments_mask",
}


def padded(n: int, length: int, dim: int, g: torch.Generator, min_len: int = 1, short_first: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, length, dim) random values and a prefix mask of random lengths in [min_len, length]
    (``short_first``: row 0 has ``min_len``, so at least one row is clearly padded)."""
    x = torch.randn(n, length, dim, generator=g)
    lengths = torch.randint(min_len, length + 1, (n,), generator=g)
    if short_first:
        lengths[0] = min_len
    return x, torch.arange(length)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def with_pooled(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the frozen encoders' pooled vectors, as the cache gives them: max over valid frames (aisfx),
    mean over valid tokens (MiniLM)."""
    fm = batch.get("audio_frames_mask", torch.ones(batch["audio_frames"].shape[:2], dtype=torch.bool))
    tm = batch.get("text_tokens_mask", torch.ones(batch["text_tokens"].shape[:2], dtype=torch.bool))
    audio = batch["audio_frames"].masked_fill(~fm[..., None], float("-inf")).amax(1)
    return {**batch, "audio_embedding": audio, "text_embedding": masked_mean(batch["text_tokens"], tm)}


def full_batch(n: int = 8, seed: int = 0, signal: float = 0.0, n_mels: int = 32) -> dict[str, torch.Tensor]:
    """Every batch key of ``models/base.py`` (masks with padding), so any method finds what it reads.

    ``signal = 0``: independent noise. ``signal > 0``: a learnable paired set: each row has a latent, and
    every audio and text feature adds ``signal`` times a fixed random map of it (labels come from it too)."""
    g = torch.Generator().manual_seed(seed)
    b: dict[str, torch.Tensor] = {}
    b["audio_segments"], b["audio_segments_mask"] = padded(n, 5, 512, g, 1)
    b["audio_frames"], b["audio_frames_mask"] = padded(n, 10, 512, g, 2)
    b["audio_frames_block2"], b["audio_frames_block3"] = torch.randn(n, 10, 128, generator=g), torch.randn(n, 10, 256, generator=g)
    b["audio_mel"], b["audio_mel_mask"] = padded(n, 16, n_mels, g, 8)
    b["text_tokens"], b["text_tokens_mask"] = padded(n, 6, 384, g, 2)
    b["text_tokens_layer2"], b["text_tokens_layer4"] = torch.randn(n, 6, 384, generator=g), torch.randn(n, 6, 384, generator=g)
    b["text_segments"], b["text_segments_mask"] = padded(n, 3, 384, g, 1)
    b["labels"] = torch.arange(n) % 3
    if signal:
        h = torch.Generator().manual_seed(seed + 1000)
        latent = torch.randn(n, 8, generator=h)
        for key in SEQUENCES:
            dim = b[key].shape[-1]
            b[key] = b[key] + signal * (latent @ (torch.randn(8, dim, generator=h) / 8**0.5))[:, None, :]
        b["labels"] = latent[:, :3].argmax(-1)
    b = with_pooled(b)
    b["text_from_label"] = torch.zeros(n, dtype=torch.bool)
    return b


def segment_pairs(n: int, audio_len: int = 12, text_len: int = 5, seed: int = 0, noise: float = 0.5, text_key: str = "text_segments",
                  pooled: bool = False) -> dict[str, torch.Tensor]:
    """Paired documents / long clips: audio segments (chunks) share a per-item latent (plus per-segment
    noise); each text segment (token) = fixed random linear map of the item's mean audio segment + noise;
    random lengths (>= 1) with garbage in the padded positions. ``pooled``: with the frozen pooled
    vectors (mean over valid positions) too."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 1, 16, generator=g)
    audio = latent @ torch.randn(16, 512, generator=g) + noise * torch.randn(n, audio_len, 512, generator=g)
    a_len = torch.randint(1, audio_len + 1, (n, 1), generator=g)
    a_mask = torch.arange(audio_len)[None] < a_len
    mean_audio = (audio * a_mask[..., None]).sum(1, keepdim=True) / a_len[..., None]
    text = mean_audio @ (torch.randn(512, 384, generator=g) / 512**0.5) + noise * torch.randn(n, text_len, 384, generator=g)
    t_mask = torch.arange(text_len)[None] < torch.randint(1, text_len + 1, (n, 1), generator=g)
    garbage = lambda x, m: torch.where(m[..., None], x, 30 * torch.randn(x.shape, generator=g))  # noqa: E731
    batch = {"audio_segments": garbage(audio, a_mask), "audio_segments_mask": a_mask, text_key: garbage(text, t_mask), f"{text_key}_mask": t_mask}
    if pooled:
        batch.update(audio_embedding=masked_mean(audio, a_mask), text_embedding=masked_mean(text, t_mask))
    return batch


def frames_and_tokens(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random audio frames (14, at least 4 valid) and text tokens (7, at least 2 valid), row 0 the
    shortest of each, with the frozen pooled vectors."""
    g = torch.Generator().manual_seed(seed)
    frames, frames_mask = padded(n, 14, 512, g, 4, short_first=True)
    tokens, tokens_mask = padded(n, 7, 384, g, 2, short_first=True)
    return with_pooled({"audio_frames": frames, "audio_frames_mask": frames_mask, "text_tokens": tokens, "text_tokens_mask": tokens_mask})


def rows(batch: dict[str, torch.Tensor], idx) -> dict[str, torch.Tensor]:
    """The rows ``idx`` (an index tensor, list or slice) of every tensor in a batch or encode output."""
    return {k: v[idx] for k, v in batch.items()}


def scramble_pads(batch: dict[str, torch.Tensor], seed: int = 7, scale: float = 100.0) -> dict[str, torch.Tensor]:
    """Large random values in every padded position of every sequence the batch holds."""
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    for key, mask_key in SEQUENCES.items():
        if key in batch and mask_key in batch:
            out[key] = torch.where(batch[mask_key][..., None], batch[key], scale * torch.randn(batch[key].shape, generator=g))
    return out


def pad_more(batch: dict[str, torch.Tensor], extra: int = 9, seed: int = 8) -> dict[str, torch.Tensor]:
    """Every masked sequence ``extra`` positions longer, all padding (random values)."""
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    for key, mask_key in SEQUENCES.items():
        if key in batch and mask_key in batch:
            x = batch[key]
            out[key] = torch.cat([x, torch.randn(x.shape[0], extra, x.shape[2], generator=g)], dim=1)
    for mask_key in set(SEQUENCES.values()) & set(batch):
        m = batch[mask_key]
        out[mask_key] = torch.cat([m, torch.zeros(m.shape[0], extra, dtype=torch.bool)], dim=1)
    return out


def alone(batch: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Row ``i`` as a batch of its own: every sequence cut to its valid positions, and no masks."""
    out = {}
    for key, value in batch.items():
        if key in SEQUENCES.values():
            continue
        mask_key = SEQUENCES.get(key)
        n = int(batch[mask_key][i].sum()) if mask_key in batch else None
        out[key] = value[i : i + 1, :n] if mask_key else value[i : i + 1]
    return out


def opened(model):
    """Open the pooled-residual gates (0 at initialisation, i.e. the learned branch switched off), as
    training does, so a test exercises the method's own pooling inside the global embedding."""
    for gate in (getattr(model, "residual", None) or {}).values():
        gate.alpha.data.fill_(1.0)
    return model


def cache_items(counts, seed: int = 0, frames_per_segment: int = 3, n_mels: int = 32) -> list[dict[str, np.ndarray]]:
    """Audio items in the feature cache's per-recording layout, with ``counts`` segments each."""
    g = np.random.default_rng(seed)
    rnd = lambda *shape: g.standard_normal(shape).astype(np.float32)  # noqa: E731
    items = []
    for n in counts:
        t = n * frames_per_segment
        frames = {"frames": rnd(t, 512), "frames_block2": rnd(t, 128), "frames_block3": rnd(t, 256)}
        items.append({"embedding": rnd(n, 512), **frames, "mel": rnd(4 * t, n_mels)})
    return items


def params_without_finite_grad(model: torch.nn.Module, batch: dict | None = None, skip: tuple[str, ...] = ()) -> list[str]:
    """Names of trainable parameters (not starting with ``skip``) left without a finite gradient; with
    ``batch``, after one backward pass of its loss in train mode (else: the gradients already there)."""
    if batch is not None:
        model.train()
        model(batch)["loss"].backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad and not n.startswith(skip)]
    return [n for n, p in trained if p.grad is None or not torch.isfinite(p.grad).all()]


def recall_at_1(sim: torch.Tensor) -> float:
    """Share of rows whose best-scoring column is their own (the diagonal)."""
    return (sim.argmax(dim=1) == torch.arange(sim.shape[0])).float().mean().item()


def eval_losses(model: torch.nn.Module, data: dict, batches: list | None = None) -> dict[str, float]:
    """Eval-mode ``loss`` and loss terms on ``data`` (averaged over the row ``batches`` if given)."""
    model.eval()
    parts = [data] if batches is None else [rows(data, b) for b in batches]
    with torch.no_grad():
        outs = [model(p) for p in parts]
    value = lambda o, k: (o["loss"] if k == "loss" else o["losses"][k]).item()  # noqa: E731
    return {k: sum(value(o, k) for o in outs) / len(outs) for k in ["loss", *outs[0]["losses"]]}


def train_briefly(model: torch.nn.Module, data: dict, steps: int, lr: float = 1e-3, batch_size: int | None = None,
                  batches: list | None = None) -> tuple[dict, dict]:
    """AdamW for ``steps`` steps on ``data`` (full batch, or random ``batch_size`` rows a step);
    returns the eval-mode losses (see :func:`eval_losses`) before and after. Every step's loss must be finite."""
    initial = eval_losses(model, data, batches)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    n = next(iter(data.values())).shape[0]
    model.train()
    for _ in range(steps):
        loss = model(data if batch_size is None else rows(data, torch.randperm(n, generator=g)[:batch_size]))["loss"]
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return initial, eval_losses(model, data, batches)
