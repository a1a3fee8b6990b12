"""MODEL_CARD.md of the packaged default model, written by scripts/train_default_model.py from what it measured."""

from __future__ import annotations

from collections import Counter, defaultdict

GOALS = {("sfx test", "t2a/R@1"): 0.35, ("sfx test", "t2a/R@10"): 0.85, ("sfx zeroshot", "t2a/R@10"): 0.6, ("asterisk test", "t2a/R@10"): 0.56}


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _sources(rows: list[dict]) -> str:
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_source[r["source"]].append(r)
    lines = ["| source | clips (train / val) | licences (clips) |", "|---|---|---|"]
    for source, items in sorted(by_source.items(), key=lambda kv: -len(kv[1])):
        items = [r for r in items if "#" not in r["id"]]  # a clip used twice counts once here
        splits = Counter(r["split"] for r in items)
        licences = ", ".join(f"{name} ({n})" for name, n in Counter(r["license"] for r in items).most_common())
        lines.append(f"| {source} | {splits['train']} / {splits['val']} | {licences} |")
    return "\n".join(lines)


def _attributions(rows: list[dict]) -> str:
    counts = Counter(r["attribution"] for r in rows if r.get("attribution"))
    return "\n".join(f"- {text} ({n} clip{'s' if n > 1 else ''})" for text, n in sorted(counts.items()))


def _quality(metrics: dict[str, dict]) -> str:
    def m(data, key):
        return metrics.get(data, {}).get(key)

    rows = [
        ("sfx test (116 clips, 339 captions)", "text-to-audio", f"R@1 {_f(m('sfx test', 't2a/R@1'))}, R@5 {_f(m('sfx test', 't2a/R@5'))}, R@10 {_f(m('sfx test', 't2a/R@10'))}, mAP@10 {_f(m('sfx test', 't2a/mAP@10'))}"),
        ("sfx test", "audio-to-text", f"R@1 {_f(m('sfx test', 'a2t/R@1'))}, R@5 {_f(m('sfx test', 'a2t/R@5'))}, R@10 {_f(m('sfx test', 'a2t/R@10'))}, mAP@10 {_f(m('sfx test', 'a2t/mAP@10'))}"),
        ("sfx test in ambience at 10 dB", "text-to-audio", f"R@1 {_f(m('sfx test', 'snr10/t2a/R@1'))}, R@10 {_f(m('sfx test', 'snr10/t2a/R@10'))}"),
        ("sfx zeroshot (labels never trained on)", "text-to-audio", f"R@1 {_f(m('sfx zeroshot', 't2a/R@1'))}, R@10 {_f(m('sfx zeroshot', 't2a/R@10'))}"),
        ("sfx zeroshot", "classification over its 65 labels", f"top-1 {_f(m('sfx zeroshot', 'zeroshot/top1'))}, top-5 {_f(m('sfx zeroshot', 'zeroshot/top5'))}"),
        ("asterisk test (spoken prompts)", "text-to-audio, query = transcript", f"R@1 {_f(m('asterisk test', 't2a/R@1'))}, R@10 {_f(m('asterisk test', 't2a/R@10'))}"),
        ("fsdd test (spoken digits)", "prompt classification", f"top-1 {_f(m('fsdd test', 'zeroshot/top1'))}"),
    ]
    lines = ["| data | task | measured |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    goals = ["| goal | measured | met |", "|---|---|---|"]
    for (data, key), target in GOALS.items():
        value = m(data, key)
        goals.append(f"| {data} {key} >= {target} | {_f(value)} | {'yes' if value is not None and value >= target else 'no'} |")
    return "\n".join(lines) + "\n\n" + "\n".join(goals)


def _ablations(rows: list[dict]) -> str:
    if not rows:
        return "_Not measured in this build (run the script with `--ablations`)._"
    keys = ("t2a/R@1", "t2a/R@5", "t2a/R@10", "t2a/mAP@10", "a2t/R@1", "zeroshot/top1", "asterisk/t2a/R@10")
    lines = ["| choice | clips | best epoch | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{_f(r.get(k))} ({_f(r['spread'][k])})" if "spread" in r else _f(r.get(k)) for k in keys]
        lines.append(f"| {r['choice']} | {r['clips']} | {r['best_epoch']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_card(*, rows, config, train, summary, metrics, ablations, extras, day) -> str:
    command = "python scripts/train_default_model.py" + (" --extra " + " ".join(extras) if extras else "")
    return f"""# sonalign default search model

A `clap-baseline` alignment head: CLAP's two projection heads map frozen **aisfx-cnn** audio
embeddings (512-d) and frozen **all-MiniLM-L6-v2** sentence embeddings (384-d) into one
{config['embed_dim']}-d space, trained with a symmetric InfoNCE loss. `sonalign index`, `search` and
`serve` use it when no `--model` is given. Built on {day} with

    {command} --ablations

which writes the training manifest, runs `sonalign train` and `sonalign evaluate`, and wrote this
card from their output (`training_data.jsonl` beside it lists every training clip with its
licence; `ablations.json` holds the table below).

## Training data

Only clips with at least one licence option among CC0, public domain, MIT, CC-BY-*, CC-BY-SA-*
and LAL (Free Art): no NC or ND terms, no GPL-only or GFDL-only clip (so neither the
nonverbal set nor the GPL sound effects of sfx). {len({r['id'].split('#')[0] for r in rows})} clips ({len(rows)} training rows: the asterisk
train clips appear twice, which kept spoken-prompt retrieval at its level with the sound effects
added); the validation clips only stop training early. No clip of sfx `test` or `zeroshot`,
asterisk `test` or fsdd `test` was used.

{_sources(rows)}

Training: {train['epochs']} epochs at most (stopped after {train['patience']} without a better validation score),
batch {train['batch-size']} (several clips of one label may share a batch: same-label pairs are positives), AdamW lr
{train['lr']}; seeds {', '.join(f"{s} (validation {v:.3f})" for s, v in summary['seeds'].items())}: the shipped weights are seed
{summary['seed']}, best epoch {summary['best_epoch']} of {summary['epochs_run']}, validation primary (mean text-to-audio R@1/5/10 over the
sfx, asterisk and fsdd validation captions) {summary['best_val_primary']:.3f}.

## Quality (test splits never trained on)

Measured with `sonalign evaluate default --data ../shared/data/DATA/manifest.jsonl --split SPLIT`
(`--noise ../shared/data/clotho_sample/evaluation` for the ambience row: each sfx test clip mixed
with a real Clotho recording at 10 dB). Protocol: every caption is a query and only its own clip
counts as relevant, so clips that share a label (and hence identical captions) cap R@1: on sfx test
a perfect model reaches R@1 0.54, on sfx zeroshot R@10 0.86.

{_quality(metrics)}

## What each recipe choice did (sfx val)

Each row changes one thing against the first row, trains with `sonalign train` on sfx train
(early stopping on sfx val) and is measured with `sonalign evaluate --split val` on every sfx
val clip (144 clips, 66 labels; 63% of the clips have a label no shippable training clip has); the last
column is text-to-audio R@10 on the asterisk val split (spoken prompts). Each cell is the mean
over seeds 0, 1 and 2 with, in brackets, the spread (largest minus smallest) across them: a
difference smaller than the spreads is not an effect.

{_ablations(ablations)}

## Credits and licences

* Audio encoder: **aisfx** (Alison Bernice Ma and Alexander Lerch, "Representation Learning for the
  Automatic Indexing of Sound Effects Libraries", ISMIR 2022), checkpoint CC BY 4.0.
* Text encoder: sentence-transformers **all-MiniLM-L6-v2** (Apache 2.0).
* Training clips, as their licences ask (CC-BY / CC-BY-SA: attribution; CC-BY-SA: these weights,
  as an adaptation, are shared under CC BY-SA 4.0 where a CC-BY-SA clip requires it):

{_attributions(rows)}

## Limits

* The head is small and the corpus is small ({len({r['label'] for r in rows if r.get('label')})} labels): it knows
  everyday sound effects and spoken telephone prompts, and little about music, speech content
  beyond what pocketsphinx transcribes, or rare sounds. Train your own with `sonalign train` and
  pass `--model RUN` to `sonalign index`.
* Indexes built with an earlier default model must be rebuilt (`sonalign index DIR --out IDX
  --rebuild`): the index refuses to mix vectors of two models.
"""
