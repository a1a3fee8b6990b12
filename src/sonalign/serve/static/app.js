// sonalign search page: plain JS, no build step, no external requests.
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const form = $("#search-form");
  const input = $("#q");
  const results = $("#results");
  const statusEl = $("#status");
  const player = $("#player");
  const keyBar = $("#key-bar");
  const template = $("#hit-template");
  const KEY_STORE = "sonalign.apiKey";

  // ------------------------------------------------------------------ API key
  // Taken from ?api_key= once (then removed from the address bar) and kept for this tab only.
  const params = new URLSearchParams(location.search);
  if (params.has("api_key")) {
    sessionStorage.setItem(KEY_STORE, params.get("api_key"));
    params.delete("api_key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  let pendingRetry = null;

  async function api(url, options = {}) {
    const headers = new Headers(options.headers || {});
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.set("X-API-Key", key);
    const res = await fetch(url, { ...options, headers });
    if (res.status === 401) {
      keyBar.hidden = false;
      $("#api-key").focus();
      throw new ApiError(401, "This server needs an API key.");
    }
    if (!res.ok) {
      let detail = res.statusText;
      try { detail = (await res.json()).detail || detail; } catch (_) { /* not JSON */ }
      throw new ApiError(res.status, detail);
    }
    return res;
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  keyBar.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    keyBar.hidden = true;
    loadStats();
    if (pendingRetry) { const retry = pendingRetry; pendingRetry = null; retry(); }
  });

  // ------------------------------------------------------------------ formatting
  function fmtTime(seconds) {
    const s = Math.max(0, seconds);
    const m = Math.floor(s / 60);
    const rest = s - m * 60;
    return `${String(m).padStart(2, "0")}:${rest.toFixed(1).padStart(4, "0")}`;
  }
  function fmtShort(seconds) {
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}` : `${m}:${String(r).padStart(2, "0")}`;
  }
  function splitPath(path) {
    const i = path.lastIndexOf("/");
    return i < 0 ? ["", path] : [path.slice(0, i + 1), path.slice(i + 1)];
  }
  function setStatus(text, kind = "") {
    statusEl.textContent = text;
    statusEl.dataset.kind = kind;
  }

  // ------------------------------------------------------------------ stats
  async function loadStats() {
    try {
      const s = await (await api("/stats")).json();
      const type = s.index_type ? `${s.index_type}` : "empty";
      $("#stats").textContent =
        `${s.recordings.toLocaleString()} recordings · ${s.segments.toLocaleString()} segments` +
        (s.model ? ` · ${s.model}` : "") + (s.dim ? ` (${s.dim}-d, ${type})` : "");
    } catch (err) {
      if (err.status !== 401) $("#stats").textContent = "";
    }
  }

  // ------------------------------------------------------------------ search
  let lastQuery = null;   // {text} or {file}
  let searchSeq = 0;

  function options() {
    return {
      k: $("#k").value,
      group: document.querySelector('input[name="group"]:checked').value,
      path: $("#path").value.trim(),
    };
  }

  async function searchText(text) {
    text = text.trim();
    if (!text) { setStatus("Type what you want to hear, then press Enter.", "hint"); input.focus(); return; }
    const seq = ++searchSeq;
    const o = options();
    const url = new URL("/search", location.origin);
    url.searchParams.set("q", text);
    url.searchParams.set("k", o.k);
    url.searchParams.set("group", o.group);
    if (o.path) url.searchParams.set("path", o.path);
    lastQuery = { text };
    setStatus("Searching…", "busy");
    document.body.classList.add("busy");
    try {
      const data = await (await api(url.pathname + url.search)).json();
      if (seq !== searchSeq) return;
      render(data.hits, text);
      const n = data.hits.length;
      setStatus(n ? `${n} ${o.group === "file" ? "files" : "spans"} for “${data.query}” · ${data.took_ms} ms`
                  : `Nothing found for “${data.query}”${o.path ? " in those paths" : ""}.`, n ? "" : "empty");
    } catch (err) {
      if (seq !== searchSeq) return;
      if (err.status === 401) pendingRetry = () => searchText(text);
      setStatus(err.message, "error");
    } finally {
      if (seq === searchSeq) document.body.classList.remove("busy");
    }
  }

  async function searchFile(file) {
    const seq = ++searchSeq;
    const o = options();
    const body = new FormData();
    body.append("file", file);
    body.append("k", o.k);
    body.append("group", o.group);
    if (o.path) body.append("path", o.path);
    lastQuery = { file: file.name };
    setStatus(`Searching with ${file.name}…`, "busy");
    try {
      const data = await (await api("/search", { method: "POST", body })).json();
      if (seq !== searchSeq) return;
      render(data.hits, null);
      setStatus(`${data.hits.length} spans sounding like ${file.name} · ${data.took_ms} ms`);
    } catch (err) {
      if (seq !== searchSeq) return;
      if (err.status === 401) pendingRetry = () => searchFile(file);
      setStatus(err.message, "error");
    }
  }

  form.addEventListener("submit", (ev) => { ev.preventDefault(); searchText(input.value); });
  $("#audio-file").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (file) searchFile(file);
    ev.target.value = "";
  });
  for (const el of [$("#k"), $("#path"), ...document.querySelectorAll('input[name="group"]')]) {
    el.addEventListener("change", () => { if (lastQuery && lastQuery.text) searchText(lastQuery.text); });
  }

  // ------------------------------------------------------------------ results
  const timelines = new Map();  // recording_id + query -> Promise<timeline>
  let observer = null;

  function render(hits, text) {
    stop();
    results.replaceChildren();
    if (observer) observer.disconnect();
    observer = "IntersectionObserver" in window
      ? new IntersectionObserver((entries) => {
          for (const e of entries) if (e.isIntersecting) { observer.unobserve(e.target); e.target._drawStrip(); }
        }, { rootMargin: "200px" })
      : null;
    const top = hits.length ? Math.max(...hits.map((h) => h.score)) : 1;
    hits.forEach((hit, i) => {
      const li = template.content.firstElementChild.cloneNode(true);
      const [dir, name] = splitPath(hit.path);
      li.dataset.segment = hit.segment_id;
      li.dataset.recording = hit.recording_id;
      $(".rank", li).textContent = `${i + 1}.`;
      $(".file", li).textContent = name;
      $(".file", li).title = hit.path;
      $(".dir", li).textContent = dir;
      $(".span", li).textContent = `${fmtTime(hit.start)} – ${fmtTime(hit.end)}`;
      $(".kind", li).textContent = hit.kind;
      $(".kind", li).dataset.kind = hit.kind;
      $(".score .value", li).textContent = hit.score.toFixed(3);
      $(".score", li).title = scoreTitle(hit);
      $(".score .fill", li).style.width = `${Math.max(4, Math.min(100, (100 * Math.max(hit.score, 0)) / Math.max(top, 1e-6)))}%`;
      if (hit.transcript) {
        const p = $(".transcript", li);
        p.hidden = false;
        p.textContent = `“${hit.transcript}”`;
      }
      const play = $(".play", li);
      play.setAttribute("aria-label", `Play ${fmtTime(hit.start)} to ${fmtTime(hit.end)} of ${name}`);
      play.addEventListener("click", () => toggle(li, hit));
      li._hit = hit;
      li._drawStrip = () => drawStrip(li, hit, text);
      results.appendChild(li);
      paintEmpty($(".strip", li));
      // Timelines of the first results load at once, the rest when scrolled into view.
      if (observer && i >= 20) observer.observe(li); else li._drawStrip();
    });
  }

  function scoreTitle(hit) {
    const parts = [`score ${hit.score.toFixed(4)}`];
    if (hit.acoustic_score != null && hit.transcript_score != null) {
      parts.push(`sound ${hit.acoustic_score.toFixed(3)}`, `words ${hit.transcript_score.toFixed(3)}`);
    }
    return parts.join(" · ");
  }

  // ------------------------------------------------------------------ similarity strip
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  async function drawStrip(li, hit, text) {
    const canvas = $(".strip", li);
    let tl = null;
    if (text) {
      const key = hit.recording_id + "\u0000" + text;
      if (!timelines.has(key)) {
        const url = `/recordings/${encodeURIComponent(hit.recording_id)}/timeline?q=${encodeURIComponent(text)}`;
        timelines.set(key, api(url).then((r) => r.json()).catch(() => null));
      }
      tl = await timelines.get(key);
    }
    const duration = Math.max(tl && tl.duration ? tl.duration : 0, hit.end, 1e-3);
    $(".t1", li).textContent = fmtShort(duration);
    if (!tl) $(".label", li).textContent = text ? "similarity unavailable" : "position in the recording";
    li._strip = { tl, duration };
    paintStrip(li);
    canvas.onmousemove = (ev) => {
      const r = canvas.getBoundingClientRect();
      const t = ((ev.clientX - r.left) / r.width) * duration;
      const p = tl && tl.points.find((q) => q.start <= t && t < q.end);
      canvas.title = `${fmtTime(t)}${p ? ` · similarity ${p.score.toFixed(3)}` : ""}`;
    };
  }

  function paintEmpty(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, h = canvas.clientHeight || 34;
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = cssVar("--strip-bg");
    ctx.fillRect(0, 0, w, h);
  }

  function paintStrip(li, playhead = null) {
    const canvas = $(".strip", li);
    const info = li._strip;
    if (!info) return;
    const { tl, duration } = info;
    const hit = li._hit;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, h = canvas.clientHeight || 34;
    if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = cssVar("--strip-bg");
    ctx.fillRect(0, 0, w, h);
    const x = (t) => (t / duration) * w;
    if (tl && tl.points.length) {
      const lo = tl.min, hi = tl.max, span = hi - lo || 1;
      const accent = cssVar("--accent-rgb") || "60, 80, 200";
      for (const p of tl.points) {
        const v = (p.score - lo) / span;            // 0..1 within this recording
        const barH = 4 + v * (h - 8);
        ctx.fillStyle = `rgba(${accent}, ${0.18 + 0.82 * v * v})`;
        const x0 = x(p.start), x1 = Math.max(x(p.end), x0 + 1);
        ctx.fillRect(x0, h - barH, x1 - x0, barH);
      }
    }
    // The hit's span: a highlighted band with a strong outline.
    const s0 = x(hit.start), s1 = Math.max(x(hit.end), s0 + 3);
    ctx.fillStyle = cssVar("--hit-band");
    ctx.fillRect(s0, 0, s1 - s0, h);
    ctx.strokeStyle = cssVar("--hit-line");
    ctx.lineWidth = 2;
    ctx.strokeRect(s0 + 1, 1, s1 - s0 - 2, h - 2);
    if (playhead != null) {
      ctx.fillStyle = cssVar("--playhead");
      ctx.fillRect(x(playhead) - 1, 0, 2, h);
    }
  }

  window.addEventListener("resize", () => { for (const li of results.children) paintStrip(li); });

  // ------------------------------------------------------------------ playback (exactly the hit's span)
  let current = null;  // {li, url}

  function setState(li, state) {
    li.dataset.state = state;
    $(".play", li).setAttribute("aria-pressed", state === "playing" ? "true" : "false");
  }

  function stop() {
    if (!current) return;
    player.pause();
    setState(current.li, "idle");
    paintStrip(current.li);
    URL.revokeObjectURL(current.url);
    current = null;
  }

  async function toggle(li, hit) {
    if (current && current.li === li) {
      if (player.paused) { await player.play(); setState(li, "playing"); }
      else { player.pause(); setState(li, "paused"); }
      return;
    }
    stop();
    setState(li, "loading");
    try {
      const res = await api(`/segments/${encodeURIComponent(hit.segment_id)}/audio`);
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      current = { li, url };
      player.src = url;
      player.dataset.segment = hit.segment_id;
      await player.play();
      setState(li, "playing");
    } catch (err) {
      setState(li, "error");
      setStatus(`Could not play ${hit.segment_id}: ${err.message}`, "error");
    }
  }

  player.addEventListener("timeupdate", () => {
    if (current) paintStrip(current.li, current.li._hit.start + player.currentTime);
  });
  player.addEventListener("ended", () => {
    if (current) { setState(current.li, "idle"); paintStrip(current.li); }
  });

  // ------------------------------------------------------------------ keyboard
  document.addEventListener("keydown", (ev) => {
    const typing = ev.target.matches("input, select, textarea");
    if (ev.key === "/" && !typing) { ev.preventDefault(); input.focus(); input.select(); return; }
    if (ev.key === "Escape") { stop(); return; }
    if ((ev.key === "ArrowDown" || ev.key === "ArrowUp") && (ev.target === input || ev.target.closest(".hit"))) {
      const buttons = [...results.querySelectorAll(".play")];
      if (!buttons.length) return;
      ev.preventDefault();
      const i = buttons.indexOf(ev.target.closest(".hit") ? $(".play", ev.target.closest(".hit")) : null);
      const next = ev.key === "ArrowDown" ? Math.min(i + 1, buttons.length - 1) : i - 1;
      if (next < 0) input.focus(); else buttons[next].focus();
    }
  });

  loadStats();
  if (params.get("q")) { input.value = params.get("q"); searchText(input.value); }
})();
