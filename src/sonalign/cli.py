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


def _console(stderr: bool) -> Console:
    """A console on the current stream. Lines never wrap (``soft_wrap``) and, when the stream is not
    a terminal (a pipe, a log, a test runner), tables are laid out at their natural width instead of
    being cut to 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 1 << 15, soft_wrap=True, highlight=False)


class _Lazy:
    """``console`` (stderr) and ``out`` (stdout) resolve their stream at each call."""

    def __init__(self, stderr: bool):
        self.stderr = stderr

    def print(self, *args, **kwargs) -> None:
        _console(self.stderr).print(*args, **kwargs)


console = _Lazy(stderr=True)
out = _Lazy(stderr=False)


def printable(text: object) -> str:
    """``text`` with control characters escaped (a file name holding a newline cannot forge report
    lines) and rich markup escaped (a name holding ``[red]`` prints as it is)."""
    from rich.markup import escape

    return escape("".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text)))


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {printable(message)}")
    raise typer.Exit(code)


DEVICE_HELP = ("Where the encoders (and training) run: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N. "
               "Also read from $SONALIGN_DEVICE; worker processes inherit it.")


def _use_device(device: Optional[str]) -> None:
    """Check ``--device`` now (one clear line if this machine cannot honour it) and make it the process default."""
    if not device:
        return
    import os

    from sonalign.errors import SonalignError
    from sonalign.utils.device import DEVICE_ENV, resolve_device

    try:
        resolve_device(device)
    except SonalignError as exc:
        _fail(str(exc))
    os.environ[DEVICE_ENV] = device


def _report_failures(failures: list[tuple[str, str]], strict: bool) -> None:
    if not failures:
        return
    console.print(f"[yellow]{len(failures)} file(s) or manifest row(s) could not be used (skipped; the rest was processed):[/]")
    for path, why in failures:
        console.print(f"  {printable(path)}: {printable(why)}")
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
    device: Optional[str] = typer.Option(None, "--device", envvar="SONALIGN_DEVICE", help=DEVICE_HELP),
) -> None:
    """Extract and cache frozen-encoder features (segments, frames, tokens) with row-aligned metadata.

    Re-running skips everything already cached; a killed run resumes where it stopped.
    """
    _use_device(device)
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
    nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel processes on this machine: runs this command under torchrun (DDP; gloo on CPU, NCCL on GPU)."),
    device: Optional[str] = typer.Option(None, "--device", envvar="SONALIGN_DEVICE", help=DEVICE_HELP),
) -> None:
    """Train an alignment model on cached frozen-encoder features (extracted first if missing).

    Data parallel: `sonalign train --nproc N ...` or `torchrun --nproc-per-node N -m sonalign train ...`.
    """
    _use_device(device)
    import os

    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        import torch

        from sonalign.distributed import launch
        from sonalign.utils.device import resolve_device

        if resolve_device().type == "cuda" and nproc > torch.cuda.device_count():
            _fail(f"--nproc {nproc} but only {torch.cuda.device_count()} GPU(s): NCCL needs one GPU per process")

        args = ["train", "--config", config, "--data", str(data), "--out", str(out_dir), "--epochs", str(epochs), "--batch-size", str(batch_size),
                "--lr", repr(lr), "--seed", str(seed), "--patience", str(patience)]
        args += (["--template", template] if template is not None else []) + (["--cache", str(cache)] if cache else []) + (["--resume"] if resume else [])
        raise typer.Exit(launch(nproc, args))
    from sonalign.train.trainer import TrainSettings, train

    settings = TrainSettings(config=config, data=str(data), out=str(out_dir), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                             patience=patience, template=template, cache=str(cache) if cache else None)
    summary = _guard(lambda: train(settings, resume=resume))
    if int(os.environ.get("RANK", "0") or 0) == 0:
        console.print(f"best epoch {summary['best_epoch']}: validation primary {summary['best_val_primary']:.4f}; run in {out_dir}")
        _report_failures([tuple(row) for row in summary.get("skipped_rows", [])], strict=False)


@app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="A run folder made by `sonalign train`, or 'default' (the packaged model)."),
    data: Path = typer.Option(..., "--data", help="Evaluation source (manifest, captions CSV or folder)."),
    split: str = typer.Option("test", help="Split to evaluate ('all' for every clip)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers to this JSON file."),
    report: Optional[Path] = typer.Option(None, "--out", "--report", help="Report folder (JSON, Markdown, PNG plots); default ./eval-MODEL-DATA-SPLIT in the current folder."),
    noise: Optional[Path] = typer.Option(None, help="Folder of real noise recordings (outside the evaluated set) for 15/10/5 dB robustness."),
    probe: Optional[Path] = typer.Option(None, help="Labelled manifest with train/test splits for a linear probe (e.g. EmoDB)."),
    template: Optional[str] = typer.Option(None, help="Prompt template for label-only data (default: the run's)."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default: the one the run was trained with if it is still there, else $SONALIGN_CACHE/features, by default ~/.cache/sonalign/features)."),
    device: Optional[str] = typer.Option(None, "--device", envvar="SONALIGN_DEVICE", help=DEVICE_HELP),
) -> None:
    """Evaluate a trained run: retrieval both ways, zero-shot, noise robustness, linear probe."""
    _use_device(device)
    from sonalign.evaluation.report import format_table, write_report
    from sonalign.evaluation.run import evaluate_run
    from sonalign.utils.atomic import atomic_write_text

    from sonalign.evaluation.run import default_report_dir, resolve_run

    run = _guard(lambda: resolve_run(run))
    result = _guard(lambda: evaluate_run(run, data, split=None if split == "all" else split, noise=noise, probe_data=probe, template=template, cache_dir=cache))
    out.print(format_table(result.metrics, title=f"{run} on {data} [{split}]"))
    paths = write_report(report or default_report_dir(run, data, split), retrieval=result.retrieval if hasattr(result.retrieval, "ranks") else {"metrics": result.retrieval},
                         zeroshot=result.zeroshot, robustness=result.robustness if len(result.robustness) > 1 else None,
                         probe=result.probe or None, metadata=result.metadata)
    if json_path:
        atomic_write_text(json_path, json.dumps({"metrics": result.metrics, "metadata": result.metadata}, indent=2, default=str))
    console.print(f"report: {paths.directory}")
    _report_failures([tuple(row) for row in result.metadata.get("skipped_rows", [])], strict=False)


@app.command("index")
def index_cmd(
    folder: Path = typer.Argument(..., help="Folder of recordings (any length; wav/flac/ogg/mp3), walked recursively."),
    out_dir: Path = typer.Option(..., "--out", help="Index folder (created or updated in place)."),
    model: str = typer.Option("default", help="'default' (packaged model), a run folder from `sonalign train`, or hf:PATH (a local CLAP checkpoint)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Delete the index (also a damaged one) and build it again."),
    transcripts: bool = typer.Option(True, "--transcripts/--no-transcripts", help="Transcribe speech segments with pocketsphinx and fuse transcript similarity into search."),
    strict: bool = typer.Option(False, help="Exit non-zero if any file could not be used."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Where the vectors are searched: 'faiss' (files in IDX, the default) or 'milvus' (a Milvus server or cluster, see --uri). Recorded in the index; later runs, search and serve use it."),
    uri: Optional[str] = typer.Option(None, "--uri", "--milvus-uri", envvar="SONALIGN_MILVUS_URI", help="Milvus address for --backend milvus, e.g. http://milvus.example:19530 (also overrides the recorded one for a server that moved)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes that segment and embed files in parallel (default: one per CPU core, at most 8 and one per 1.5 GiB of RAM; each holds its own copy of the models, see docs/performance.md). 1: everything in this process."),
    device: Optional[str] = typer.Option(None, "--device", envvar="SONALIGN_DEVICE", help=DEVICE_HELP),
) -> None:
    """Chunk, embed and index every recording under FOLDER. Re-running updates only added, changed or deleted files."""
    _use_device(device)
    from sonalign.index.build import build_index

    report = _guard(lambda: build_index(folder, out_dir, model=model, rebuild=rebuild, transcripts=transcripts, backend=backend, uri=uri, workers=workers))
    speed = report.audio_seconds / max(report.wall_seconds, 1e-9)
    console.print(
        f"{report.files} files: {report.added} added, {report.updated} updated, {report.removed} removed, {report.unchanged} unchanged; "
        f"{report.segments} segments from {report.audio_seconds:.0f} s of audio in {report.wall_seconds:.1f} s ({speed:.0f}x real time)"
    )
    _report_failures(report.failures, strict)


def _print_hits(hits, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps([h.to_dict() for h in hits], ensure_ascii=False) + "\n")  # one line, whatever the terminal
        return
    table = Table(show_header=True, header_style="bold")
    for col in ("#", "score", "file", "span", "kind", "transcript"):
        table.add_column(col)
    for n, h in enumerate(hits, 1):
        table.add_row(str(n), f"{h.score:.3f}", printable(Path(h.path).name), f"{_clock(h.start)} - {_clock(h.end)}", h.kind or "", printable((h.transcript or "")[:60]))
    out.print(table)


def _clock(seconds: float) -> str:
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes):02d}:{sec:04.1f}"


@app.command("search")
def search_cmd(
    idx: Path = typer.Argument(..., help="Index folder made by `sonalign index`."),
    query: Optional[str] = typer.Argument(None, help='What to find, in words: "a dog barking in the rain".'),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Search by example: an audio file instead of a text query."),
    k: int = typer.Option(10, "-k", help="Number of hits (1-1000)."),
    per_file: bool = typer.Option(False, "--per-file", help="Best span per recording instead of every segment."),
    path: Optional[str] = typer.Option(None, "--path", help="Only files whose path contains this text."),
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON."),
    device: Optional[str] = typer.Option(None, "--device", envvar="SONALIGN_DEVICE", help=DEVICE_HELP),
) -> None:
    """Find moments in an indexed collection by text or by example audio: files with time spans and scores."""
    _use_device(device)
    from sonalign.audio.io import check_not_silent, load_audio_query
    from sonalign.index.query import Searcher

    if (query is None) == (audio is None):
        _fail("give either a text QUERY or --audio FILE")

    def run():
        searcher = Searcher.open(idx)
        if audio is not None:
            wave, sr = load_audio_query(audio, searcher.max_audio_seconds)  # refuses a long file before decoding it
            check_not_silent(wave, audio)
            return searcher.search_audio(wave, sr, k=k, group_by_file=per_file, path_filter=path)
        return searcher.search(query, k=k, group_by_file=per_file, path_filter=path)

    _print_hits(_guard(run), as_json)


@app.command("serve")
def serve_cmd(
    idx: Path = typer.Argument(..., help="Index folder made by `sonalign index`."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (localhost by default; 0.0.0.0 exposes it: then also give --api-key-file and --allowed-host)."),
    port: int = typer.Option(8000, help="TCP port."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="SONALIGN_API_KEY", help="Require this key (header X-API-Key) on API calls. A key on the command line shows in `ps`: prefer --api-key-file or $SONALIGN_API_KEY. Empty keys are refused."
    ),
    api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="Read the API key from this file (one line; the trailing newline is dropped)."),
    allowed_host: list[str] = typer.Option(
        [],
        "--allowed-host",
        help="Also answer requests addressed to this host name (repeatable; '*.example.org' for its subdomains, '*' for any). "
        "Always answered: localhost, 127.0.0.1, [::1] and the --host address; with --host 0.0.0.0 and no --allowed-host, this machine's host name. Others get 400.",
    ),
    paths: str = typer.Option("relative", "--paths", help="How hits show file paths: 'relative' to the indexed folder, or 'absolute' (this machine's own paths)."),
    device: Optional[str] = typer.Option(None, "--device", envvar="SONALIGN_DEVICE", help=DEVICE_HELP),
) -> None:
    """Serve the HTTP API (/search, /segments/ID/audio, /stats; /docs lists it) and the search page at /.

    Slow clients are disconnected, every response carries security headers (CSP, nosniff, no framing)
    and the access log shows api_key=*** instead of a key given in a URL.
    """
    import os

    _use_device(device)
    from sonalign.serve.app import run_server
    from sonalign.serve.security import read_api_key_file

    if api_key is not None and api_key_file is not None:
        _fail("give the API key once: --api-key (or $SONALIGN_API_KEY) or --api-key-file, not both")
    if api_key is None and api_key_file is None and os.environ.get("SONALIGN_API_KEY") is not None:
        _fail("$SONALIGN_API_KEY is set but empty: set it to the key, or unset it to serve without one")
    if api_key_file is not None:
        api_key = _guard(lambda: read_api_key_file(api_key_file))
    _guard(lambda: run_server(idx, host=host, port=port, api_key=api_key, allowed_hosts=allowed_host, paths=paths))


#: Sounds of the bundled sample's sounds/ folder (see its ATTRIBUTION.md), searched by their label.
DEMO_SOUND_QUERIES = ("seagulls calling", "a bell ringing", "a vehicle engine idling", "a burning fuse", "a splash cymbal")


@app.command("demo")
def demo_cmd(
    out_dir: Path = typer.Option(Path("out/demo-index"), "--out", help="Where to put the demo index."),
    queries: list[str] = typer.Option(["a beep tone", "goodbye", "welcome to the directory", "weasels have eaten our phone system", *DEMO_SOUND_QUERIES],
                                      "--query", help="Queries to run (repeatable)."),
) -> None:
    """The main job on the embedded defaults: index the bundled real sample and search it."""
    from sonalign.index.build import build_index
    from sonalign.index.embedders import default_model_dir
    from sonalign.index.query import Searcher

    sample = default_model_dir().parent / "sample"
    console.print(f"indexing the bundled sample {sample} (attribution: {sample / 'ATTRIBUTION.md'})")
    report = _guard(lambda: build_index(sample, out_dir))
    console.print(f"{report.segments} segments indexed from {report.files} recordings ({report.audio_seconds:.0f} s) into {out_dir}")
    searcher = Searcher.open(out_dir)
    for q in queries:
        out.print(f"\n[bold]{q}[/]")
        _print_hits(searcher.search(q, k=3), False)
    console.print(f"\nserve it: sonalign serve {out_dir}   then open http://127.0.0.1:8000/")


def _guard(fn):
    """Run ``fn``; turn sonalign's own errors, bad values and operating-system errors (permissions,
    disk full, read-only filesystem, missing files) into one clear line, exit 2."""
    from sonalign.errors import SonalignError, describe_os_error

    try:
        return fn()
    except FileNotFoundError as exc:
        _fail(str(exc) if exc.filename is None else describe_os_error(exc))
    except (SonalignError, ValueError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(describe_os_error(exc))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see main): the work stopped cleanly
        console.print("stopped: what was committed is kept; run the same command again to continue")
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout``, systemd and CI send), handled like Ctrl-C: stop cleanly."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    app()


if __name__ == "__main__":
    main()
