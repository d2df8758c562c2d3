// gesture_cache serve: the camera's frames to the server one at a time (the next one leaves
// when the last one is answered, so nothing queues), its answers drawn as they come.
"use strict";

const COLUMNS = ["recording", "label", "start_frame", "end_frame", "start_time", "end_time",
                 "fired_frame", "score"];  // events.csv, as `gesture-cache detect` writes it
const BONES = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [5, 9], [9, 10],
               [10, 11], [11, 12], [9, 13], [13, 14], [14, 15], [15, 16], [13, 17], [0, 17],
               [17, 18], [18, 19], [19, 20]];
const MAX_WIDTH = 640;  // frames are sent at most this wide

// What the page has seen, for people and for tests (window.gestureState).
const state = { processed: 0, framesWithHands: 0, dropped: 0, latencies: [], labels: [],
                events: [], errors: [], fps: 0 };
window.gestureState = state;

const $ = (id) => document.getElementById(id);

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    for (const p of document.querySelectorAll(".panel")) {
      p.classList.toggle("active", p.id === tab.dataset.panel);
    }
  });
}

let info = null;
fetch("/info").then((r) => r.json()).then((i) => {
  info = i;
  $("run").textContent = `${i.run}: ${i.classes.filter((c) => c !== i.background).join(", ")}`;
});

function csv(events) {
  const quote = (v) => (v === null || v === undefined ? "" : /[",\n]/.test(String(v))
    ? `"${String(v).replace(/"/g, '""')}"` : String(v));
  return [COLUMNS.join(","), ...events.map((e) => COLUMNS.map((c) => quote(e[c])).join(","))]
    .join("\n") + "\n";
}

function download(events, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([csv(events)], { type: "text/csv" }));
  link.download = name;
  link.click();
}

function showEvents(events, table, timeline, frames) {
  const body = $(table).querySelector("tbody");
  body.replaceChildren(...events.map((e) => {
    const row = document.createElement("tr");
    const end = e.end_time !== null ? `${e.end_time} s` : e.end_frame;
    for (const text of [e.label, e.start_time !== null ? `${e.start_time} s` : e.start_frame,
                        end, e.score]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }));
  const span = Math.max(frames, ...events.map((e) => e.end_frame), 1);
  $(timeline).replaceChildren(...events.map((e) => {
    const bar = document.createElement("span");
    bar.style.left = `${(100 * e.start_frame) / span}%`;
    bar.style.width = `${(100 * (e.end_frame - e.start_frame)) / span}%`;
    bar.textContent = e.label;
    bar.title = `${e.label}: frames ${e.start_frame}-${e.end_frame}`;
    return bar;
  }));
}

// ---- the camera ----
const video = $("video");
const overlay = $("overlay");
const grab = document.createElement("canvas");
let socket = null;
let sentAt = new Map();
let sent = 0;

function drawHands(hands) {
  overlay.width = video.videoWidth;
  overlay.height = video.videoHeight;
  const g = overlay.getContext("2d");
  g.clearRect(0, 0, overlay.width, overlay.height);
  g.lineWidth = 3;
  for (const hand of hands) {
    const p = hand.landmarks.map(([x, y]) => [x * overlay.width, y * overlay.height]);
    g.strokeStyle = hand.right >= 0.5 ? "#3c3" : "#39f";
    g.beginPath();
    for (const [a, b] of BONES) { g.moveTo(...p[a]); g.lineTo(...p[b]); }
    g.stroke();
    g.fillStyle = "#f33";
    for (const [x, y] of p) { g.beginPath(); g.arc(x, y, 4, 0, 2 * Math.PI); g.fill(); }
  }
}

function sendFrame() {
  if (!socket || socket.readyState !== WebSocket.OPEN || !video.videoWidth) return;
  const scale = Math.min(1, MAX_WIDTH / video.videoWidth);
  grab.width = Math.round(video.videoWidth * scale);
  grab.height = Math.round(video.videoHeight * scale);
  grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
  const taken = performance.now();
  grab.toBlob((blob) => {
    sentAt.set(sent, taken);
    sent += 1;
    socket.send(blob);
  }, "image/jpeg", 0.85);
}

function answer(message) {
  if (message.type === "error") {
    state.errors.push(message.error);
    $("status").textContent = message.error;
    $("status").className = "error";
    sendFrame();
    return;
  }
  const taken = sentAt.get(message.frame);
  sentAt.delete(message.frame);
  if (taken !== undefined) state.latencies.push(performance.now() - taken);
  state.processed += 1;
  state.dropped = message.dropped;
  if (message.hands.length) state.framesWithHands += 1;
  drawHands(message.hands);
  const gesture = message.label && message.label !== message.background ? message.label : "-";
  $("label").textContent = gesture;
  $("bar").style.width = `${Math.round(100 * message.probability)}%`;
  $("probability").textContent = message.label
    ? `${message.label} ${(100 * message.probability).toFixed(0)} %` : "filling the first window";
  state.events = message.events;
  state.labels = message.events.map((e) => e.label);
  showEvents(message.events, "events", "timeline", message.frame + 1);
  $("download").disabled = !message.events.length;
  const recent = state.latencies.slice(-30).sort((a, b) => a - b);
  if (recent.length) $("latency").textContent = recent[recent.length >> 1].toFixed(0);
  $("dropped").textContent = message.dropped;
  sendFrame();
}

setInterval(() => {  // frames/s over the last second
  state.fps = state.processed - (state.lastCount || 0);
  state.lastCount = state.processed;
  $("fps").textContent = state.fps;
}, 1000);

$("start").addEventListener("click", async () => {
  $("start").disabled = true;
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  } catch (error) {
    $("status").textContent = `The camera cannot be opened: ${error.message}`;
    $("status").className = "error";
    $("start").disabled = false;
    return;
  }
  await video.play();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/live`);
  socket.onopen = () => { $("status").textContent = "Recognising."; sendFrame(); };
  socket.onmessage = (event) => answer(JSON.parse(event.data));
  socket.onclose = () => { $("status").textContent = "The server closed the connection."; };
});

$("download").addEventListener("click", () => download(state.events, "events.csv"));

// ---- a video file ----
let fileEvents = [];

function detectFile(file) {
  $("file-status").textContent = `Sending ${file.name}...`;
  $("file-status").className = "";
  const request = new XMLHttpRequest();
  request.open("POST", `/detect?name=${encodeURIComponent(file.name)}`);
  request.upload.onprogress = (e) => {
    if (e.lengthComputable) $("upload-bar").style.width = `${(100 * e.loaded) / e.total}%`;
  };
  request.upload.onload = () => { $("file-status").textContent = `Detecting in ${file.name}...`; };
  request.onload = () => {
    const reply = JSON.parse(request.responseText);
    if (request.status !== 200) {
      $("file-status").textContent = reply.error;
      $("file-status").className = "error";
      return;
    }
    fileEvents = reply.events;
    window.gestureState.fileEvents = fileEvents;
    $("file-status").textContent =
      `${file.name}: ${reply.frames} frames at ${reply.fps} fps, ${fileEvents.length} events`;
    showEvents(fileEvents, "file-events", "file-timeline", reply.frames);
    $("file-download").disabled = !fileEvents.length;
  };
  request.send(file);
}

$("upload").addEventListener("change", () => { if ($("upload").files[0]) detectFile($("upload").files[0]); });
$("drop").addEventListener("dragover", (e) => e.preventDefault());
$("drop").addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer.files[0]) detectFile(e.dataTransfer.files[0]);
});
$("file-download").addEventListener("click", () => download(fileEvents, "events.csv"));
