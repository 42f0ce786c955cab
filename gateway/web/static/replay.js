"use strict";
// The replay viewer. It never downloads the recording: it asks the server for the screen at
// a time (seek) and for the frames of the next few seconds (play), and shows them as text.
(function () {
  const viewer = document.getElementById("viewer");
  if (!viewer) { return; }
  const base = "/api/v1/recordings/" + encodeURIComponent(viewer.dataset.session);
  const screen = document.getElementById("screen");
  const seek = document.getElementById("seek");
  const clock = document.getElementById("clock");
  const playButton = document.getElementById("play");
  const speed = document.getElementById("speed");
  const skipIdle = document.getElementById("skip-idle");
  const markers = document.getElementById("markers");
  const facts = document.getElementById("facts");
  const hits = document.getElementById("hits");
  const IDLE = 2.0;
  const WINDOW = 10.0;
  const MARKED = { command: 1, warning: 1, kill: 1, alert: 1, block: 1, sftp: 1 };

  let duration = 0;
  let now = 0;
  let playing = false;
  let frames = [];
  let from = -1;
  let to = -1;
  let loading = false;
  let last = 0;

  async function get(path) {
    const response = await fetch(base + path, {
      credentials: "same-origin", headers: { "Accept": "application/json" },
    });
    const data = await response.json();
    if (!response.ok) { throw new Error(data.detail || response.statusText); }
    return data;
  }

  function fmt(seconds) {
    const s = Math.floor(seconds);
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  function show(frame) {
    if (frame) { window.lockgateTerminal.draw(screen, frame); }
    seek.value = String(now);
    clock.textContent = fmt(now) + " / " + fmt(duration);
  }

  function when(iso) {
    // "2026-12-02T14:54:26.123456+00:00" as "2026-12-02 14:54:26 UTC": no microseconds.
    if (!iso) { return null; }
    const at = new Date(iso);
    if (isNaN(at.getTime())) { return iso; }
    return at.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function fact(name, value) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value === null || value === undefined || value === "" ? "-" : String(value);
    facts.append(dt, dd);
  }

  async function seekTo(t) {
    now = Math.max(0, Math.min(duration, t));
    frames = [];
    from = to = -1;
    try {
      show(await get("/frames?at=" + String(now)));
    } catch (err) {
      screen.textContent = "(" + err.message + ")";
    }
  }

  async function load(t) {
    loading = true;
    try {
      const end = Math.min(duration, t + WINDOW);
      const data = await get("/frames?from=" + String(t) + "&to=" + String(end));
      frames = data.frames;
      from = t;
      to = end;
    } finally {
      loading = false;
    }
  }

  function frameAt(t) {
    let found = null;
    for (const frame of frames) {
      if (frame.t <= t) { found = frame; } else { break; }
    }
    return found;
  }

  function nextAfter(t) {
    for (const frame of frames) { if (frame.t > t) { return frame; } }
    return null;
  }

  async function step() {
    if (!playing) { return; }
    const real = performance.now();
    const elapsed = (real - last) / 1000;
    last = real;
    if (loading) { return; }
    if (now < from || now >= to) {
      await load(now);
      last = performance.now();
      return;
    }
    now += elapsed * Number(speed.value);
    if (skipIdle.checked) {
      const next = nextAfter(now);
      const target = next ? next.t : to;
      if (target - now > IDLE) { now = target; }
    }
    if (now >= duration) {
      now = duration;
      playing = false;
      playButton.textContent = "Play";
    }
    show(frameAt(now));
  }

  playButton.addEventListener("click", function () {
    playing = !playing;
    playButton.textContent = playing ? "Pause" : "Play";
    if (playing && now >= duration) { seekTo(0); }
    last = performance.now();
  });
  seek.addEventListener("input", function () { seekTo(Number(seek.value)); });
  document.getElementById("copy").addEventListener("click", function () {
    const text = screen.textContent;
    if (navigator.clipboard) { navigator.clipboard.writeText(text).catch(function () {}); }
    const range = document.createRange();
    range.selectNodeContents(screen);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  });
  document.getElementById("search").addEventListener("submit", async function (event) {
    event.preventDefault();
    const q = document.getElementById("search-text").value.trim();
    hits.textContent = "";
    if (!q) { return; }
    try {
      const response = await fetch("/api/v1/recordings/search?q=" + encodeURIComponent(q) +
        "&session=" + encodeURIComponent(viewer.dataset.session),
        { credentials: "same-origin", headers: { "Accept": "application/json" } });
      const page = await response.json();
      if (!response.ok) { throw new Error(page.detail || response.statusText); }
      const found = page.items;
      if (!found.length) { hits.textContent = "no match"; }
      for (const hit of found) {
        const item = document.createElement("li");
        item.textContent = fmt(hit.t) + "  " + hit.line;
        item.addEventListener("click", function () { seekTo(hit.t); });
        hits.append(item);
      }
      if (found.length) { seekTo(found[0].t); }
    } catch (err) {
      hits.textContent = err.message;
    }
  });

  async function start() {
    let info;
    try {
      info = await get("");
    } catch (err) {
      screen.textContent = "(" + err.message + ")";
      return;
    }
    if (!info.indexed) {
      // Right after a session ends its recording is indexed in the background (a few
      // seconds): say so, and open the replay by itself once it is ready.
      screen.textContent = info.sealed
        ? "(the recording is being indexed; the replay opens when it is ready)"
        : "(the session is still running; its replay opens when it ends)";
      viewer.dataset.state = info.sealed ? "indexing" : "running";
      window.setTimeout(start, info.sealed ? 1000 : 3000);
      return;
    }
    viewer.dataset.state = "ready";
    duration = info.duration;
    seek.max = String(duration);
    fact("user", info.user);
    fact("target", info.target);
    fact("account", info.account);
    fact("started", when(info.started_at));
    fact("ended", when(info.ended_at));
    fact("length", fmt(info.duration));
    fact("terminal", info.width + "x" + info.height + " " + (info.term || ""));
    fact("ended by", info.end_reason);
    if (info.grant) {
      fact("grant", info.grant.id);
      fact("reason", info.grant.reason);
      fact("ticket", info.grant.ticket);
      fact("approvers", (info.grant.approvers || []).join(", "));
    }
    for (const mark of info.markers) {
      if (!MARKED[mark.kind] || duration <= 0) { continue; }
      const el = document.createElement("span");
      el.className = "marker " + mark.kind;
      el.style.left = (100 * mark.t / duration).toFixed(3) + "%";
      el.title = fmt(mark.t) + " " + mark.kind + ": " + (mark.text || mark.op || mark.path || "");
      el.addEventListener("click", function () { seekTo(mark.t); });
      markers.append(el);
    }
    const wanted = Number(new URLSearchParams(window.location.search).get("t") || "0");
    await seekTo(wanted);
    setInterval(step, 50);
  }
  start();
})();
