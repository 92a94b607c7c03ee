// The context loop of an rnn-toolkit artifact folder in the browser, with onnxruntime-web (WASM).
// Reads manifest.json, checks the sha256 of every file it loads with Web Crypto before use, runs
// the fused rollout where the manifest lists one (else the step model, state kept between steps),
// draws the data, the teacher-forced predictions and the closed loop, and runs the folder's
// test_data self-check. `window.rnn` exposes the results to tests.
import * as ort from "./ort/ort.wasm.min.mjs";
import { parseTensor } from "./tensorproto.js";

ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
ort.env.wasm.numThreads = 1; // the models are tiny; threads would need cross-origin isolation

const SELF_CHECK_ATOL = 1e-4; // the rollout tolerance (export/verify.py ROLLOUT_ATOL), as the README's check
const $ = (id) => document.getElementById(id);
const started = performance.now();

function say(text, kind = "") {
  const status = $("status");
  status.textContent = text;
  status.className = kind;
}

async function sha256(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- a folder: served next to the page (./model/) or picked with the file input ----

function servedFolder(base) {
  return {
    label: base,
    async read(name) {
      const response = await fetch(new URL(name, base), { cache: "no-store" });
      if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
      return response.arrayBuffer();
    },
    async has(name) {
      const response = await fetch(new URL(name, base), { method: "HEAD", cache: "no-store" });
      return response.ok;
    },
  };
}

function pickedFolder(fileList) {
  const files = new Map();
  for (const file of fileList) files.set(file.webkitRelativePath.split("/").slice(1).join("/"), file);
  return {
    label: "the picked folder",
    read: async (name) => {
      if (!files.has(name)) throw new Error(`${name} is not in the picked folder`);
      return files.get(name).arrayBuffer();
    },
    has: async (name) => files.has(name),
  };
}

class Folder {
  constructor(source, manifest) {
    this.source = source;
    this.manifest = manifest;
    this.checked = [];
  }

  static async open(source) {
    const manifest = JSON.parse(new TextDecoder().decode(await source.read("manifest.json")));
    if (manifest.format !== "rnn-toolkit-artifact") throw new Error("manifest.json is not an rnn-toolkit manifest");
    if (manifest.format_version !== 1) {
      throw new Error(
        `this page runs format 1 folders only (one float input fed back as it is); this folder's manifest is ` +
          `format_version ${manifest.format_version}: run it with the Python runtime or examples/node/generate.js`,
      );
    }
    return new Folder(source, manifest);
  }

  entry(role) {
    return this.manifest.files.find((f) => f.role === role) || null;
  }

  // The bytes of a file the manifest lists, refused unless its size and sha256 match.
  async checkedBytes(entry) {
    const buffer = await this.source.read(entry.name);
    const digest = await sha256(buffer);
    if (buffer.byteLength !== entry.size || digest !== entry.sha256) {
      throw new Error(
        `refused ${entry.name}: its sha256 is ${digest.slice(0, 16)}..., the manifest says ${entry.sha256.slice(0, 16)}...`,
      );
    }
    this.checked.push(entry.name);
    return new Uint8Array(buffer);
  }
}

// ---- the model ----

class Model {
  static async load(folder) {
    const model = new Model();
    const m = folder.manifest;
    model.folder = folder;
    model.x = m.inputs[0];
    model.y = m.outputs[0];
    model.states = m.state;
    model.sessions = {};
    const step = folder.entry("step_onnx");
    if (!step) throw new Error("the manifest lists no step model");
    model.sessions.step = await ort.InferenceSession.create(await folder.checkedBytes(step));
    for (const form of ["rollout_rnn", "rollout_loop", "sequence_rnn", "sequence_loop"]) {
      const entry = folder.entry(form);
      if (entry) model.sessions[form] = await ort.InferenceSession.create(await folder.checkedBytes(entry));
    }
    const config = folder.entry("config");
    model.config = config ? JSON.parse(new TextDecoder().decode(await folder.checkedBytes(config))) : {};
    return model;
  }

  get inputSize() {
    return this.x.shape[1];
  }

  get outputSize() {
    return this.y.shape[1];
  }

  initial() {
    return this.states.map((s) => new ort.Tensor("float32", Float32Array.from(s.initial), [1, s.shape[1]]));
  }

  rolloutForm() {
    return ["rollout_rnn", "rollout_loop"].find((f) => this.sessions[f]) || null;
  }

  // Closed loop at batch 1 from x0 for `steps` steps: the fused rollout (one run) or the step loop.
  async generate(x0, steps, form = this.rolloutForm() || "step") {
    const first = new ort.Tensor("float32", Float32Array.from(x0), [1, this.inputSize]);
    if (form === "step") {
      const session = this.sessions.step;
      let input = first;
      let state = this.initial();
      const ys = new Float32Array(steps * this.outputSize);
      for (let t = 0; t < steps; t++) {
        const feeds = { [this.x.name]: input };
        this.states.forEach((s, i) => (feeds[s.name] = state[i]));
        const out = await session.run(feeds);
        input = out[this.y.name];
        state = this.states.map((s) => out[s.output]);
        ys.set(input.data, t * this.outputSize);
      }
      return ys;
    }
    const feeds = { x0: first, steps: new ort.Tensor("int64", BigInt64Array.from([BigInt(steps)]), [1]) };
    const initial = this.initial();
    this.states.forEach((s, i) => (feeds[s.name] = initial[i]));
    const out = await this.sessions[form].run(feeds);
    return Float32Array.from(out.ys.data);
  }

  // Teacher-forced one-step predictions over a 1-D series (input size 1).
  async predict(series) {
    const form = ["sequence_rnn", "sequence_loop"].find((f) => this.sessions[f]);
    if (form) {
      const feeds = { xs: new ort.Tensor("float32", Float32Array.from(series), [series.length, 1, 1]) };
      const initial = this.initial();
      this.states.forEach((s, i) => (feeds[s.name] = initial[i]));
      return Float32Array.from((await this.sessions[form].run(feeds)).ys.data);
    }
    const ys = new Float32Array(series.length);
    let state = this.initial();
    for (let t = 0; t < series.length; t++) {
      const feeds = { [this.x.name]: new ort.Tensor("float32", Float32Array.from([series[t]]), [1, 1]) };
      this.states.forEach((s, i) => (feeds[s.name] = state[i]));
      const out = await this.sessions.step.run(feeds);
      state = this.states.map((s) => out[s.output]);
      ys[t] = out[this.y.name].data[0];
    }
    return ys;
  }
}

// ---- the folder's self-check (test_data/<form>/test_data_set_0, ONNX model zoo layout) ----

async function selfCheck(model) {
  const results = [];
  for (const [form, session] of Object.entries(model.sessions)) {
    const dir = `test_data/${form}/test_data_set_0/`;
    if (!(await model.folder.source.has(`${dir}input_0.pb`))) continue;
    const feeds = {};
    for (let i = 0; i < session.inputNames.length; i++) {
      const t = parseTensor(await model.folder.source.read(`${dir}input_${i}.pb`));
      feeds[t.name] = new ort.Tensor(t.type, t.data, t.dims);
    }
    const out = await session.run(feeds);
    let worst = 0;
    for (let i = 0; i < session.outputNames.length; i++) {
      const expected = parseTensor(await model.folder.source.read(`${dir}output_${i}.pb`));
      const got = out[expected.name].data;
      if (got.length !== expected.data.length) worst = Infinity;
      for (let k = 0; k < got.length; k++) worst = Math.max(worst, Math.abs(got[k] - expected.data[k]));
    }
    results.push({ form, maxAbsError: worst, passed: worst <= SELF_CHECK_ATOL });
  }
  return results;
}

// ---- drawing ----

function draw(canvas, data, predicted, rollout) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  const pad = 40;
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, w, h);
  const n = Math.max(data.length, rollout.length + 1, 2);
  const values = [...data, ...predicted, ...rollout].filter(Number.isFinite);
  const lo = Math.min(-1, ...values);
  const hi = Math.max(1, ...values);
  const px = (t) => pad + ((w - 2 * pad) * t) / (n - 1);
  const py = (v) => h - pad - ((h - 2 * pad) * (v - lo)) / (hi - lo || 1);
  ctx.strokeStyle = "#cccccc";
  ctx.beginPath();
  ctx.moveTo(pad, py(0));
  ctx.lineTo(w - pad, py(0));
  ctx.stroke();
  ctx.strokeStyle = "#2ca02c";
  ctx.lineWidth = 2;
  ctx.beginPath();
  rollout.forEach((v, t) => (t ? ctx.lineTo(px(t + 1), py(v)) : ctx.moveTo(px(t + 1), py(v))));
  ctx.stroke();
  const dots = (points, color, offset, radius) => {
    ctx.fillStyle = color;
    points.forEach((v, t) => {
      ctx.beginPath();
      ctx.arc(px(t + offset), py(v), radius, 0, 2 * Math.PI);
      ctx.fill();
    });
  };
  dots(data, "#1f77b4", 0, 5);
  dots(predicted, "#d62728", 1, 3.5);
  ctx.font = "13px sans-serif";
  let x = pad;
  for (const [color, text] of [
    ["#1f77b4", "● data"],
    ["#d62728", "● teacher-forced prediction of the next point"],
    ["#2ca02c", "— closed loop from the start value"],
  ]) {
    ctx.fillStyle = color;
    ctx.fillText(text, x, 20);
    x += ctx.measureText(text).width + 18;
  }
}

function builtInSeries() {
  // The built-in model's data: sin(t), t = linspace(2, 10, 21) (DESIGN.md); the training series.
  return Array.from({ length: 21 }, (_, i) => Math.fround(Math.sin(2 + (8 * i) / 20)));
}

// ---- the page ----

const rnn = { ready: null, error: null, timings: {}, selfCheck: [], checkedFiles: [], model: null };
window.rnn = rnn;

async function render(model) {
  const steps = Number($("steps").value);
  const x0 = Number($("x0").value);
  if (!Number.isInteger(steps) || steps < 1 || steps > 100000) throw new Error("steps must be 1 to 100000");
  if (!Number.isFinite(x0)) throw new Error("the start value must be a number");
  const data = model.inputSize === 1 && !model.config.data ? builtInSeries() : [];
  const predicted = data.length && model.outputSize === 1 ? Array.from(await model.predict(data)) : [];
  const rollout = model.inputSize === model.outputSize ? Array.from(await model.generate([x0], steps)) : [];
  draw($("plot"), data, predicted.slice(0, -1), rollout);
  rnn.lastRollout = rollout;
  return rollout;
}

async function open(source) {
  say(`loading ${source.label}...`);
  const folder = await Folder.open(source);
  const model = await Model.load(folder);
  rnn.model = model;
  rnn.checkedFiles = folder.checked.slice();
  const form = model.rolloutForm() || "step";
  $("form").textContent = `${form} (onnxruntime-web ${ort.env.versions.web}, wasm)`;
  $("x0").value = Math.fround(Math.sin(2)).toFixed(6); // the data's first point
  await render(model);
  rnn.timings.firstDrawMs = performance.now() - started;
  rnn.selfCheck = await selfCheck(model);
  const passed = rnn.selfCheck.length > 0 && rnn.selfCheck.every((r) => r.passed);
  $("selfcheck").innerHTML = rnn.selfCheck
    .map((r) => `<li class="${r.passed ? "pass" : "fail"}">${r.form}: ${r.passed ? "pass" : "FAIL"} (max abs error ${r.maxAbsError.toExponential(2)})</li>`)
    .join("");
  say(
    `${folder.checked.length} files checked against manifest.json (sha256); self-check ${passed ? "passed" : "FAILED"}`,
    passed ? "ok" : "error",
  );
  return model;
}

// For tests and the curious: closed loop at batch 1 ({x0, steps, form}) and a timing of it.
rnn.generate = async ({ x0, steps, form }) => Array.from(await rnn.model.generate([x0], steps, form || undefined));
rnn.time = async ({ x0, steps, form, repeats = 20 }) => {
  await rnn.model.generate([x0], steps, form || undefined);
  const t0 = performance.now();
  for (let i = 0; i < repeats; i++) await rnn.model.generate([x0], steps, form || undefined);
  return (performance.now() - t0) / repeats;
};

function fail(error) {
  rnn.error = error.message;
  say(error.message, "error");
}

$("run").addEventListener("click", () => rnn.model && render(rnn.model).catch(fail));
$("picker").addEventListener("change", (event) => {
  rnn.ready = open(pickedFolder(event.target.files)).catch(fail);
});
const base = new URLSearchParams(location.search).get("folder") || "./model/";
rnn.ready = open(servedFolder(new URL(base, location.href))).catch(fail);
