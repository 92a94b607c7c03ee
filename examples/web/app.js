// The context loop of an rnn-toolkit artifact folder in the browser, with onnxruntime-web (WASM).
// Reads manifest.json, checks the sha256 of every file it loads with Web Crypto before use (model.js)
// and runs the folder's test_data self-check. Format 1 and a format 2 model whose output is fed
// back as it is: draws the closed loop (the fused rollout where the manifest lists one, else the
// step model), for the built-in sine model the data and the teacher-forced predictions too, on a
// chart with axes, ticks, axis labels, a legend and the model's name (window.rnn.chart). A
// model that samples its next token: streams the tokens as they are drawn (greedy, temperature,
// top-k, top-p; a seed draws numpy's default_rng(seed), so the tokens are the Python runtime's
// `runtime.Sampler(..., seed=seed)`'s), as text where the manifest has a vocabulary, after a
// prompt fed teacher-forced. `window.rnn` exposes the results to tests.
import * as ort from "./ort/ort.wasm.min.mjs";
import { Folder, Model, pickedFolder, servedFolder } from "./model.js";
import { Sampler } from "./sampling.js";
import { countOf, isTokens } from "./signature.js";
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
      for (let k = 0; k < got.length; k++) worst = Math.max(worst, Math.abs(Number(got[k]) - Number(expected.data[k])));
    }
    results.push({ form, maxAbsError: worst, passed: worst <= SELF_CHECK_ATOL });
  }
  return results;
}

// ---- the chart, on a plain canvas: series of points or lines against the time step, with axes,
// ticks and their numbers, axis labels, a legend and a title line. A canvas keeps what it draws to
// itself, so the chart writes it on the element too: data-chart (JSON: the title, the axis
// labels, each axis's range and tick labels, the legend, every text drawn) and aria-label (the
// same in a sentence; the canvas has role="img"), for tests and screen readers. ----

const MARGIN = { left: 64, right: 20, top: 58, bottom: 48 };
const FONT = "12px sans-serif";
const TITLE_FONT = "bold 14px sans-serif";
const AXIS_COLOR = "#444444";
const GRID_COLOR = "#eeeeee";

// Ticks at 1, 2 or 5 times a power of ten, about `count` of them, from a tick at or below `lo` to
// one at or above `hi` (whole numbers only where `integer`): {lo, hi, ticks, decimals}.
function niceTicks(lo, hi, count = 6, integer = false) {
  if (!(Number.isFinite(lo) && Number.isFinite(hi))) [lo, hi] = [0, 1];
  if (hi <= lo) [lo, hi] = [lo - (Math.abs(lo) || 1) / 2, hi + (Math.abs(hi) || 1) / 2];
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw * (1 - 1e-9));
  if (integer) step = Math.max(1, Math.round(step));
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  const ticks = [];
  for (let k = first; k <= last; k++) ticks.push(Number((k * step).toFixed(decimals)));
  return { lo: ticks[0], hi: ticks[ticks.length - 1], ticks, decimals };
}

// The extent of every finite value of the series' points, [xs, ys]; x from `xFrom` at least.
function extent(series, xFrom) {
  let [x0, x1, y0, y1] = [xFrom, xFrom, Infinity, -Infinity];
  for (const { points } of series) {
    for (const [x, y] of points) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      [x0, x1, y0, y1] = [Math.min(x0, x), Math.max(x1, x), Math.min(y0, y), Math.max(y1, y)];
    }
  }
  return [[x0, x1], y0 <= y1 ? [y0, y1] : [0, 0]];
}

// The axes' ticks and the pixel mapping of a chart of `series` on a canvas of width w, height h.
function layout(series, w, h, xFrom = 0) {
  const [[x0, x1], [y0, y1]] = extent(series, xFrom);
  const x = niceTicks(x0, Math.max(x1, x0 + 1), 8, true);
  const y = niceTicks(y0, y1, 6);
  const px = (t) => MARGIN.left + ((w - MARGIN.left - MARGIN.right) * (t - x.lo)) / (x.hi - x.lo);
  const py = (v) => h - MARGIN.bottom - ((h - MARGIN.top - MARGIN.bottom) * (v - y.lo)) / (y.hi - y.lo);
  return { x, y, px, py };
}

function drawAxes(ctx, text, { x, y, px, py }, w, h, xLabel, yLabel) {
  const [left, right, top, bottom] = [MARGIN.left, w - MARGIN.right, MARGIN.top, h - MARGIN.bottom];
  ctx.lineWidth = 1;
  for (const v of y.ticks) {
    ctx.strokeStyle = v === 0 ? "#bbbbbb" : GRID_COLOR;
    ctx.beginPath();
    ctx.moveTo(left, py(v));
    ctx.lineTo(right, py(v));
    ctx.stroke();
    text(v.toFixed(y.decimals), left - 8, py(v), { align: "right", baseline: "middle", role: "yTick" });
  }
  ctx.strokeStyle = AXIS_COLOR;
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(left, bottom);
  ctx.lineTo(right, bottom);
  for (const t of x.ticks) {
    ctx.moveTo(px(t), bottom);
    ctx.lineTo(px(t), bottom + 5);
  }
  ctx.stroke();
  for (const t of x.ticks) text(String(t), px(t), bottom + 8, { align: "center", baseline: "top", role: "xTick" });
  text(xLabel, (left + right) / 2, h - 6, { align: "center", baseline: "bottom", role: "xLabel" });
  text(yLabel, 14, (top + bottom) / 2, { align: "center", baseline: "middle", role: "yLabel", angle: -Math.PI / 2 });
}

function drawSeries(ctx, { px, py }, { color, kind, radius = 3 }, points) {
  ctx.strokeStyle = color;
  ctx.fillStyle = color;
  if (kind === "line") {
    ctx.lineWidth = 2;
    ctx.beginPath();
    points.forEach(([t, v], i) => (i ? ctx.lineTo(px(t), py(v)) : ctx.moveTo(px(t), py(v))));
    ctx.stroke();
    return;
  }
  for (const [t, v] of points) {
    ctx.beginPath();
    ctx.arc(px(t), py(v), radius, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function drawLegend(ctx, text, series) {
  let x = MARGIN.left;
  const y = 38;
  for (const s of series) {
    ctx.fillStyle = s.color;
    ctx.strokeStyle = s.color;
    ctx.beginPath();
    if (s.kind === "line") {
      ctx.lineWidth = 2;
      ctx.moveTo(x, y);
      ctx.lineTo(x + 18, y);
      ctx.stroke();
    } else {
      ctx.arc(x + 9, y, s.radius || 3, 0, 2 * Math.PI);
      ctx.fill();
    }
    const width = text(s.label, x + 24, y, { baseline: "middle", role: "legend", color: "#222222" });
    x += 24 + width + 22;
  }
}

// Draws {title, xLabel, yLabel, series: [{label, color, kind: "line" | "dots", radius, points:
// [[step, value], ...]}], xFrom} on `canvas` and returns what it drew (also canvas.dataset.chart).
function drawChart(canvas, { title, xLabel, yLabel, series, xFrom = 0 }) {
  const ctx = canvas.getContext("2d");
  const [w, h] = [canvas.width, canvas.height];
  const texts = [];
  const text = (value, x, y, { align = "left", baseline = "alphabetic", role, angle = 0, color = AXIS_COLOR, font = FONT }) => {
    ctx.save();
    Object.assign(ctx, { font, fillStyle: color, textAlign: align, textBaseline: baseline });
    ctx.translate(x, y);
    ctx.rotate(angle);
    ctx.fillText(value, 0, 0);
    const width = ctx.measureText(value).width;
    ctx.restore();
    texts.push({ role, text: value });
    return width;
  };
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, w, h);
  const axes = layout(series, w, h, xFrom);
  text(title, MARGIN.left, 20, { role: "title", color: "#222222", font: TITLE_FONT, baseline: "middle" });
  drawAxes(ctx, text, axes, w, h, xLabel, yLabel);
  ctx.save();
  ctx.beginPath();
  ctx.rect(MARGIN.left - 6, MARGIN.top - 6, w - MARGIN.left - MARGIN.right + 12, h - MARGIN.top - MARGIN.bottom + 12);
  ctx.clip(); // a point at the range's edge shows whole, nothing spills over the labels
  for (const s of series) drawSeries(ctx, axes, s, s.points);
  ctx.restore();
  drawLegend(ctx, text, series);
  const drawn = {
    title,
    xLabel,
    yLabel,
    xRange: [axes.x.lo, axes.x.hi],
    yRange: [axes.y.lo, axes.y.hi],
    xTicks: texts.filter((t) => t.role === "xTick").map((t) => t.text),
    yTicks: texts.filter((t) => t.role === "yTick").map((t) => t.text),
    legend: series.map((s) => s.label),
    texts: texts.map((t) => t.text),
  };
  canvas.dataset.chart = JSON.stringify(drawn);
  canvas.setAttribute(
    "aria-label",
    `${title}. ${yLabel} (${drawn.yTicks[0]} to ${drawn.yTicks[drawn.yTicks.length - 1]}) against ` +
      `${xLabel} (${drawn.xTicks[0]} to ${drawn.xTicks[drawn.xTicks.length - 1]}). Legend: ${drawn.legend.join("; ")}.`,
  );
  return drawn;
}

// ---- what the chart shows of a model ----

const COLORS = { data: "#1f77b4", predicted: "#d62728", loop: "#2ca02c" };

// The model as the manifest names it: its kind and sizes, how it was trained, its tensors.
function modelTitle(model) {
  const info = model.folder.manifest.model || {};
  const about = [
    info.hidden_size ? `hidden ${info.hidden_size}` : null,
    info.factory ? `factory ${info.factory}` : null,
    info.trainer ? `${info.trainer} trainer` : null,
    Number.isInteger(info.seed) ? `seed ${info.seed}` : null,
  ].filter(Boolean);
  const kind = info.kind === "custom" ? "custom step module" : `${info.kind || "step"} model`;
  const names = (specs) => specs.map((spec) => spec.name).join(", ");
  return `${kind}${about.length ? ` (${about.join(", ")})` : ""}: ${names(model.inputs)} -> ${names(model.outputs)}`;
}

// The chart of a model fed back as it is: the data and its teacher-forced predictions where the
// page has them (the built-in sine), the closed loop; step 0 is the start value.
function chartOf(model, data, predicted, rollout) {
  const series = [];
  const at = (offset) => (v, t) => [t + offset, v];
  if (data.length) series.push({ label: "data (actual)", color: COLORS.data, kind: "dots", radius: 5, points: data.map(at(0)) });
  if (predicted.length) {
    const label = "teacher-forced prediction of the next point";
    series.push({ label, color: COLORS.predicted, kind: "dots", radius: 3.5, points: predicted.map(at(1)) });
  }
  series.push({ label: "closed loop from the start value", color: COLORS.loop, kind: "line", points: rollout.map(at(1)) });
  const name = model.source.name;
  const yLabel = model.outputSize > 1 ? `${name}[0] (output; the first of its ${model.outputSize} values)` : `${name} (output)`;
  return { title: modelTitle(model), xLabel: "time step", yLabel, series };
}

function builtInSeries() {
  // The built-in model's data: sin(t), t = linspace(2, 10, 21) (DESIGN.md); the training series.
  return Array.from({ length: 21 }, (_, i) => Math.fround(Math.sin(2 + (8 * i) / 20)));
}

// ---- the controls of a format 2 model: a field per input, the sampler's settings, a prompt ----

const rnn = { ready: null, error: null, timings: {}, selfCheck: [], checkedFiles: [], model: null };
window.rnn = rnn;

// The inputs the page asks for: every input but the token a prompt gives.
const asked = (model) => model.inputs.filter((spec) => !(model.vocabulary && spec.name === model.target.name));

function showControls(model) {
  const general = model.format !== 1;
  $("x0-row").hidden = general;
  $("fields").innerHTML = "";
  if (general) {
    for (const spec of asked(model)) {
      const label = document.createElement("label");
      const what = isTokens(spec) ? `token id, 0 to ${spec.vocabulary - 1}` : `${countOf(spec)} numbers, comma-separated`;
      label.append(`${spec.name} `);
      const field = document.createElement("input");
      field.type = "text";
      field.dataset.input = spec.name;
      field.title = what;
      field.value = isTokens(spec) ? "0" : new Array(countOf(spec)).fill("0").join(",");
      label.append(field, Object.assign(document.createElement("span"), { className: "muted", textContent: ` (${what})` }));
      $("fields").append(label);
    }
  }
  $("sampling").hidden = !model.sampled;
  $("prompt-row").hidden = !model.vocabulary;
  if (model.vocabulary) $("prompt").value = model.vocabulary.tokens[0];
  $("generated").hidden = !model.sampled;
  $("text-key").hidden = !model.sampled;
  $("text-title").textContent = modelTitle(model);
  $("stop").hidden = !model.sampled;
  $("plot").hidden = model.sampled;
}

// The fields' values, {name: token id or numbers}, checked.
function fieldValues(model) {
  const values = {};
  for (const spec of asked(model)) {
    const text = document.querySelector(`[data-input="${spec.name}"]`).value.trim();
    if (isTokens(spec)) {
      if (!/^[0-9]+$/.test(text)) throw new Error(`${spec.name} takes one token id, a whole number, got ${JSON.stringify(text)}`);
      values[spec.name] = Number(text);
    } else {
      values[spec.name] = text.split(",").map((item) => (item.trim() === "" ? NaN : Number(item)));
    }
  }
  return values;
}

function readSampler() {
  const number = (id) => Number($(id).value);
  const strategy = $("strategy").value;
  const seed = $("seed").value.trim();
  if (!/^[0-9]+$/.test(seed)) throw new Error(`the seed must be a whole number >= 0, got ${JSON.stringify(seed)}`);
  return new Sampler(strategy, {
    temperature: number("temperature"),
    topK: strategy === "top_k" ? number("top-k") : null,
    topP: strategy === "top_p" ? number("top-p") : null,
    seed,
  });
}

// ---- running ----

function readSteps() {
  const steps = Number($("steps").value);
  if (!Number.isInteger(steps) || steps < 1 || steps > 100000) throw new Error("steps must be 1 to 100000");
  return steps;
}

async function renderValues(model) {
  const steps = readSteps();
  let data = [];
  let predicted = [];
  let start;
  if (model.format === 1) {
    start = [Number($("x0").value)];
    if (!Number.isFinite(start[0])) throw new Error("the start value must be a number");
    data = model.inputSize === 1 && !model.config.data ? builtInSeries() : [];
    predicted = data.length && model.outputSize === 1 ? Array.from(await model.predict(data)).slice(0, -1) : [];
  } else start = model.firstInputs(fieldValues(model));
  const values = await model.generate(start, steps);
  const rollout = Array.from(values).filter((_, i) => i % model.outputSize === 0); // each step's first value
  rnn.chart = drawChart($("plot"), chartOf(model, data, predicted, rollout));
  rnn.lastRollout = rollout;
  return rollout;
}

const FRAME_MS = 16; // a sampled stream lets the page paint at least this often
let running = 0;

// A task boundary without setTimeout's clamping: where the browser may paint between two tokens.
const channel = new MessageChannel();
const nextTask = () => new Promise((resolve) => {
  channel.port1.onmessage = resolve;
  channel.port2.postMessage(null);
}); // the current sampled run; a newer one stops an older one's stream

// Draws `steps` tokens and shows each as it comes: after the prompt (teacher-forced) when the
// folder has a vocabulary, else from the token field. What it drew, when each token came (ms from
// the call, the prompt's run included) and how many frames the page painted meanwhile.
async function renderTokens(model, form = "step") {
  const run = ++running;
  const t0 = performance.now();
  const steps = readSteps();
  const sampler = readSampler();
  const inputs = model.firstInputs(fieldValues(model));
  let state = model.initial();
  let prompt = [];
  if (model.vocabulary) {
    prompt = model.vocabulary.encode($("prompt").value);
    if (!prompt.length) throw new Error("the prompt is empty: give it at least one token");
    state = await model.prime(inputs, prompt.slice(0, -1));
    inputs.set(model.target.name, model.tensor(model.target, prompt[prompt.length - 1]));
  }
  const shown = $("sampled-text");
  $("prompt-text").textContent = model.vocabulary ? model.vocabulary.decode(prompt) : "";
  shown.textContent = "";
  const result = { prompt, tokens: [], times: [], updates: 0, frames: 0, stopped: false };
  const frame = () => {
    result.frames++;
    if (!result.done) requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame); // counts the frames painted while the tokens stream
  const show = (token) => {
    shown.textContent += model.vocabulary ? model.vocabulary.decode([token]) : `${result.tokens.length ? " " : ""}${token}`;
    result.tokens.push(token);
    result.times.push(performance.now());
    result.updates++;
  };
  if (form === "step") {
    let painted = performance.now();
    for await (const token of model.sample(inputs, steps, sampler, state)) {
      if (run !== running) {
        result.stopped = true;
        break;
      }
      show(token);
      if (performance.now() - painted > FRAME_MS) {
        await nextTask(); // the page paints what came
        painted = performance.now();
      }
    }
  } else (await model.sampleFused(inputs, steps, sampler, state)).forEach(show);
  result.done = true;
  result.times = result.times.map((t) => t - t0);
  result.text = model.vocabulary ? model.vocabulary.decode(result.tokens) : null;
  result.shown = $("generated").textContent;
  rnn.lastSample = result;
  return result;
}

const render = (model) => (model.sampled ? renderTokens(model) : renderValues(model));

async function open(source) {
  say(`loading ${source.label}...`);
  const folder = await Folder.open(source);
  const model = await Model.load(folder);
  rnn.model = model;
  rnn.checkedFiles = folder.checked.slice();
  const form = model.sampled ? "step, a token at a time" : model.rolloutForm() || "step";
  $("form").textContent = `${form} (onnxruntime-web ${ort.env.versions.web}, wasm)`;
  $("x0").value = Math.fround(Math.sin(2)).toFixed(6); // the data's first point
  showControls(model);
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

function fail(error) {
  rnn.error = error.message;
  say(error.message, "error");
}

// For tests and the curious. Closed loop at batch 1 ({x0, steps, form}; format 2: {inputs, steps,
// form}) and a timing of it; sampled tokens ({prompt, inputs, steps, strategy, temperature, topK,
// topP, seed, form, stopAfterMs: the Stop button's call then}) set in the page's fields and run
// as the Run button runs them.
const start = (model, call) => (model.format === 1 ? [call.x0] : model.firstInputs(call.inputs || {}));
rnn.generate = async (call) => Array.from(await rnn.model.generate(start(rnn.model, call), call.steps, call.form || undefined));
rnn.time = async ({ repeats = 20, ...call }) => {
  await rnn.generate(call);
  const t0 = performance.now();
  for (let i = 0; i < repeats; i++) await rnn.generate(call);
  return (performance.now() - t0) / repeats;
};
rnn.stop = () => running++; // ends the sampled stream that runs, after its current token
rnn.sample = async (call) => {
  const model = rnn.model;
  const fields = { steps: call.steps, prompt: call.prompt, strategy: call.strategy, temperature: call.temperature };
  Object.assign(fields, { "top-k": call.topK, "top-p": call.topP, seed: call.seed });
  for (const [id, value] of Object.entries(fields)) if (value !== undefined) $(id).value = String(value);
  for (const [name, value] of Object.entries(call.inputs || {})) {
    document.querySelector(`[data-input="${name}"]`).value = Array.isArray(value) ? value.join(",") : String(value);
  }
  try {
    rnn.error = null;
    if (call.stopAfterMs !== undefined) setTimeout(rnn.stop, call.stopAfterMs);
    return await renderTokens(model, call.form || "step");
  } catch (error) {
    fail(error);
    return { error: error.message };
  }
};

$("run").addEventListener("click", () => rnn.model && render(rnn.model).catch(fail));
$("stop").addEventListener("click", rnn.stop);
$("picker").addEventListener("change", (event) => {
  rnn.ready = open(pickedFolder(event.target.files)).catch(fail);
});
const base = new URLSearchParams(location.search).get("folder") || "./model/";
rnn.ready = open(servedFolder(new URL(base, location.href))).catch(fail);
