"""The trainer: AdamW, warmup then cosine, gradient clipping, seeds, a checkpoint per epoch, resume,
early stopping on the validation split's primary metric, a metrics log and a plot of the curves.

Run folder::

    config.json            resolved config: model, training, data, features (create_model(RUN) reads it)
    model.safetensors      best weights so far (by the validation primary metric)
    checkpoints/epoch-NNN.safetensors
    state.pt               optimizer, scheduler, RNG states, epoch, best metric (for --resume)
    metrics.jsonl          one row per epoch
    curves.png

Data parallel (``torchrun --nproc-per-node N -m sonalign train ...``; see ``docs/distributed.md``):
the model is wrapped in DistributedDataParallel (gloo on CPU, NCCL on ``cuda:LOCAL_RANK``); every
rank computes the same list of global batches from the seed and takes its contiguous shard of
each; contrastive losses gather the other ranks' embeddings with gradients (``infonce.py``), and
each rank's loss is weighted by its share of the global batch, so a step equals a one-process step
on the same global batch. Rank 0 validates, writes the run folder and broadcasts the validation
numbers, so every rank takes the same best-epoch and early-stopping decisions.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sonalign.cache.features import FeatureCache, FeatureSettings
from sonalign.data.readers import load_clips, problem_report
from sonalign.errors import ConfigError
from sonalign.evaluation.retrieval import evaluate_retrieval
from sonalign.models.factory import create_model, get_model_config
from sonalign import distributed
from sonalign.batches import PairedFeatures, build_paired, make_batch, model_keys, split_scores
from sonalign.data.prompts import guess_template
from sonalign.utils.atomic import atomic_path, atomic_write_text
from sonalign.utils.device import resolve_device, to_device
from sonalign.utils.progress import progress


@dataclass
class TrainSettings:
    config: str
    data: str
    out: str
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    warmup_min_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    patience: int = 5
    template: str | None = None
    cache: str | None = None
    val_fraction: float = 0.1
    features: dict[str, Any] = field(default_factory=dict)
    model_overrides: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def shuffled_batches(rows: list[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``rows`` shuffled into batches of ``batch_size`` (a last batch of one row is dropped: it has
    no negative). Clips of one class or caption may share a batch: the batch's ``groups`` make them
    positives of each other (multi-positive InfoNCE), so no batch is capped at the number of classes."""
    order = np.asarray(rows)[rng.permutation(len(rows))]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [b for b in batches if len(b) >= 2]


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices only, never on norms, biases, temperatures
    (logit scales) or codebooks, whose values decay would pull towards zero for no reason."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or any(word in name for word in ("logit_scale", "temperature", "codebook", "norm"))
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_steps(total: int, ratio: float, minimum: int) -> int:
    """``max(ratio * total, minimum)`` steps of linear warmup, never more than the whole run."""
    return min(total, max(int(math.ceil(ratio * total)), minimum))


def _one_text_per_clip(data: PairedFeatures, rng: np.random.Generator) -> list[int]:
    """One random caption per clip for this epoch (several captions of a clip in a batch would be false negatives)."""
    rows: dict[int, list[int]] = {}
    for i, c in enumerate(data.text_to_clip):
        rows.setdefault(int(c), []).append(i)
    return [int(rng.choice(v)) for _, v in sorted(rows.items())]


def _lr_lambda(total: int, warmup: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress_ = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))

    return fn


def model_inputs(model_config: dict[str, Any]) -> tuple[str, ...]:
    """The batch keys a config's model class reads, without building the model."""
    from importlib import import_module

    from sonalign.models.factory import METHODS

    module_name, class_name = METHODS[model_config["method"]].split(":")
    return tuple(getattr(getattr(import_module(module_name), class_name), "required_inputs", ()))


def prepare_data(settings: TrainSettings, model_config: dict[str, Any], *, show_progress: bool = True) -> tuple[FeatureCache, dict[str, PairedFeatures], dict[str, Any]]:
    """Extract features if missing and build the train/val splits (val carved from train if absent)."""
    clips = load_clips(settings.data)
    if not clips:
        raise ConfigError(f"{settings.data}: no clips found")
    skipped = problem_report(clips)
    feature_settings = FeatureSettings(**{**model_config.get("features", {}), **settings.features})
    if "audio_mel" in model_inputs(model_config):
        feature_settings.with_mel = True
    cache_dir = settings.cache or str(Path(settings.out) / "features")
    cache = FeatureCache(cache_dir, feature_settings)
    labels = sorted({c.label for c in clips if c.label is not None})
    template = settings.template or (guess_template(labels) if labels and not any(c.texts for c in clips) else None)
    train = [c for c in clips if c.split in (None, "train")]
    val = [c for c in clips if c.split == "val"]
    if not val:
        rng = np.random.default_rng(settings.seed)
        order = rng.permutation(len(train))
        n_val = max(1, int(len(train) * settings.val_fraction))
        val = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]
    cache.extract(train + val, show_progress=show_progress)
    label_names = sorted(set(labels)) if labels else None
    if label_names:
        from sonalign.batches import _label_key

        label_names = sorted(label_names, key=_label_key)
    if distributed.is_dist() and not distributed.is_main():
        distributed.barrier()  # rank 0 encodes any missing text first; then read its shards
        cache.reload_text_store()
    splits = {"train": build_paired(cache, train, template, label_names), "val": build_paired(cache, val, template, label_names)}
    if distributed.is_dist() and distributed.is_main():
        distributed.barrier()
    data_info = {"source": str(settings.data), "template": template, "labels": label_names, "n_train_clips": len(splits["train"].clips), "n_val_clips": len(splits["val"].clips), "features": asdict(feature_settings), "cache": cache_dir, "skipped_rows": skipped}
    return cache, splits, data_info


def local_rows(indices: np.ndarray) -> np.ndarray:
    """This rank's contiguous shard of a global batch (the whole batch in a single process)."""
    return distributed.shard(indices)


def wrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when a process group of several ranks is up.

    ``find_unused_parameters``: some methods skip terms on some batches (e.g. CALM without labels).
    """
    if not distributed.is_dist():
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = distributed.device()
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True)


def training_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], n_local: int, n_global: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward and backward of this rank's ``n_local`` rows of an ``n_global``-row global batch.

    The backward loss is weighted by ``n_local * world / n_global`` (1 for equal shards) so that,
    after DDP's gradient averaging, every per-row mean term has the gradient of its mean over the
    global batch. Returns the global batch's loss and terms (detached; the same on every rank).
    """
    result = model(batch)
    world = distributed.world_size() if distributed.is_dist() else 1
    if world == 1:
        result["loss"].backward()
        return result["loss"].detach(), {k: v.detach() for k, v in result["losses"].items()}
    (result["loss"] * (n_local * world / n_global)).backward()
    names = list(result["losses"])
    values = torch.stack([result["loss"].detach(), *(result["losses"][k].detach().reshape(()) for k in names)]).double()
    values = distributed.all_reduce_sum(values * (n_local / n_global)).float()
    return values[0], dict(zip(names, values[1:]))


def _rank_rng_state(device: torch.device) -> dict[str, Any]:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def train(settings: TrainSettings, *, resume: bool = False, show_progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``settings.config`` on ``settings.data``; returns the summary (best epoch and metric).

    ``stop_after`` ends the process after that many epochs of this call, exactly as a kill between
    two epochs would (used to test ``resume``). Under torchrun (``WORLD_SIZE > 1``) the process
    group is started here (unless already up) and every rank must call ``train``; all return the
    same summary.
    """
    started_group = distributed.init()
    try:
        return _train(settings, resume=resume, show_progress=show_progress, stop_after=stop_after)
    finally:
        if started_group:
            distributed.cleanup()


def _train(settings: TrainSettings, *, resume: bool, show_progress: bool, stop_after: int | None) -> dict[str, Any]:
    out = Path(settings.out)
    config_path = out / "config.json"
    if resume:
        if not config_path.exists():
            raise ConfigError(f"{out}: nothing to resume (no config.json)")
        saved = json.loads(config_path.read_text())
        epochs = settings.epochs  # the only setting a resume may change: train further
        settings = TrainSettings(**saved["training"])
        settings.epochs = epochs
    rank, world = (distributed.rank(), distributed.world_size()) if distributed.is_dist() else (0, 1)
    main = rank == 0
    # one process: --device / $SONALIGN_DEVICE / auto; under torchrun the backend decides (NCCL: cuda:LOCAL_RANK)
    device = distributed.device() if world > 1 else resolve_device()
    show_progress = show_progress and main
    model_config = get_model_config(settings.config)
    for key, value in settings.model_overrides.items():
        model_config[key] = value
    seed_everything(settings.seed)
    cache, splits, data_info = prepare_data(settings, model_config, show_progress=show_progress)
    if "num_classes" in model_config and data_info["labels"]:
        model_config["num_classes"] = len(data_info["labels"])
    # Input widths follow the frozen encoders actually used, whatever the registered config says.
    if "audio_dim" in model_config:
        model_config["audio_dim"] = cache.audio_encoder.dim
    if "text_dim" in model_config:
        model_config["text_dim"] = cache.text_encoder.dim
    model = create_model(settings.config, **{k: v for k, v in model_config.items() if k != "method"})
    if rank > 0:  # own dropout/masking draws per rank; rank 0 keeps the single-process stream
        torch.manual_seed(settings.seed + 1_000_003 * rank)
    model.to(device)
    model.train()
    keys = model_keys(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(model, settings.weight_decay), lr=settings.lr)
    train_data = splits["train"]
    batches_per_epoch = max(1, len(shuffled_batches(list(range(len(train_data.clips))), settings.batch_size, np.random.default_rng(0))))
    total = batches_per_epoch * settings.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total, warmup_steps(total, settings.warmup_ratio, settings.warmup_min_steps)))
    start_epoch, best, best_epoch, history = 0, -1.0, -1, []
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(exist_ok=True)
    resolved = {"model": model_config, "training": asdict(settings), "data": data_info}
    if resume and (out / "state.pt").exists():
        state = torch.load(out / "state.pt", weights_only=False, map_location="cpu")
        model.load_state_dict(load_file(str(out / "checkpoints" / f"epoch-{state['epoch']:03d}.safetensors")))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, best_epoch, history = state["epoch"] + 1, state["best"], state["best_epoch"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        per_rank = state.get("rank_rng") or []
        if rank < len(per_rank):
            torch.set_rng_state(per_rank[rank]["cpu"])
            if device.type == "cuda" and per_rank[rank].get("cuda") is not None:
                torch.cuda.set_rng_state(per_rank[rank]["cuda"], device)
        elif rank > 0:  # more ranks than the run that wrote the state: a fresh stream
            torch.manual_seed(settings.seed + 1_000_003 * rank + state["epoch"] + 1)
    if main:
        atomic_write_text(config_path, json.dumps(resolved, indent=2, default=str))
    ddp_model = wrap_model(model)
    for epoch in range(start_epoch, settings.epochs):
        stop = best_epoch >= 0 and epoch - best_epoch > settings.patience
        if distributed.broadcast_object(stop if main else None):  # one decision for every rank
            break
        if stop_after is not None and epoch - start_epoch >= stop_after:
            break
        started = time.perf_counter()
        rng = np.random.default_rng(settings.seed * 1000 + epoch)
        batches = shuffled_batches(_one_text_per_clip(train_data, rng), settings.batch_size, rng)
        if world > 1:  # a batch too small to give every rank a row is skipped by all of them
            batches = [b for b in batches if len(b) >= world]
        ddp_model.train()
        losses: dict[str, list[float]] = {}
        with progress(len(batches), f"epoch {epoch + 1}/{settings.epochs}", disable=not show_progress, unit="batch") as bar:
            for idx in batches:
                part = local_rows(idx) if world > 1 else idx
                batch = to_device(make_batch(cache, train_data, part, keys), device)
                optimizer.zero_grad(set_to_none=True)
                loss, terms = training_step(ddp_model, batch, len(part), len(idx))
                torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
                optimizer.step()
                scheduler.step()
                losses.setdefault("loss", []).append(loss.item())
                for name, value in terms.items():
                    losses.setdefault(name, []).append(value.item())
                bar.set_postfix(loss=f"{np.mean(losses['loss']):.3f}")
                bar.update(1)
        val_metrics = None
        if main:
            with distributed.local_only():  # rank 0 alone: no collective may run in here
                val_metrics = validation_metrics(model if device.type == "cpu" else copy.deepcopy(model).cpu(), cache, splits["val"])
        val_metrics = distributed.broadcast_object(val_metrics)
        row = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 2)}
        row.update({f"train/{k}": float(np.mean(v)) for k, v in losses.items()})
        row.update({f"val/{k}": float(v) for k, v in val_metrics.items()})
        history.append(row)
        primary = val_metrics["primary"]
        improved = primary > best
        if improved:
            best, best_epoch = primary, epoch
        rank_rng = distributed.all_gather_object(_rank_rng_state(device)) if world > 1 else None
        if main:
            weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            with atomic_path(out / "checkpoints" / f"epoch-{epoch:03d}.safetensors") as tmp:
                save_file(weights, str(tmp))
            if improved:
                with atomic_path(out / "model.safetensors") as tmp:
                    save_file(weights, str(tmp))
            state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "best": best, "best_epoch": best_epoch, "history": history,
                     "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}
            if rank_rng is not None:
                state.update({"rank_rng": rank_rng, "world_size": world})
            with atomic_path(out / "state.pt") as tmp:
                torch.save(state, tmp)
            atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        distributed.barrier()  # the epoch's checkpoint is on disk before any rank goes on
    summary = {"run": str(out), "best_epoch": best_epoch + 1, "best_val_primary": best, "epochs_run": len(history), "skipped_rows": data_info.get("skipped_rows", [])}
    if main:
        if history:
            plot_curves(history, out / "curves.png")
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    distributed.barrier()
    return summary


def validation_metrics(model, cache: FeatureCache, data: PairedFeatures) -> dict[str, float]:
    """Validation numbers; ``primary`` drives checkpoint choice and early stopping.

    Captioned data: retrieval, primary = mean of text-to-audio R@1/5/10. Label-only data (all texts
    are prompts of a class): zero-shot top-1 accuracy over the class prompts, since a retrieval
    query such as "the sound of coughing" has every coughing clip as a correct answer.
    """
    from sonalign.batches import encode_audio_items, encode_texts, score_matrix
    from sonalign.data.prompts import render

    model.eval()
    if data.labels is not None and data.template:
        audio = encode_audio_items(model, data.audio)
        prompts = encode_texts(model, cache, [render(data.template, name) for name in data.label_names])
        predicted = score_matrix(model, audio, prompts).argmax(1)
        accuracy = float(np.mean(predicted == data.labels))
        return {"zeroshot/accuracy": accuracy, "primary": accuracy}
    return dict(evaluate_retrieval(split_scores(model, cache, data), data.text_to_clip).metrics)


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in sorted(k for k in history[0] if k.startswith("train/")):
        ax1.plot(epochs, [h[key] for h in history], label=key[6:])
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.legend(fontsize=7)
    for key in ("val/t2a/R@1", "val/t2a/R@10", "val/a2t/R@1", "val/primary"):
        if key in history[0]:
            ax2.plot(epochs, [h[key] for h in history], label=key[4:])
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
