"use strict";
// The zarr-aac serve page: catalogue, spectrogram window, playback and downloads, all from /api.
// window.zarrAac exposes the state and a few helpers for scripts and the browser tests.

const $ = (id) => document.getElementById(id);
const state = {
  recordings: [],
  current: null, // the catalogue entry shown
  windowStart: 0, // seconds from the start of the recording
  windowLength: 10,
  selection: null, // [start, stop] seconds, or null
  playing: null, // {start, expansion} of what the player holds
  spectrogram: null, // headers of the last spectrogram drawn
  drawn: Promise.resolve(),
};

function status(text) {
  $("status").textContent = text || "";
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function formatSeconds(s) {
  if (s >= 3600) return (s / 3600).toFixed(2) + " h";
  if (s >= 60) return (s / 60).toFixed(1) + " min";
  return s.toFixed(s < 1 ? 3 : 1) + " s";
}

function formatRate(hz) {
  return hz >= 1000 ? (hz / 1000).toFixed(hz % 1000 ? 1 : 0) + " kHz" : hz + " Hz";
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : text;
  row.appendChild(td);
}

function drawCatalogue() {
  const body = document.querySelector("#recordings tbody");
  body.replaceChildren();
  for (const rec of state.recordings) {
    const row = document.createElement("tr");
    row.dataset.name = rec.name;
    cell(row, rec.name);
    cell(row, rec.start_time);
    cell(row, formatSeconds(rec.duration_s));
    cell(row, formatRate(rec.sample_rate));
    cell(row, rec.channels);
    cell(row, rec.fidelity);
    row.addEventListener("click", () => openRecording(rec.name));
    body.appendChild(row);
  }
  drawTimeline();
}

function drawTimeline() {
  // recordings with a start time, placed by clock time; the others are listed in the table only
  const timeline = $("timeline");
  timeline.replaceChildren();
  const timed = state.recordings.filter((r) => r.start_time);
  if (!timed.length) {
    timeline.hidden = true;
    return;
  }
  timeline.hidden = false;
  const begins = timed.map((r) => Date.parse(r.start_time));
  const ends = timed.map((r, i) => begins[i] + r.duration_s * 1000);
  const lo = Math.min(...begins);
  const span = Math.max(Math.max(...ends) - lo, 1);
  timed.forEach((rec, i) => {
    const bar = document.createElement("div");
    bar.className = "bar" + (state.current && state.current.name === rec.name ? " current" : "");
    bar.style.left = (100 * (begins[i] - lo)) / span + "%";
    bar.style.width = (100 * (ends[i] - begins[i])) / span + "%";
    bar.title = `${rec.name}: ${rec.start_time}, ${formatSeconds(rec.duration_s)}`;
    bar.addEventListener("click", () => openRecording(rec.name));
    timeline.appendChild(bar);
  });
  for (const [x, t] of [[0, lo], [100, lo + span]]) {
    const tick = document.createElement("span");
    tick.className = "tick";
    tick.style[x ? "right" : "left"] = "2px";
    tick.textContent = new Date(t).toISOString().replace(".000Z", "Z");
    timeline.appendChild(tick);
  }
}

function rangeQuery(start, stop) {
  return `start=${start.toFixed(6)}&stop=${stop.toFixed(6)}`;
}

function recordingURL(path) {
  return `/api/recordings/${encodeURIComponent(state.current.name)}/${path}`;
}

function clampWindow() {
  const duration = state.current.duration_s;
  state.windowLength = Math.min(Math.max(state.windowLength, 0.05), duration);
  state.windowStart = Math.min(Math.max(state.windowStart, 0), duration - state.windowLength);
}

function openRecording(name, start, length) {
  const rec = state.recordings.find((r) => r.name === name);
  if (!rec) {
    status(`no recording named ${name}`);
    return;
  }
  state.current = rec;
  state.windowStart = start || 0;
  state.windowLength = length || Math.min(rec.duration_s, 10);
  state.selection = null;
  $("viewer").hidden = false;
  $("current-name").textContent = rec.name;
  const channel = $("channel");
  channel.replaceChildren(
    ...Array.from({ length: rec.channels }, (_, i) => new Option(String(i), String(i))),
  );
  // ultrasonic recordings play slowed down by default, as bat workers listen to them
  $("expansion").value = rec.sample_rate > 96000 ? "10" : "1";
  document.querySelectorAll("#recordings tbody tr").forEach((row) => {
    row.classList.toggle("current", row.dataset.name === name);
  });
  drawTimeline();
  return redraw();
}

function redraw() {
  clampWindow();
  $("window-start").value = state.windowStart.toFixed(3);
  $("window-length").value = state.windowLength.toFixed(3);
  location.hash = `name=${encodeURIComponent(state.current.name)}&start=${state.windowStart}&length=${state.windowLength}`;
  drawSelection();
  state.drawn = drawSpectrogram();
  return state.drawn;
}

async function drawSpectrogram() {
  const canvas = $("spectrogram");
  const stop = state.windowStart + state.windowLength;
  const url =
    recordingURL("spectrogram") +
    `?${rangeQuery(state.windowStart, stop)}&channel=${$("channel").value || 0}` +
    `&nfft=${$("nfft").value}&columns=${canvas.width}&height=${canvas.height}`;
  status("drawing...");
  const response = await fetch(url);
  if (!response.ok) {
    const body = await response.json();
    status(body.error);
    throw new Error(body.error);
  }
  const image = await createImageBitmap(await response.blob());
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  const maxHz = Number(response.headers.get("X-Zarr-AAC-Frequency-Max"));
  const reduced = response.headers.get("X-Zarr-AAC-Reduced") === "true";
  state.spectrogram = { maxHz, reduced, columns: Number(response.headers.get("X-Zarr-AAC-Columns")) };
  drawAxes(maxHz);
  $("spectrogram-note").textContent = reduced
    ? "long window: each column is the spectrum of a short clip at its centre (the rest is not read)"
    : "every sample of the window drawn";
  status("");
}

function drawAxes(maxHz) {
  const frequencies = $("frequency-axis");
  frequencies.replaceChildren();
  for (let i = 0; i <= 4; i++) {
    const label = document.createElement("span");
    label.style.top = `${100 - 25 * i}%`;
    label.textContent = formatRate((maxHz * i) / 4);
    frequencies.appendChild(label);
  }
  const times = $("time-axis");
  times.replaceChildren();
  for (let i = 0; i <= 5; i++) {
    const t = state.windowStart + (state.windowLength * i) / 5;
    const label = document.createElement("span");
    label.style.left = `${20 * i}%`;
    label.textContent = state.current.start_time
      ? new Date(Date.parse(state.current.start_time) + t * 1000).toISOString().slice(11, 23)
      : t.toFixed(2) + " s";
    times.appendChild(label);
  }
}

function xOfTime(t) {
  return ((t - state.windowStart) / state.windowLength) * $("spectrogram").width;
}

function timeOfX(x) {
  return state.windowStart + (x / $("spectrogram").width) * state.windowLength;
}

function drawSelection() {
  const box = $("selection");
  const sel = state.selection;
  $("play-selection").disabled = !sel;
  const [start, stop] = sel || [state.windowStart, state.windowStart + state.windowLength];
  $("selection-label").textContent = sel
    ? `selection ${start.toFixed(3)}-${stop.toFixed(3)} s`
    : "drag on the spectrogram to select";
  $("download-wav").href = recordingURL("download") + `?${rangeQuery(start, stop)}&format=wav`;
  $("download-flac").href = recordingURL("download") + `?${rangeQuery(start, stop)}&format=flac`;
  if (!sel) {
    box.hidden = true;
    return;
  }
  const left = Math.max(xOfTime(start), 0);
  const right = Math.min(xOfTime(stop), $("spectrogram").width);
  box.hidden = right <= left;
  box.style.left = left + "px";
  box.style.width = right - left + "px";
}

function play(start, stop) {
  const expansion = Number($("expansion").value);
  const player = $("player");
  state.playing = { start, stop, expansion };
  player.src = recordingURL("audio") + `?${rangeQuery(start, stop)}&format=wav&expand=${expansion}`;
  return player.play().catch((error) => status(`cannot play: ${error.message}`));
}

function moveCursor() {
  const cursor = $("cursor");
  const player = $("player");
  if (state.playing && state.current) {
    const t = state.playing.start + player.currentTime / state.playing.expansion;
    const x = xOfTime(t);
    cursor.hidden = x < 0 || x > $("spectrogram").width;
    cursor.style.left = x + "px";
  }
  requestAnimationFrame(moveCursor);
}

async function decodePlayerAudio() {
  // the samples the browser decodes from what the player holds (for tests and scripts)
  // at the WAV's own rate: decodeAudioData resamples to its context's rate
  const response = await fetch($("player").currentSrc || $("player").src);
  const rate = state.current.sample_rate / (state.playing ? state.playing.expansion : 1);
  const context = new OfflineAudioContext(1, 1, rate);
  const buffer = await context.decodeAudioData(await response.arrayBuffer());
  const channels = [];
  for (let c = 0; c < buffer.numberOfChannels; c++) channels.push(Array.from(buffer.getChannelData(c)));
  return { sampleRate: buffer.sampleRate, duration: buffer.duration, channels };
}

function wire() {
  const canvas = $("spectrogram");
  let dragFrom = null;
  canvas.addEventListener("mousedown", (event) => {
    dragFrom = event.offsetX;
  });
  canvas.addEventListener("mousemove", (event) => {
    if (dragFrom === null) return;
    const [a, b] = [dragFrom, event.offsetX].sort((x, y) => x - y);
    state.selection = [timeOfX(a), timeOfX(b)];
    drawSelection();
  });
  window.addEventListener("mouseup", () => {
    if (dragFrom !== null && state.selection && xOfTime(state.selection[1]) - xOfTime(state.selection[0]) < 3) {
      state.selection = null;
      drawSelection();
    }
    dragFrom = null;
  });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const anchor = timeOfX(event.offsetX);
    const factor = event.deltaY > 0 ? 1.5 : 1 / 1.5;
    state.windowLength *= factor;
    state.windowStart = anchor - (anchor - state.windowStart) * factor;
    redraw();
  });
  $("zoom-in").addEventListener("click", () => zoom(0.5));
  $("zoom-out").addEventListener("click", () => zoom(2));
  $("pan-left").addEventListener("click", () => pan(-0.5));
  $("pan-right").addEventListener("click", () => pan(0.5));
  $("window-start").addEventListener("change", (e) => {
    state.windowStart = Number(e.target.value);
    redraw();
  });
  $("window-length").addEventListener("change", (e) => {
    state.windowLength = Number(e.target.value);
    redraw();
  });
  $("channel").addEventListener("change", redraw);
  $("nfft").addEventListener("change", redraw);
  $("play-visible").addEventListener("click", () => play(state.windowStart, state.windowStart + state.windowLength));
  $("play-selection").addEventListener("click", () => state.selection && play(...state.selection));
  requestAnimationFrame(moveCursor);
}

function zoom(factor) {
  const centre = state.windowStart + state.windowLength / 2;
  state.windowLength *= factor;
  state.windowStart = centre - state.windowLength / 2;
  redraw();
}

function pan(fraction) {
  state.windowStart += fraction * state.windowLength;
  redraw();
}

function followHash() {
  // #name=NAME&start=SECONDS&length=SECONDS opens that window (links, the back button)
  const wanted = new URLSearchParams(location.hash.slice(1));
  const name = wanted.get("name") || (state.recordings[0] && state.recordings[0].name);
  const start = Number(wanted.get("start")) || 0;
  const length = Number(wanted.get("length")) || 0;
  const current = state.current;
  if (!name || (current && current.name === name && state.windowStart === start && state.windowLength === length)) {
    return state.drawn;
  }
  return openRecording(name, start, length);
}

async function main() {
  wire();
  try {
    const catalogue = await getJSON("/api/recordings");
    $("archive-label").textContent = catalogue.archive;
    state.recordings = catalogue.recordings;
    drawCatalogue();
    await followHash();
    window.addEventListener("hashchange", followHash);
    document.body.dataset.ready = "true";
  } catch (error) {
    status(error.message);
    document.body.dataset.ready = "error";
  }
}

window.zarrAac = { state, openRecording, redraw, play, decodePlayerAudio };
main();
