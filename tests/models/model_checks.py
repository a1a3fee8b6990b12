"""Checks every method's tests share: gradient coverage and a short synthetic training run."""

from __future__ import annotations

import torch


def params_without_finite_grad(model: torch.nn.Module, batch: dict) -> list[str]:
    """Names of trainable parameters left without a finite gradient by one backward pass."""
    model.train()
    model(batch)["loss"].backward()
    return [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]


def train_briefly(model: torch.nn.Module, data: dict, steps: int, lr: float = 1e-3) -> tuple[float, float]:
    """AdamW for ``steps`` full-batch steps on ``data``; returns the eval-mode loss before and after."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.eval()
    with torch.no_grad():
        initial = model(data)["loss"].item()
    model.train()
    for _ in range(steps):
        loss = model(data)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = model(data)["loss"].item()
    return initial, final
