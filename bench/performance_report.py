"""Assemble docs/performance.md from bench/results/*.json (every number comes from a benchmark run).

    python bench/performance_report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT  # noqa: E402

COMMANDS = {
    "features": "python bench/features.py",
    "encoders": "python bench/encoders.py",
    "index": "python bench/index.py",
    "index_no_transcripts": "python bench/index.py --no-transcripts",
    "search": "python bench/search.py --sizes 10000 100000",
    "search_milvus": "python bench/search_milvus.py",
    "load": "python bench/load_test.py",
    "scaling": "python bench/scaling.py",
}


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_note(d: dict) -> str:
    m = d.get("machine", {})
    la = m.get("load_avg") or m.get("load_avg_at_start")
    return f" Machine: {m.get('cpu_count', '?')} cores" + (f", load average at start {la[0]:.1f}" if la else "") + "."


def section_features(d: dict) -> list[str]:
    return [
        f"{d['clips']} clips, {d['audio_seconds']} s of audio ({d['data']}), encoder {d['encoder']}, segmenter {d['segmenter']}, batch {d['batch_size']}.",
        "",
        "| measure | value |", "|---|---|",
        f"| whole pipeline (hash, decode, resample, chunk, encode, write) | **{d['x_realtime']}x real time** ({d['wall_seconds']} s) |",
        f"| reference in the same run: decode + resample only | {d['reference_decode_resample_x_realtime']}x real time |",
        f"| ratio pipeline / decode floor | {d['ratio_pipeline_to_decode_floor']} |",
        f"| peak RSS | {d['peak_rss_mib']} MiB |",
        f"| goal | >= {d['goal_x_realtime']}x real time |",
    ]


def section_encoders(d: dict) -> list[str]:
    lines = ["| device | pipeline | audio s | wall s | x real time | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(f"| {r['device']} | {r['part']} | {r['audio_seconds']} | {r['wall_seconds']} | {r['x_realtime']} | {r['peak_rss_mib']} |")
    for dev, ratio in d["ratio_sonalign_over_clap"].items():
        lines.append(f"\n**{dev}: sonalign / CLAP-HTSAT throughput = {ratio}x** (goal >= {d['goal_ratio']}x; batch {d['batch_size']}, {d['threads']} threads).")
    return lines


def section_index(d: dict) -> list[str]:
    lines = [f"Transcripts (pocketsphinx on speech segments): {'on' if d['transcripts'] else 'off'}. Data: {d['data']}.", "",
             "| run | files | segments | audio s | wall s | x real time | rerun s (no-op) | decode floor x RT | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for key in ("folder", "long"):
        r = d.get(key)
        if r:
            lines.append(f"| {key} | {r['files']} | {r['segments']} | {r['audio_seconds']} | {r['wall_seconds']} | **{r['x_realtime']}** | {r['rerun_seconds']} | {r['decode_floor_x_realtime']} | {r['peak_rss_mib']} |")
    return lines


def section_search(d: dict) -> list[str]:
    lines = ["| vectors | index | build s | efSearch | recall@10 | single p50 ms | single p99 ms | batch q/s |", "|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        f = r["flat"]
        lines.append(f"| {r['n']} | exact | {f['build_s']} | - | 1 | {f['single_p50_ms']} | {f['single_p99_ms']} | {f['batch_qps']} |")
        h = r.get("hnsw")
        if h:
            for s in h["sweep"]:
                lines.append(f"| {r['n']} | HNSW | {h['build_s']} | {s['ef_search']} | {s['recall_at_10']} | {s['single_p50_ms']} | {s['single_p99_ms']} | {s['batch_qps']} |")
    return lines


def section_load(d: dict) -> list[str]:
    o = d["overall"]
    c = d["config"]
    return [f"{c['clients']} concurrent clients for {c['seconds']} s against `sonalign serve` on loopback: **{o['requests']} requests, {o['failed']} failed**, "
            f"{o['requests_per_s']} req/s, p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms."]


def section_scaling(d: dict) -> list[str]:
    lines = [f"Base collection: {d['base_minutes']} min of {', '.join(d['sets'])} clips, copied under new names; transcripts {'on' if d.get('transcripts', True) else 'off'}.", ""]
    if d.get("index"):
        lines += ["| factor | files | audio s | wall s | x real time | peak RSS MiB |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['factor']}x | {r['files']} | {r['audio_seconds']} | {r['wall_seconds']} | {r['x_realtime']} | {r['peak_rss_mib']} |" for r in d["index"]]
        lines.append("")
    lines += ["| vectors | index | build s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    lines += [f"| {r['vectors']} | {r['kind']} | {r['build_seconds']} | {r['p50_ms']} | {r['p99_ms']} |" for r in d.get("query", [])]
    lines += ["", "| config | batch | ms per step |", "|---|---|---|"]
    lines += [f"| {r['config']} | {r['batch_size']} | {r['step_ms']} |" for r in d.get("train", [])]
    return lines


def section_milvus(d: dict) -> list[str]:
    return ["```json", json.dumps({k: v for k, v in d.items() if k not in ("machine", "benchmark")}, indent=1)[:3000], "```"]


def section_generic(d: dict) -> list[str]:
    body = {k: v for k, v in d.items() if k not in ("machine", "benchmark")}
    return ["```json", json.dumps(body, indent=1)[:4000], "```"]


RENDER = {"features": section_features, "encoders": section_encoders, "index": section_index, "index_no_transcripts": section_index,
          "search": section_search, "load": section_load, "scaling": section_scaling, "search_milvus": section_milvus}


def main() -> None:
    out = ["# Performance", "",
           "Generated by `python bench/performance_report.py` from `bench/results/*.json`; each section names the",
           "command that produced it. Measured on this project's 2-core machine; where the load average at",
           "the start was high (other jobs running), absolute times are inflated and only the ratios measured",
           "in the same run compare fairly.", ""]
    titles = {"features": "Feature extraction (issue: foundation)", "encoders": "Encoder speed against CLAP-HTSAT", "index": "End-to-end indexing",
              "index_no_transcripts": "End-to-end indexing without transcripts", "search": "Vector search (faiss)", "search_milvus": "Milvus beside faiss",
              "load": "HTTP load test", "scaling": "Scaling"}
    for name, title in titles.items():
        d = load(name)
        if d is None:
            out += [f"## {title}", "", f"Not measured yet: run `{COMMANDS[name]}`.", ""]
            continue
        out += [f"## {title}", "", f"`{COMMANDS[name]}` ({d.get('date', 'date not recorded')}).{load_note(d)}", ""]
        out += RENDER.get(name, section_generic)(d)
        if name == "scaling" and d.get("plot"):
            out += ["", f"![scaling]({Path(d['plot']).name})"]
        out.append("")
    path = ROOT / "docs" / "performance.md"
    path.write_text("\n".join(out))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
