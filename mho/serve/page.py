"""The web page at `/`: pick a model, upload or record a clip, see the transcript and timings.

One self-contained HTML file (no external scripts, styles or fonts: it works offline behind
any proxy). It calls the same `/v1/audio/transcriptions` any client does (verbose_json).
Recording captures the microphone's samples with the Web Audio API and sends them as a
16-bit WAV, a format every server-side decoder reads (browsers' own recorders produce
WebM/Opus, which libsndfile does not).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mho serve</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto;
         padding: 0 1rem; color: #1d2330; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .sub { color: #5b6475; margin-top: 0; }
  fieldset { border: 1px solid #d5d9e2; border-radius: 8px; padding: 1rem; margin: 1rem 0; }
  label { display: block; margin: .4rem 0 .2rem; font-weight: 600; }
  select, input[type=file] { font-size: 1rem; }
  button { font-size: 1rem; padding: .45rem 1rem; border-radius: 6px; border: 1px solid #3156c4;
           background: #3d63d6; color: white; cursor: pointer; margin-right: .5rem; }
  button.secondary { background: white; color: #3156c4; }
  button:disabled { opacity: .5; cursor: default; }
  #transcript { font-size: 1.3rem; min-height: 2rem; padding: .6rem; background: #f3f5fa;
                border-radius: 6px; }
  #error { color: #b3261e; }
  table { border-collapse: collapse; margin-top: .6rem; }
  td { padding: .15rem 1rem .15rem 0; }
  td:first-child { color: #5b6475; }
</style>
</head>
<body>
<h1>mho serve</h1>
<p class="sub">Speech recognition on onnxruntime, the same API as OpenAI's
<code>/v1/audio/transcriptions</code>.</p>
<fieldset>
  <label for="model">Model</label>
  <select id="model"></select>
  <label for="file">Audio file (WAV, FLAC, OGG, MP3; any rate)</label>
  <input id="file" type="file" accept="audio/*">
  <p>
    <button id="send">Transcribe file</button>
    <button id="record" class="secondary">Record</button>
    <span id="status"></span>
  </p>
</fieldset>
<div id="transcript" aria-live="polite"></div>
<p id="error"></p>
<table id="timings"></table>
<script>
"use strict";
const $ = (id) => document.getElementById(id);

async function loadModels() {
  const response = await fetch("/v1/models");
  const body = await response.json();
  for (const model of body.data) {
    const option = document.createElement("option");
    option.value = option.textContent = model.id;
    $("model").appendChild(option);
  }
}

function show(body) {
  $("transcript").textContent = body.text;
  $("transcript").dataset.done = "1";
  const rows = [
    ["audio", body.duration.toFixed(2) + " s"],
    ["processing", (1000 * body.processing_seconds).toFixed(0) + " ms"],
    ["of which queued", (1000 * body.queue_seconds).toFixed(0) + " ms"],
    ["batch", body.batch_size + " request(s)"],
    ["real-time factor", body.real_time_factor.toFixed(3)],
  ];
  $("timings").replaceChildren(...rows.map(([name, value]) => {
    const row = document.createElement("tr");
    row.innerHTML = "<td></td><td></td>";
    row.cells[0].textContent = name;
    row.cells[1].textContent = value;
    return row;
  }));
}

async function transcribe(blob, name) {
  $("error").textContent = "";
  $("transcript").textContent = "";
  delete $("transcript").dataset.done;
  $("status").textContent = "transcribing...";
  const form = new FormData();
  form.append("file", blob, name);
  form.append("model", $("model").value);
  form.append("response_format", "verbose_json");
  try {
    const response = await fetch("/v1/audio/transcriptions", {method: "POST", body: form});
    const body = await response.json();
    if (!response.ok) {
      $("error").textContent = body.error ? body.error.message : response.statusText;
      $("error").dataset.done = "1";
    } else {
      show(body);
    }
  } catch (error) {
    $("error").textContent = String(error);
  }
  $("status").textContent = "";
}

$("send").onclick = () => {
  const file = $("file").files[0];
  if (!file) { $("error").textContent = "choose an audio file first"; return; }
  transcribe(file, file.name);
};

// Recording: raw samples from the microphone, encoded as a mono 16-bit WAV.
let recording = null;
function wav(chunks, rate) {
  const length = chunks.reduce((n, c) => n + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * length));
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i,
                                                                     ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * length, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true);
  view.setUint16(22, 1, true); view.setUint32(24, rate, true);
  view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * length, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const sample of chunk) {
      view.setInt16(offset, Math.max(-1, Math.min(1, sample)) * 0x7fff, true);
      offset += 2;
    }
  }
  return new Blob([view], {type: "audio/wav"});
}

$("record").onclick = async () => {
  if (recording) {
    const {context, stream, chunks} = recording;
    recording = null;
    stream.getTracks().forEach((track) => track.stop());
    await context.close();
    $("record").textContent = "Record";
    transcribe(wav(chunks, context.sampleRate), "recording.wav");
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const context = new AudioContext();
    const source = context.createMediaStreamSource(stream);
    const processor = context.createScriptProcessor(4096, 1, 1);
    const chunks = [];
    processor.onaudioprocess = (event) =>
      chunks.push(new Float32Array(event.inputBuffer.getChannelData(0)));
    source.connect(processor);
    processor.connect(context.destination);
    recording = {context, stream, chunks};
    $("record").textContent = "Stop and transcribe";
  } catch (error) {
    $("error").textContent = "cannot record: " + error.message;
  }
};

loadModels();
</script>
</body>
</html>
"""


def page_html() -> str:
    return PAGE
