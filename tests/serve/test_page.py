"""The web page, driven in Debian's chromium through Playwright (skips cleanly when either is absent).

Playwright never downloads a browser here: it launches /usr/bin/chromium (``apt-get install chromium``).
Set SONALIGN_SAVE_SCREENSHOT=1 to also copy the screenshot to docs/screenshots/search.png.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sonalign.index.query import Searcher
from sonalign.index.store import IndexStore, RecordingInfo
from sonalign.index.vectors import normalize
from sonalign.segments import Segment
from sonalign.serve.app import create_app

CHROMIUM = os.environ.get("SONALIGN_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]
DIM = 16
SR = 8000
REPO = Path(__file__).resolve().parents[2]


def hashed(text: str, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"{dim}:{text}".encode()).digest()[:8], "little")
    return normalize(np.random.default_rng(seed).standard_normal(dim))[0]


def fake_text(texts):
    return np.stack([hashed(t) for t in texts])


def fake_transcript_text(texts):
    return np.stack([hashed(t, 8) for t in texts])


def build(root: Path) -> IndexStore:
    """Five 40 s recordings, 2 s segments every 1 s; 'dog barking' peaks at different places."""
    rng = np.random.default_rng(0)
    q = hashed("dog barking")
    files = [
        ("field/park_morning.wav", 12.0, 0.95),
        ("field/street_corner.wav", 30.0, 0.7),
        ("field/backyard.wav", 6.0, 0.55),
        ("interviews/farmer_2019.wav", 20.0, 0.35),
        ("city/market_hall.wav", 33.0, 0.25),
    ]
    store = IndexStore.open(root / "idx", create=True, model="fake-clap")
    for n, (rel, peak_t, peak) in enumerate(files):
        path = root / "audio" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(40 * SR) / SR
        sf.write(path, (0.2 * np.sin(2 * np.pi * (300 + 100 * n) * t) * (0.6 + 0.4 * np.sin(t))).astype(np.float32), SR)
        rid = f"rec{n}"
        segs, vecs, transcripts = [], [], []
        tr = np.full((39, 8), np.nan, np.float32)
        for i in range(39):
            start = float(i)
            bump = peak * np.exp(-(((start + 1.0) - peak_t) ** 2) / 18.0)
            noise = rng.standard_normal(DIM).astype(np.float32)
            noise -= (noise @ q) * q
            noise /= np.linalg.norm(noise)
            speech = rel.startswith("interviews") and 18 <= i <= 21
            if speech:  # the sound model hears some of it too
                bump = max(bump, 0.5)
                noise = normalize(hashed("dogs barking tractor") + 0.5 * noise)[0]
            vecs.append(bump * q + np.sqrt(max(1e-6, 1 - bump**2)) * noise)
            segs.append(Segment(f"{rid}-{i:05d}", rid, start, 2.0, custom={"kind": "speech" if speech else "audio"}))
            if speech:
                transcripts.append("the dogs start barking every time the tractor comes up the lane")
                tr[i] = hashed("dogs barking tractor", 8)
            else:
                transcripts.append(None)
        store.upsert_recording(RecordingInfo(str(path), f"h{n}", 40.0, SR, id=rid), segs, np.stack(vecs), transcripts, {"transcript": tr})
    store.commit()
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        except Exception as exc:  # pragma: no cover - depends on the machine
            pytest.skip(f"chromium does not start here: {str(exc).splitlines()[0][:200]}")
        yield b
        b.close()


@pytest.fixture
def server(tmp_path):
    import uvicorn

    store = build(tmp_path)
    searcher = Searcher(store, fake_text, embed_text_for_transcripts=fake_transcript_text, fusion_weight=0.4)

    def start(api_key=None):
        port = free_port()
        config = uvicorn.Config(
            create_app(searcher, store, api_key=api_key), host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=1, timeout_graceful_shutdown=1
        )
        srv = uvicorn.Server(config)
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        deadline = time.time() + 20
        while not srv.started:
            if time.time() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        servers.append((srv, thread))
        return f"http://127.0.0.1:{port}"

    servers: list = []
    yield start
    for srv, thread in servers:
        srv.should_exit = True
        thread.join(timeout=10)
    store.close()


def test_search_play_and_strip(browser, server, tmp_path):
    base = server()
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    _wait_for(page, "document.querySelector('#stats').textContent.includes('5 recordings')")
    box = page.locator("#q")
    assert box.evaluate("el => el === document.activeElement")  # autofocus
    box.fill("dog barking")
    box.press("Enter")
    page.wait_for_selector("li.hit")
    hits = page.locator("li.hit")
    assert hits.count() == 10
    first = hits.nth(0)
    assert first.locator(".file").inner_text() == "park_morning.wav"
    assert first.locator(".span").inner_text() == "00:11.0 – 00:13.0"
    assert float(first.locator(".score .value").inner_text()) > 0.9
    assert "10 spans" in page.locator("#status").inner_text()
    # the similarity strip is drawn from /recordings/{id}/timeline
    _wait_for(page, "document.querySelector('li.hit .t1').textContent === '0:40'")
    painted = first.locator("canvas.strip").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"
    )
    assert painted > 100
    # play exactly the span: the audio element gets a blob: URL of /segments/{id}/audio
    first.locator("button.play").click()
    _wait_for(page, "document.querySelector('li.hit').dataset.state === 'playing'", timeout=10_000)
    src = page.locator("#player").evaluate("a => a.src")
    assert src.startswith("blob:")
    assert page.locator("#player").evaluate("a => a.dataset.segment") == "rec0-00011"
    duration = page.locator("#player").evaluate("a => new Promise(r => a.duration ? r(a.duration) : a.addEventListener('loadedmetadata', () => r(a.duration)))")
    assert abs(duration - 2.0) < 0.05
    try:  # headless chromium may have no audio sink; the state and src above are the contract
        _wait_for(page, "document.querySelector('#player').currentTime > 0", timeout=3000)
    except Exception:
        pass
    shot = tmp_path / "search.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("SONALIGN_SAVE_SCREENSHOT"):
        target = REPO / "docs" / "screenshots" / "search.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
    # a second click pauses; Escape stops
    first.locator("button.play").click()
    _wait_for(page, "document.querySelector('li.hit').dataset.state === 'paused'")
    page.keyboard.press("Escape")
    _wait_for(page, "document.querySelector('li.hit').dataset.state === 'idle'")
    # keyboard: '/' focuses the box, ArrowDown walks the play buttons
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("/")
    assert box.evaluate("el => el === document.activeElement")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.closest('li.hit') === document.querySelectorAll('li.hit')[1]")
    # group by file: one line per recording
    page.locator("text=best per file").click()
    _wait_for(page, "document.querySelectorAll('li.hit').length === 5")
    # speech hits show their transcript
    box.fill("dogs barking tractor")
    box.press("Enter")
    _wait_for(page, "[...document.querySelectorAll('li.hit .transcript')].some(p => !p.hidden)")
    assert not errors, errors
    page.close()


def test_empty_query_and_api_key_prompt(browser, server):
    base = server(api_key="k3y")
    page = browser.new_page()
    page.goto(base + "/")
    page.locator("#q").press("Enter")
    assert "Type what you want" in page.locator("#status").inner_text()
    page.locator("#q").fill("dog barking")
    page.locator("#q").press("Enter")
    page.wait_for_selector("#key-bar:not([hidden])")
    page.locator("#api-key").fill("k3y")
    page.locator("#api-key").press("Enter")
    page.wait_for_selector("li.hit")  # the pending search is retried with the key
    # the key can also come in the URL; it is then removed from the address bar
    page2 = browser.new_page()
    page2.goto(base + "/?api_key=k3y&q=dog%20barking")
    page2.wait_for_selector("li.hit")
    assert "api_key" not in page2.url
    page.close()
    page2.close()


def test_docs_page_and_no_csp_violations(browser, server):
    """/docs lists the endpoints from /openapi.json offline; neither page trips the Content-Security-Policy."""
    base = server()
    page = browser.new_page()
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto(base + "/docs")
    page.wait_for_selector("body[data-ready='true']")
    headings = page.locator(".endpoint h2").all_inner_texts()
    assert any("POST" in h and "/search" in h for h in headings), headings
    assert any("/recordings/{recording_id}/timeline" in h for h in headings), headings
    page.goto(base + "/")
    _wait_for(page, "document.querySelector('#stats').textContent.includes('5 recordings')")
    assert not violations, violations
    page.close()


def _wait_for(page, expression: str, timeout: float = 5000) -> None:
    """Poll ``expression`` until it is truthy. Playwright's wait_for_function evaluates a string
    with eval(), which the page's Content-Security-Policy (no 'unsafe-eval') rightly blocks."""
    import time

    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)
