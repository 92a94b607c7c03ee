// The context loop of an rnn-toolkit artifact folder in the browser, with onnxruntime-web (WASM).
// Reads manifest.json, checks the sha256 of every file it loads with Web Crypto before use (model.js)
// and runs the folder's test_data self-check. Format 1 and a format 2 model whose output is fed
// back as it is: draws the closed loop (the fused rollout where the manifest lists one, else the
// step model), for the built-in sine model the data and the teacher-forced predictions too. A
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
  const legend = [["#2ca02c", "— closed loop from the start value"]];
  if (data.length) legend.unshift(["#1f77b4", "● data"], ["#d62728", "● teacher-forced prediction of the next point"]);
  for (const [color, text] of legend) {
    ctx.fillStyle = color;
    ctx.fillText(text, x, 20);
    x += ctx.measureText(text).width + 18;
  }
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
  draw($("plot"), data, predicted, rollout);
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
