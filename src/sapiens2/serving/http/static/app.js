// The Sapiens2 page: send a photo or webcam frames to /v1/predict and draw the answer over the image.
// Plain browser JavaScript, no build step and nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, image: null, answer: null, layers: {}, segIds: null, camera: null, busy: false };
const LAYER_TASK = { seg: "seg", normal: "normal", depth: "pointmap", cutout: "matting" };

function headers() {
  const key = $("key").value.trim() || localStorage.getItem("sapiens2-key") || "";
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function loadInfo() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) throw new Error(`/v1/models: ${response.status}`);
  state.info = await response.json();
  $("server").textContent = `${state.info.tasks.join(", ")} on ${state.info.device}`;
  const box = $("tasks");
  for (const task of state.info.tasks) {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" name="task" value="${task}" checked> ${task}`;
    box.appendChild(label);
  }
  for (const option of $("layer").options) {  // only the views the server can make
    const task = LAYER_TASK[option.value];
    option.disabled = task !== undefined && !state.info.tasks.includes(task);
  }
  if (state.info.tasks.includes("seg")) $("layer").value = "seg";  // the most telling view when available
}

function chosenTasks() {
  return [...document.querySelectorAll("input[name=task]:checked")].map((el) => el.value);
}

async function predict(blob) {
  const tasks = chosenTasks();
  if (!tasks.length) throw new Error("choose at least one task");
  const form = new FormData();
  form.append("file", blob, blob.name || "frame.jpg");
  const response = await fetch(`/v1/predict?encoding=base64&tasks=${tasks.join(",")}`,
                               { method: "POST", body: form, headers: headers() });
  const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(answer.error + (answer.error_id ? ` (error id ${answer.error_id})` : ""));
  return answer;
}

function dataUrl(file) { return `data:${file.media_type};base64,${file.base64}`; }

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("an image of the answer could not be shown"));
    img.src = src;
  });
}

async function takeAnswer(answer, image) {
  const files = answer.files || {};
  const layers = {};
  for (const [name, key] of [["normal", "normal.png"], ["depth", "depth_vis.png"], ["cutout", "cutout.png"]]) {
    if (files[key]) layers[name] = await loadImage(dataUrl(files[key]));
  }
  state.segIds = files["seg.png"] ? await segIds(await loadImage(dataUrl(files["seg.png"]))) : null;
  state.answer = answer;
  state.image = image;
  state.layers = layers;
  showJson(answer);
  showDownloads(answer);
  draw();
}

// the class id of every pixel, read back from the 8-bit seg.png
async function segIds(img) {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

function draw() {
  const { image, answer } = state;
  if (!image || !answer) return;
  const canvas = $("view");
  const width = answer.image_size.width, height = answer.image_size.height;
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const layer = $("layer").value;
  const alpha = $("opacity").value / 100;
  if (layer !== "cutout") ctx.drawImage(image, 0, 0, width, height);
  if (layer === "seg" && state.segIds) drawSeg(ctx, alpha);
  else if (layer === "cutout" && state.layers.cutout) ctx.drawImage(state.layers.cutout, 0, 0);
  else if (state.layers[layer]) { ctx.globalAlpha = alpha; ctx.drawImage(state.layers[layer], 0, 0); ctx.globalAlpha = 1; }
  if (layer === "cutout" && !state.layers.cutout) ctx.drawImage(image, 0, 0, width, height);
  showLegend(layer === "seg");
  if ($("show-pose").checked && answer.pose) drawPose(ctx, answer.pose, width, height);
  canvas.dataset.state = "done";
}

function drawSeg(ctx, alpha) {
  const ids = state.segIds, palette = state.info.seg_classes;
  const out = ctx.getImageData(0, 0, ids.width, ids.height);
  const present = new Set();
  for (let i = 0; i < ids.data.length; i += 4) {
    const id = ids.data[i];
    if (id === 0 || !palette[id]) continue;  // background stays the photo
    present.add(id);
    const c = palette[id].color;
    for (let k = 0; k < 3; k++) out.data[i + k] = out.data[i + k] * (1 - alpha) + c[k] * alpha;
  }
  ctx.putImageData(out, 0, 0);
  state.segPresent = [...present].sort((a, b) => a - b);
}

function showLegend(on) {
  const legend = $("legend");
  legend.innerHTML = "";
  if (!on || !state.segPresent) return;
  for (const id of state.segPresent) {
    const { name, color } = state.info.seg_classes[id];
    const item = document.createElement("span");
    item.style.setProperty("--c", `rgb(${color.join(",")})`);
    item.textContent = name.replaceAll("_", " ");
    legend.appendChild(item);
  }
}

function drawPose(ctx, pose, width, height) {
  const spec = state.info.keypoints || { skeleton: pose.skeleton, colors: [], skeleton_colors: [] };
  const scale = Math.max(width, height) / 640;
  const minScore = 0.3;
  for (const person of pose.people) {
    const kp = person.keypoints;
    ctx.lineWidth = Math.max(1, 2 * scale);
    spec.skeleton.forEach(([a, b], i) => {
      if (kp[a][2] < minScore || kp[b][2] < minScore) return;
      const c = spec.skeleton_colors[i] || [0, 255, 0];
      ctx.strokeStyle = `rgb(${c.join(",")})`;
      ctx.beginPath(); ctx.moveTo(kp[a][0], kp[a][1]); ctx.lineTo(kp[b][0], kp[b][1]); ctx.stroke();
    });
    kp.forEach(([x, y, s], i) => {
      if (s < minScore) return;
      const c = spec.colors[i] || [255, 255, 255];
      ctx.fillStyle = `rgb(${c.join(",")})`;
      // face and hand points are dense: small dots, visible with zoom
      const r = (i < 23 ? 3 : 1.2) * scale;
      ctx.beginPath(); ctx.arc(x, y, Math.max(1, r), 0, 2 * Math.PI); ctx.fill();
    });
  }
}

function showJson(answer) {
  // the answer as received, base64 payloads replaced by their size (they are offered as downloads)
  const shown = JSON.parse(JSON.stringify(answer));
  for (const file of Object.values(shown.files || {})) if (file.base64) file.base64 = `<${file.bytes} bytes>`;
  $("json").textContent = JSON.stringify(shown, null, 1);
}

function showDownloads(answer) {
  const box = $("downloads");
  for (const old of box.querySelectorAll("a")) URL.revokeObjectURL(old.href);
  box.innerHTML = "";
  const link = (href, name) => {
    const a = document.createElement("a");
    a.href = href; a.download = name; a.textContent = name;
    box.appendChild(a);
  };
  link(URL.createObjectURL(new Blob([JSON.stringify(answer)], { type: "application/json" })), "answer.json");
  for (const file of Object.values(answer.files || {})) {
    const bytes = Uint8Array.from(atob(file.base64), (ch) => ch.charCodeAt(0));
    link(URL.createObjectURL(new Blob([bytes], { type: file.media_type })), file.name);
  }
}

async function runPhoto(file) {
  if (state.camera) stopCamera();
  setStatus(`Sending ${file.name}…`);
  $("view").dataset.state = "busy";
  try {
    const started = performance.now();
    const [answer, image] = await Promise.all([predict(file), createImageBitmap(file)]);
    await takeAnswer(answer, image);
    const people = answer.pose ? `, ${answer.pose.num_people} person(s)` : "";
    setStatus(`${file.name}: ${answer.tasks.join(", ")}${people} in ${Math.round(performance.now() - started)} ms`);
  } catch (error) {
    $("view").dataset.state = "error";
    setStatus(error.message, true);
  }
}

// ---- webcam: one request in flight at a time; the next frame is grabbed when its answer is back, so the frames
// the camera made meanwhile are dropped, never queued (the rate is what the server keeps up with). The guard
// holds across stop/start: a new loop waits for the old loop's request instead of sending a second one.
let cameraInFlight = null;  // the promise of the request on its way, or null

async function startCamera() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    const video = document.createElement("video");
    video.srcObject = stream; video.muted = true; video.playsInline = true;
    await video.play();
    state.camera = { stream, video, frames: 0, since: performance.now(), latencies: [] };
    $("camera").textContent = "Stop webcam"; $("camera").classList.add("on");
    cameraLoop();
  } catch (error) {
    setStatus(`webcam: ${error.message}`, true);
  }
}

function stopCamera() {
  state.camera.stream.getTracks().forEach((t) => t.stop());
  state.camera = null;
  $("camera").textContent = "Use webcam"; $("camera").classList.remove("on");
  $("rate").textContent = "";
}

async function cameraLoop() {
  const cam = state.camera;
  if (!cam || state.camera !== cam) return;
  if (cameraInFlight) await cameraInFlight.catch(() => {});  // the previous loop's request (stop, then start)
  if (state.camera !== cam) return;
  const grab = document.createElement("canvas");
  grab.width = cam.video.videoWidth; grab.height = cam.video.videoHeight;
  grab.getContext("2d").drawImage(cam.video, 0, 0);
  const captured = performance.now();
  const blob = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", 0.85));
  try {
    cameraInFlight = predict(new File([blob], "frame.jpg", { type: "image/jpeg" }));
    const answer = await cameraInFlight;
    cameraInFlight = null;
    if (state.camera !== cam) return;
    await takeAnswer(answer, grab);
    cam.frames += 1;
    cam.latencies.push(performance.now() - captured);  // capture -> answer drawn
    if (cam.latencies.length > 30) cam.latencies.shift();
    const seconds = (performance.now() - cam.since) / 1000;
    const latency = cam.latencies.reduce((a, b) => a + b, 0) / cam.latencies.length;
    $("rate").textContent = `${(cam.frames / seconds).toFixed(1)} frames/s, latency ${latency.toFixed(0)} ms`;
    setStatus("webcam");
  } catch (error) {
    cameraInFlight = null;
    setStatus(error.message, true);
    await new Promise((r) => setTimeout(r, 1000));  // e.g. 503 busy: back off, then go on
  }
  requestAnimationFrame(cameraLoop);
}

// ---- wiring
$("file").addEventListener("change", (e) => e.target.files[0] && runPhoto(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) runPhoto(e.dataTransfer.files[0]);
});
$("camera").addEventListener("click", () => (state.camera ? stopCamera() : startCamera()));
for (const id of ["layer", "opacity", "show-pose"]) $(id).addEventListener("input", draw);
$("zoom").addEventListener("change", (e) => $("stage").classList.toggle("zoom", e.target.checked));
$("key").value = localStorage.getItem("sapiens2-key") || "";
$("key").addEventListener("change", (e) => { localStorage.setItem("sapiens2-key", e.target.value.trim()); });
loadInfo().then(() => setStatus("Choose a photo or start the webcam."))
          .catch((error) => setStatus(`cannot reach the server: ${error.message}`, true));
