// swarmline peer page.
//
// The page asks the local peer for JSON (/api/...) and keeps the DOM in step with the
// answers. It never rebuilds a whole list: every row or box carries data-key="KEY" and is
// updated in place, so a button under the mouse, or the media player, is never replaced.
"use strict";

// ---------------------------------------------------------------- small helpers
// Human sizes with a base of 1000: 999 B, 1.2 KB, 3.4 MB, 5.6 GB. Rounded to a tenth before
// the unit is chosen, so 999999 is "1.0 MB", never "1000.0 KB".
function humanSize(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = Number(bytes) || 0, unit = 0;
  while (Math.round(value * 10) >= 10000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

// Rates: "1.2 MB/s" (a byte count with a fraction makes no sense, hence Math.round).
function humanRate(bytesPerSecond) {
  return humanSize(Math.round(Number(bytesPerSecond) || 0)) + "/s";
}

// Time left: "12 s", "3 min", "2 h 5 min"; "?" when the peer cannot tell yet.
function humanEta(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "?";
  const s = Math.ceil(seconds);
  if (s < 60) return `${s} s`;
  // Rounded to the minute first, so 3599 s is "1 h 0 min", never "60 min".
  const minutes = Math.round(s / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// Change a text only when it differs: fewer DOM writes, and text being selected stays selected.
function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

// Returns a function that makes a new <tag class="className" data-key="item.key"> holding
// `html`, for syncList below.
function maker(tag, className, html) {
  return (item) => {
    const element = document.createElement(tag);
    element.className = className;
    element.dataset.key = item.key;
    element.innerHTML = html;
    return element;
  };
}

// Keep one element per item inside `parent`, keyed by data-key = item.key: reuse the
// elements already there, make the missing ones with create(item), remove those whose item
// is gone, and move only the ones out of order (moving a node under the mouse could swallow
// a click). `after` is an element that stays before the list, or null. Returns the
// elements, in the order of `items`.
function syncList(parent, selector, items, create, after) {
  const old = new Map();
  for (const element of parent.querySelectorAll(selector)) old.set(element.dataset.key, element);
  const elements = items.map((item) => old.get(item.key) || create(item));
  let previous = after;
  for (const element of elements) {
    const wanted = previous ? previous.nextSibling : parent.firstChild;
    if (wanted !== element) parent.insertBefore(element, wanted);
    previous = element;
    old.delete(element.dataset.key);
  }
  for (const gone of old.values()) gone.remove();
  return elements;
}

// ---------------------------------------------------------------- talking to the peer
// Fetch JSON from the peer. Resolves with the parsed answer, or throws an Error whose
// message is meant for a person (the text of the peer's {"error": "..."} when it sent one).
async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (networkError) {
    throw new Error("Cannot reach the peer: is it still running?");
  }
  const data = await response.json().catch(() => null); // null when the body is not JSON
  if (!response.ok) {
    throw new Error(data && data.error ? data.error : `The peer answered ${response.status} ${response.statusText}.`);
  }
  if (data === null) throw new Error("The peer sent an answer that is not JSON.");
  return data;
}

// Only one request of each kind at a time. A poll that finds its kind still running is
// skipped; an explicit request (search, after a click) is run right after the one under way.
// Either way the promise returned settles when the page shows what was asked for.
const running = {}; // kind -> the run under way
const queued = {}; // kind -> the run that follows it
function once(kind, task, queueIfBusy) {
  if (running[kind]) {
    if (!queueIfBusy) return running[kind];
    if (!queued[kind]) {
      queued[kind] = running[kind].then(() => {
        queued[kind] = null;
        return once(kind, task, false);
      });
    }
    return queued[kind];
  }
  // Never rejects (errors are shown), and never ends before it is stored below: the
  // task starts after a turn, so even one that throws at once ends after this line.
  running[kind] = (async () => {
    try {
      await null;
      await task();
      clearError(kind);
    } catch (error) {
      showError(kind, error.message);
    } finally {
      running[kind] = null;
    }
  })();
  return running[kind];
}

// ---------------------------------------------------------------- the error box
// div#error shows the last error. We remember where it came from ("files", "downloads",
// "action", "player"...) so that the next success of that same thing hides it, while a success of
// something else (another poll) does not hide it after a split second.
const errorBox = document.getElementById("error");
let errorSource = null;
let errorTimer = null;

function showError(source, message) {
  setText(errorBox, message);
  errorBox.hidden = false;
  errorSource = source;
  clearTimeout(errorTimer);
  // Errors of a click are not retried by any poll: hide them after a while.
  if (source === "action" || source === "player") {
    errorTimer = setTimeout(() => clearError(source), 15000);
  }
}

function clearError(source) {
  if (errorSource !== source) return;
  errorBox.hidden = true;
  errorSource = null;
}

errorBox.addEventListener("click", () => clearError(errorSource));

// ---------------------------------------------------------------- what the page knows
let lastFiles = [];            // the last answer of /api/files
const downloadsByKey = new Map(); // key -> the last download object of /api/downloads
let player = null;             // the <audio> or <video> element, made once

// A download still going on (not done, failed or cancelled); a kind the player can play.
const isActive = (download) =>
  Boolean(download) && ["starting", "downloading", "finishing"].includes(download.state);
const canPlay = (kind) => kind === "audio" || kind === "video";

// ---------------------------------------------------------------- files in the swarm
const filesBody = document.querySelector("#files tbody");
const searchInput = document.getElementById("search");

function refreshFiles(queueIfBusy) {
  return once("files", async () => {
    const q = searchInput.value.trim();
    const data = await api("/api/files" + (q ? "?q=" + encodeURIComponent(q) : ""));
    lastFiles = data.files || [];
    renderFiles();
  }, queueIfBusy);
}

// A new table row: five cells and a Download button (Play is added when it makes sense).
const makeFileRow = maker("tr", "file", `<td class="name"></td><td class="size num"></td>
  <td class="seeders num"></td><td class="leechers num"></td>
  <td class="actions"><button class="download">Download</button></td>`);

function renderFiles() {
  const rows = syncList(filesBody, "tr.file", lastFiles, makeFileRow, null);
  lastFiles.forEach((file, i) => updateFileRow(rows[i], file));
  document.getElementById("files-empty").hidden = rows.length > 0;
}

function updateFileRow(row, file) {
  row.dataset.kind = file.kind;
  setText(row.querySelector(".name"), file.name);
  setText(row.querySelector(".size"), humanSize(file.size));
  setText(row.querySelector(".seeders"), String(file.seeders));
  setText(row.querySelector(".leechers"), String(file.leechers));

  // The Download button says why it cannot be clicked.
  const download = downloadsByKey.get(file.key);
  const here = file.here === "complete" || (download && download.state === "done");
  const busy = isActive(download);
  const button = row.querySelector("button.download");
  if (!button.dataset.clicked) {
    setText(button, here ? "Here" : busy ? "Downloading" : "Download");
    button.disabled = here || busy;
  }

  // A Play button only for audio/video that is here, or on its way (played while it comes):
  // not for part of a file that nothing is downloading (the rest would never come).
  const actions = row.querySelector(".actions");
  const play = actions.querySelector("button.play");
  const playable = canPlay(file.kind) && (here || busy);
  if (playable && !play) {
    actions.insertAdjacentHTML("beforeend", ` <button class="play">Play</button>`);
  } else if (!playable && play) {
    play.remove();
  }
}

// Search as one types, but only once the typing pauses for 300 ms.
let searchTimer = null;
searchInput.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => refreshFiles(true), 300);
});

// ---------------------------------------------------------------- buttons
// One click handler for every Download and Play button ("event delegation"): rows and
// boxes come and go, this handler stays. The button's row or box holds the file's key.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  const holder = button && button.closest("[data-key]");
  if (!holder || button.disabled) return;
  if (button.matches(".download")) startDownload(holder.dataset.key, button);
  if (button.matches(".play")) playFile(holder.dataset.key, holder.querySelector(".name").textContent);
});

async function startDownload(key, button) {
  // Show at once that the click was taken; the next render says what really happened.
  button.disabled = true;
  button.dataset.clicked = "yes";
  setText(button, "Starting…");
  try {
    await api("/api/downloads", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key }),
    });
    clearError("action");
  } catch (error) {
    showError("action", "Cannot download: " + error.message);
  }
  await refreshDownloads(true); // also redraws the buttons of the files
  delete button.dataset.clicked;
  renderFiles();
}

// ---------------------------------------------------------------- downloads
const downloadsSection = document.getElementById("downloads");

function refreshDownloads(queueIfBusy) {
  return once("downloads", async () => {
    const data = await api("/api/downloads");
    const list = data.downloads || [];
    downloadsByKey.clear();
    for (const download of list) downloadsByKey.set(download.key, download);
    renderDownloads(list);
    renderFiles(); // the Download/Play buttons depend on the downloads
  }, queueIfBusy);
}

// The skeleton of one download box; updateDownloadBox fills it in.
const makeDownloadBox = maker("div", "download", `
  <div class="top"><strong class="name"></strong> <span class="state"></span>
    <button class="play">Play</button></div>
  <div class="bar"><progress max="1" value="0"></progress> <span class="percent">0%</span></div>
  <canvas class="chunkmap"></canvas>
  <div class="legend"><span class="here">here</span> <span class="inflight">in flight</span>
    <span class="missing">missing</span></div>
  <div class="numbers"><span class="done"></span> · <span class="speed"></span>
    · ETA <span class="eta"></span></div>
  <p class="error-text" hidden></p>
  <ul class="peers"></ul>`);

function renderDownloads(list) {
  // The boxes go after the "No downloads yet" line (hidden when there are some).
  const empty = document.getElementById("downloads-empty");
  const boxes = syncList(downloadsSection, "div.download", list, makeDownloadBox, empty);
  empty.hidden = boxes.length > 0;
  // Filled in once in the page, so that the chunk map knows its width on screen.
  list.forEach((download, i) => updateDownloadBox(boxes[i], download));
}

function updateDownloadBox(box, download) {
  const done = download.state === "done";
  box.dataset.state = download.state;
  setText(box.querySelector(".name"), download.name);
  setText(box.querySelector(".state"), download.state);
  // Not for "other" files, nor for one that failed or was cancelled part-way.
  box.querySelector("button.play").disabled =
    !canPlay(download.kind) || !(done || isActive(download));

  // Progress: exactly "100%" once done; never "100%" before (rounding down).
  const progress = done ? 1 : Math.min(Math.max(Number(download.progress) || 0, 0), 1);
  box.querySelector("progress").value = progress;
  const percent = done ? 100 : Math.min(99, Math.floor(progress * 100));
  setText(box.querySelector(".percent"), `${percent}%`);

  setText(box.querySelector(".done"),
    `${humanSize(download.bytes_done)} of ${humanSize(download.size)}, ` +
    `${download.have}/${download.pieces} pieces`);
  setText(box.querySelector(".speed"), isActive(download) ? humanRate(download.speed) : "idle");
  setText(box.querySelector(".eta"), done ? "done" : isActive(download) ? humanEta(download.eta_secs) : "-");

  const errorText = box.querySelector(".error-text");
  setText(errorText, download.error ? "Error: " + download.error : "");
  errorText.hidden = !download.error;

  drawChunkMap(box.querySelector("canvas.chunkmap"), download.chunks || "");
  updatePeers(box.querySelector("ul.peers"), download.peers || []);
}

// The peers serving this download, one li per address (its key).
function updatePeers(list, peers) {
  const keyed = peers.map((peer) => ({ ...peer, key: peer.addr }));
  const items = syncList(list, "li.peer", keyed, maker("li", "peer", ""), null);
  keyed.forEach((peer, i) => {
    items[i].classList.toggle("dropped", peer.state !== "ok");
    setText(items[i], `${peer.addr}: ${humanSize(peer.bytes)} at ${humanRate(peer.rate)}` +
      (peer.state === "ok" ? "" : ` (${peer.state})`));
  });
}

// Chunk map colours (the same as the legend in style.css).
const CHUNK_COLOURS = { "#": "#2e9e4f", ">": "#f0a020", ".": "#dde1e6" };

// Draw one cell per piece: '#' here, '>' in flight, '.' missing. With many pieces a cell
// stands for several: amber if any is in flight, green if all are here, grey otherwise.
function drawChunkMap(canvas, chunks) {
  const width = Math.max(100, Math.floor(canvas.clientWidth || 600));
  if (canvas.dataset.drawn === chunks && canvas.width === width) return; // nothing changed
  canvas.dataset.drawn = chunks;

  // One strip across the whole width: a cell per piece, or per group of
  // pieces when there are more pieces than pixels to show them.
  const cells = Math.max(1, Math.min(chunks.length, Math.floor(width / 2)));
  const cellWidth = width / cells;
  canvas.width = width;
  canvas.height = 14;

  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  for (let cell = 0; cell < cells && chunks.length > 0; cell++) {
    const from = Math.floor((cell * chunks.length) / cells);
    const to = Math.max(from + 1, Math.floor(((cell + 1) * chunks.length) / cells));
    const part = chunks.slice(from, to);
    const mark = part.includes(">") ? ">" : /^#+$/.test(part) ? "#" : ".";
    context.fillStyle = CHUNK_COLOURS[mark];
    const x = Math.floor(cell * cellWidth);
    const gap = cellWidth >= 4 ? 1 : 0; // a gap between cells when they are wide enough
    context.fillRect(x, 0, Math.max(1, Math.ceil(cellWidth) - gap), canvas.height);
  }
}

// ---------------------------------------------------------------- shares
const sharesBody = document.querySelector("#shares tbody");

const makeShareRow = maker("tr", "share",
  `<td class="name"></td><td class="size num"></td><td class="uploaded num"></td><td class="copy"></td>`);

function refreshShares() {
  return once("shares", async () => {
    const data = await api("/api/shares");
    const list = data.shares || [];
    const rows = syncList(sharesBody, "tr.share", list, makeShareRow, null);
    list.forEach((share, i) => {
      const row = rows[i];
      row.dataset.kind = share.kind;
      const name = row.querySelector(".name");
      setText(name, share.name);
      name.title = share.path || "";
      setText(row.querySelector(".size"), humanSize(share.size));
      setText(row.querySelector(".uploaded"), humanSize(share.uploaded));
      setText(row.querySelector(".copy"), share.complete ? "complete" : "partial");
      row.classList.toggle("partial", !share.complete);
    });
    document.getElementById("shares-empty").hidden = rows.length > 0;
  });
}

// ---------------------------------------------------------------- the player
// Made once, after /api/info: <audio> on an audio client, <video> otherwise (it plays both).
function makePlayer(profile) {
  player = document.createElement(profile === "audio" ? "audio" : "video");
  player.id = "player";
  player.controls = true;
  player.preload = "metadata";
  player.addEventListener("error", () => showError("player",
    "The browser cannot play this file (format not supported, or the peer stopped serving it)."));
  player.addEventListener("playing", () => clearError("player"));
  document.getElementById("player-box").appendChild(player);
}

function playFile(key, name) {
  if (!player) return;
  const url = "/media/" + key;
  if (player.getAttribute("src") !== url) player.src = url; // same file: just carry on
  setText(document.getElementById("now-playing"), name);
  player.play().catch((error) => {
    // AbortError only means another Play click came before this one started.
    if (error.name !== "AbortError") showError("player", "Cannot play " + name + ": " + error.message);
  });
}

// ---------------------------------------------------------------- start-up
const PROFILE_NAMES = { audio: "audio client", video: "video client", all: "all files" };

// Ask who we are (retrying until the peer answers), then make the player and start polling.
async function start() {
  let info = null;
  while (!info) {
    try {
      info = await api("/api/info");
      clearError("info");
    } catch (error) {
      showError("info", error.message);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  document.body.dataset.profile = info.profile;
  setText(document.getElementById("profile"), PROFILE_NAMES[info.profile] || info.profile);
  setText(document.getElementById("about"),
    `peer ${info.peer} · tracker ${info.tracker}` + (info.user ? ` · user ${info.user}` : ""));
  makePlayer(info.profile);

  refreshFiles();
  refreshDownloads();
  refreshShares();
  setInterval(() => { refreshDownloads(); refreshShares(); }, 1000);
  setInterval(() => refreshFiles(), 3000);
}

start();
