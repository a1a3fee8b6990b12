"""The ``sonalign`` command line. Each verb is a thin wrapper over a public function.

Imports of torch/transformers happen inside the verbs so ``sonalign --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="sonalign",
    help="Align sound and language: cache frozen-encoder features, train alignment models, evaluate them, and search audio collections by text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _report_failures(failures: list[tuple[str, str]], strict: bool) -> None:
    if not failures:
        return
    console.print(f"[yellow]{len(failures)} file(s) could not be used:[/]")
    for path, why in failures:
        console.print(f"  {path}: {why}")
    if strict:
        raise typer.Exit(1)


@app.command()
def models() -> None:
    """List the registered frozen encoders and alignment model configs."""
    from sonalign.encoders import list_encoders
    from sonalign.models.factory import get_model_config, list_models

    table = Table(title="Encoders (--audio-encoder / --text-encoder)")
    table.add_column("name")
    table.add_column("description")
    for name, description in list_encoders().items():
        table.add_row(name, description)
    out.print(table)
    table = Table(title="Model configs (--config)")
    table.add_column("name")
    table.add_column("method")
    table.add_column("description")
    for name in list_models():
        config = get_model_config(name)
        table.add_row(name, config["method"], config.get("description", ""))
    out.print(table)


@app.command()
def chunk(
    audio: Path = typer.Argument(..., help="An audio file, or a folder of audio files."),
    out_path: Path = typer.Option(..., "--out", help="Segments manifest to write (JSONL, one segment a line)."),
    segmenter: str = typer.Option("energy", help="fixed | energy (silence-aware) | speech (silero-vad)."),
    min_duration: Optional[float] = typer.Option(None, help="Shortest segment in seconds."),
    max_duration: Optional[float] = typer.Option(None, help="Longest segment in seconds; longer runs are split."),
    strict: bool = typer.Option(False, help="Exit non-zero if any file could not be read."),
) -> None:
    """Cut recordings into segments with timestamps (deterministic ids RECORDING-00000...)."""
    from sonalign.pipeline import chunk_files

    options = {k: v for k, v in {"min_duration": min_duration, "max_duration": max_duration}.items() if v is not None}
    segments, failures = chunk_files(audio, out_path, segmenter, options)
    console.print(f"wrote {len(segments)} segments to {out_path}")
    _report_failures(failures, strict)


@app.command()
def features(
    source: Path = typer.Argument(..., help="A folder of audio, a JSONL manifest, or a Clotho/AudioCaps captions CSV."),
    out_dir: Path = typer.Option(..., "--out", help="Cache folder (reused across runs and settings)."),
    audio_encoder: str = typer.Option("aisfx-cnn", help="Audio encoder name (see `sonalign models`)."),
    text_encoder: str = typer.Option("minilm-l6", help="Text encoder name."),
    segmenter: str = typer.Option("fixed", help="fixed | energy | speech."),
    split: Optional[str] = typer.Option(None, help="Only this split of the manifest (train/val/test)."),
    with_mel: bool = typer.Option(False, "--with-mel", help="Also cache 64-bin log-mels (needed by CALM)."),
    batch_size: int = typer.Option(32, help="Encoder batch size."),
    strict: bool = typer.Option(False, help="Exit non-zero if any file could not be used."),
) -> None:
    """Extract and cache frozen-encoder features (segments, frames, tokens) with row-aligned metadata.

    Re-running skips everything already cached; a killed run resumes where it stopped.
    """
    from sonalign.cache.features import FeatureSettings, extract_features

    settings = FeatureSettings(audio_encoder=audio_encoder, text_encoder=text_encoder, segmenter=segmenter, with_mel=with_mel)
    report = _guard(lambda: extract_features(source, out_dir, settings, split=split, batch_size=batch_size))
    if report.nothing_done:
        console.print(f"nothing to do: {report.cached} clips already cached in {out_dir}")
    else:
        speed = report.audio_seconds / max(report.wall_seconds, 1e-9)
        console.print(
            f"encoded {report.encoded} clips ({report.audio_seconds:.0f} s of audio, {speed:.0f}x real time), "
            f"{report.cached} already cached, {report.texts_encoded} texts encoded; view: {report.view}"
        )
    _report_failures(report.failures, strict)


@app.command("train")
def train_cmd(
    config: str = typer.Option(..., "--config", help="Model config name (see `sonalign models`) or a JSON path."),
    data: Path = typer.Option(..., "--data", help="Training source: JSONL manifest, Clotho/AudioCaps CSV or folder."),
    out_dir: Path = typer.Option(..., "--out", help="Run folder (checkpoints, config, metrics, curves)."),
    epochs: int = typer.Option(30, help="Maximum epochs (early stopping may end sooner)."),
    batch_size: int = typer.Option(32, help="Pairs per batch (no caption repeats inside a batch)."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW, warmup then cosine)."),
    seed: int = typer.Option(0, help="Random seed."),
    patience: int = typer.Option(5, help="Stop after this many epochs without a better validation score."),
    template: Optional[str] = typer.Option(None, help="Prompt template for label-only data, e.g. 'the sound of {label}' or sound|digit|emotion."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder to reuse (default RUN/features)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last checkpoint."),
) -> None:
    """Train an alignment model on cached frozen-encoder features (extracted first if missing)."""
    from sonalign.train.trainer import TrainSettings, train

    settings = TrainSettings(config=config, data=str(data), out=str(out_dir), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                             patience=patience, template=template, cache=str(cache) if cache else None)
    summary = _guard(lambda: train(settings, resume=resume))
    console.print(f"best epoch {summary['best_epoch']}: validation primary {summary['best_val_primary']:.4f}; run in {out_dir}")


@app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="A run folder made by `sonalign train`."),
    data: Path = typer.Option(..., "--data", help="Evaluation source (manifest, captions CSV or folder)."),
    split: str = typer.Option("test", help="Split to evaluate ('all' for every clip)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers to this JSON file."),
    report: Optional[Path] = typer.Option(None, help="Report folder (JSON, Markdown, PNG plots); default RUN/eval-SPLIT."),
    noise: Optional[Path] = typer.Option(None, help="Folder of real noise recordings (outside the evaluated set) for 15/10/5 dB robustness."),
    probe: Optional[Path] = typer.Option(None, help="Labelled manifest with train/test splits for a linear probe (e.g. EmoDB)."),
    template: Optional[str] = typer.Option(None, help="Prompt template for label-only data (default: the run's)."),
) -> None:
    """Evaluate a trained run: retrieval both ways, zero-shot, noise robustness, linear probe."""
    from sonalign.evaluation.report import format_table, write_report
    from sonalign.evaluation.run import evaluate_run
    from sonalign.utils.atomic import atomic_write_text

    result = _guard(lambda: evaluate_run(run, data, split=None if split == "all" else split, noise=noise, probe_data=probe, template=template))
    out.print(format_table(result.metrics, title=f"{run} on {data} [{split}]"))
    paths = write_report(report or run / f"eval-{split}", retrieval=result.retrieval if hasattr(result.retrieval, "ranks") else {"metrics": result.retrieval},
                         zeroshot=result.zeroshot, robustness=result.robustness if len(result.robustness) > 1 else None,
                         probe=result.probe or None, metadata=result.metadata)
    if json_path:
        atomic_write_text(json_path, json.dumps({"metrics": result.metrics, "metadata": result.metadata}, indent=2, default=str))
    console.print(f"report: {paths.directory}")


def _guard(fn):
    """Run ``fn``; turn sonalign's own errors and missing files into one clear line, exit 2."""
    from sonalign.errors import SonalignError

    try:
        return fn()
    except (SonalignError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
