#!/usr/bin/env node
// Runs the closed-loop context loop of an rnn-toolkit artifact folder with onnxruntime-node.
//
//   node generate.js FOLDER [--steps N] [--x0 VALUE] [--form FORM]
//        [--input NAME=v1,v2,...]... [--sample greedy|temperature|top_k|top_p] [--temperature T]
//        [--top-k K] [--top-p P] [--uniforms FILE] [--seed S] [--prompt TEXT] [--text]
//
// Reads manifest.json for the tensors' names and the initial state.
//
// A format 1 folder (one float32 input x, one output y): uses the fused rollout model (one run
// for the whole loop) where the manifest lists one, else the step model once per step; --x0 is
// the first input (default sin(2)). Prints "step,y" CSV. --form: step, rollout_rnn or rollout_loop.
//
// A format 2 folder (named inputs, int64 token inputs, logits, states of any rank, "feedback"):
// --input NAME=v1,v2,... gives an input's values (every value of one stream, C order; one id
// for a token input). Inputs other than the feedback input are held at their values for every
// step (default zeros, token 0); the feedback input's value is the first step's. Feedback
// "identity" feeds the output back as it is and prints "step,<output name>" (its first value);
// feedback "sample" draws the next token from the logits and prints "step,token":
//   --sample greedy       argmax, the first maximum (the default)
//   --sample temperature  inverse-CDF draw from softmax(logits / T) (--temperature T, default 1)
//   --sample top_k        the same over the K largest logits only (--top-k K)
//   --sample top_p        the same over the smallest set of ids whose probability reaches P (--top-p P)
//                         (--top-k / --top-p alone choose their strategy; the draw is runtime.sampling's)
//                         with one uniform u in [0, 1) a step: from --uniforms FILE (raw
//                         little-endian float32, exactly one per step, e.g. numpy's
//                         rng.random(steps, dtype=np.float32).tofile(FILE)) or else from a
//                         seeded generator (--seed S, a whole number >= 0, default 0): numpy's
//                         default_rng(S), reproduced in ../web/numpy_random.js, so one seed
//                         gives the tokens of runtime.Sampler(..., seed=S) at batch 1.
// The fused sampling forms (rollout_greedy, rollout_sample: one run for the whole loop) are used
// where the manifest lists them, unless --form step.
// Text: where manifest.json has a "vocabulary" (one string per id of the sampled token input),
// the rows are "step,token,text" (the token's string, a quoted CSV field); --prompt TEXT encodes
// TEXT (greedy longest match, ../web/sampling.js) and feeds its tokens one a step through the step
// model, teacher-forced (outputs dropped, the state kept), its last token the closed loop's first
// input, as the worked example's predict-then-generate; --text prints the prompt and the
// generated text instead of CSV, token by token as they come (the step loop).
// Errors print one line on stderr and exit 2.
"use strict";

const fs = require("fs");
const path = require("path");
const { pathToFileURL } = require("url");
const ort = require("onnxruntime-node");

// Shared with the browser page (ES modules): the manifest's signature, the draw, numpy's seeded
// generator and the vocabulary.
const SHARED = ["signature.js", "sampling.js"].map((name) => pathToFileURL(path.join(__dirname, "..", "web", name)).href);
let countOf, isTokens, batchOne; // from signature.js, once main has imported it

const USAGE =
  "usage: node generate.js FOLDER [--steps N] [--x0 VALUE] [--form FORM] [--input NAME=v1,v2,...]... " +
  "[--sample greedy|temperature|top_k|top_p] [--temperature T] [--top-k K] [--top-p P] [--uniforms FILE] [--seed S] " +
  "[--prompt TEXT] [--text]";
const CLASSIC_FORMS = ["step", "rollout_rnn", "rollout_loop"];
const SAMPLING_FORMS = ["rollout_greedy", "rollout_sample"];
const READ_VERSIONS = [1, 2];
const STRATEGIES = ["greedy", "temperature", "top_k", "top_p"];

function fail(message) {
  process.stderr.write(`error: ${String(message).split("\n")[0]}\n`);
  process.exit(2);
}

function parse(argv) {
  const options = {
    folder: null,
    steps: 100,
    x0: null,
    form: null,
    inputs: new Map(),
    sample: null,
    temperature: null,
    topK: null,
    topP: null,
    uniforms: null,
    seed: null,
    prompt: null,
    text: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : fail(`${arg} needs a value`));
    if (arg === "--steps") options.steps = Number(value());
    else if (arg === "--x0") options.x0 = Number(value());
    else if (arg === "--form") options.form = value();
    else if (arg === "--input") {
      const text = value();
      const equals = text.indexOf("=");
      if (equals < 1) fail(`--input must be NAME=v1,v2,..., got ${JSON.stringify(text)}`);
      const name = text.slice(0, equals);
      if (options.inputs.has(name)) fail(`--input ${name} is given twice`);
      options.inputs.set(name, text.slice(equals + 1));
    } else if (arg === "--sample") options.sample = value();
    else if (arg === "--temperature") options.temperature = Number(value());
    else if (arg === "--top-k") options.topK = Number(value());
    else if (arg === "--top-p") options.topP = Number(value());
    else if (arg === "--uniforms") options.uniforms = value();
    else if (arg === "--seed") options.seed = value().trim();
    else if (arg === "--prompt") options.prompt = value();
    else if (arg === "--text") options.text = true;
    else if (arg === "-h" || arg === "--help") {
      process.stdout.write(USAGE + "\n");
      process.exit(0);
    } else if (arg.startsWith("-")) fail(`unknown option ${arg}`);
    else if (options.folder) fail(`one FOLDER only, got ${options.folder} and ${arg}`);
    else options.folder = arg;
  }
  if (!options.folder) fail(USAGE);
  if (!Number.isInteger(options.steps) || options.steps < 1) fail("--steps must be a whole number >= 1");
  if (options.x0 !== null && !Number.isFinite(options.x0)) fail("--x0 must be a number");
  if (options.sample !== null && !STRATEGIES.includes(options.sample)) fail(`--sample must be ${STRATEGIES.join(", ")}`);
  if (options.topK !== null && !(Number.isInteger(options.topK) && options.topK >= 1)) fail("--top-k must be a whole number >= 1");
  if (options.topP !== null && !(options.topP > 0 && options.topP <= 1)) fail("--top-p must be a number in (0, 1]");
  if (options.temperature !== null && !(Number.isFinite(options.temperature) && options.temperature > 0)) {
    fail("--temperature must be a number > 0");
  }
  if (options.seed !== null && !/^[0-9]+$/.test(options.seed)) fail("--seed must be a whole number >= 0");
  return options;
}

function readManifest(folder) {
  let manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(folder, "manifest.json"), "utf8"));
  } catch (error) {
    fail(`${folder}/manifest.json cannot be read: ${error.message}`);
  }
  if (manifest.format !== "rnn-toolkit-artifact" || !READ_VERSIONS.includes(manifest.format_version)) {
    fail(`${folder} is not an rnn-toolkit artifact folder of format version ${READ_VERSIONS.join(" or ")}`);
  }
  return manifest;
}

function fileFor(manifest, role) {
  const entry = manifest.files.find((f) => f.role === role);
  return entry ? entry.name : null;
}

// ---- format 1: one float32 input x, one output y, fed back as it is -----------------------------

async function generateClassic(options, manifest) {
  const given = [
    [options.inputs.size > 0, "--input"],
    [options.sample !== null, "--sample"],
    [options.temperature !== null, "--temperature"],
    [options.topK !== null, "--top-k"],
    [options.topP !== null, "--top-p"],
    [options.uniforms !== null, "--uniforms"],
    [options.seed !== null, "--seed"],
    [options.prompt !== null, "--prompt"],
    [options.text, "--text"],
  ].filter(([used]) => used);
  if (given.length) fail(`${given[0][1]} is for format 2 folders; ${options.folder} is format 1 (use --x0)`);
  if (options.form && !CLASSIC_FORMS.includes(options.form)) fail(`--form must be ${CLASSIC_FORMS.join(", ")}`);
  const x0Value = options.x0 === null ? Math.sin(2) : options.x0;
  const x = manifest.inputs[0];
  const y = manifest.outputs[0];
  const states = manifest.state;
  const form = options.form || (fileFor(manifest, "rollout_rnn") && options.steps > 1 ? "rollout_rnn" : "step");
  const file = fileFor(manifest, form === "step" ? "step_onnx" : form);
  if (!file) fail(`the manifest lists no model for form ${form}`);
  const session = await ort.InferenceSession.create(path.join(options.folder, file));
  const initial = states.map((s) => new ort.Tensor("float32", Float32Array.from(s.initial), [1, s.shape[1]]));
  const x0 = new ort.Tensor("float32", Float32Array.from([x0Value]), [1, x.shape[1]]);
  const ys = [];
  if (form === "step") {
    let input = x0;
    let current = initial;
    for (let t = 0; t < options.steps; t++) {
      const feeds = { [x.name]: input };
      states.forEach((s, i) => (feeds[s.name] = current[i]));
      const out = await session.run(feeds);
      input = out[y.name];
      current = states.map((s) => out[s.output]);
      ys.push(input.data[0]);
    }
  } else {
    const feeds = { x0, steps: new ort.Tensor("int64", BigInt64Array.from([BigInt(options.steps)]), [1]) };
    states.forEach((s, i) => (feeds[s.name] = initial[i]));
    const out = await session.run(feeds);
    ys.push(...out.ys.data);
  }
  const lines = ["step,y"];
  ys.forEach((value, i) => lines.push(`${i + 1},${value.toPrecision(9)}`));
  process.stdout.write(lines.join("\n") + "\n");
}

// ---- format 2: named inputs, tokens, logits, states of any rank, declared feedback --------------

// The tensor of one input at batch 1, from its --input text or its default (zeros, token 0).
function inputTensor(spec, text) {
  if (isTokens(spec)) {
    let id = 0;
    if (text !== undefined) {
      if (!/^\s*[0-9]+\s*$/.test(text)) fail(`--input ${spec.name} takes one token id, a whole number, got ${JSON.stringify(text)}`);
      id = Number(text);
      if (id >= spec.vocabulary) fail(`--input ${spec.name}: token ${id} is out of range (vocabulary ${spec.vocabulary}: ids 0 to ${spec.vocabulary - 1})`);
    }
    return new ort.Tensor("int64", BigInt64Array.from([BigInt(id)]), [1]);
  }
  const count = countOf(spec);
  const values = new Float32Array(count);
  if (text !== undefined) {
    const items = text.split(",");
    if (items.length !== count) fail(`--input ${spec.name} needs ${count} values (shape ${JSON.stringify(spec.shape)}), got ${items.length}`);
    items.forEach((item, i) => {
      const number = item.trim() === "" ? NaN : Number(item);
      if (!Number.isFinite(number)) fail(`--input ${spec.name}: ${JSON.stringify(item)} is not a finite number`);
      values[i] = number;
    });
  }
  return new ort.Tensor("float32", values, batchOne(spec));
}

function readUniforms(file, steps) {
  let bytes;
  try {
    bytes = fs.readFileSync(file);
  } catch (error) {
    fail(`--uniforms ${file} cannot be read: ${error.message}`);
  }
  if (bytes.length !== 4 * steps) {
    fail(`--uniforms ${file} holds ${bytes.length / 4} float32 values, one a step needs ${steps} (${4 * steps} bytes)`);
  }
  const out = new Float32Array(steps);
  for (let t = 0; t < steps; t++) {
    out[t] = bytes.readFloatLE(4 * t);
    if (!(out[t] >= 0 && out[t] < 1)) fail(`--uniforms ${file}: value ${t} is ${out[t]}, not in [0, 1)`);
  }
  return out;
}

async function generateGeneral(options, manifest, shared) {
  let feedback, source, target;
  try {
    ({ feedback, source, target } = shared.readSignature(manifest, "this example"));
  } catch (error) {
    fail(error.message);
  }
  const sampled = feedback.via === "sample";
  if (options.x0 !== null) fail(`--x0 is for format 1 folders; give the first ${target.name} with --input ${target.name}=...`);
  for (const name of options.inputs.keys()) {
    if (!manifest.inputs.some((t) => t.name === name)) {
      fail(`--input ${name}: the model has no input ${name} (its inputs: ${manifest.inputs.map((t) => t.name).join(", ")})`);
    }
  }
  const flags = { sample: "--sample", temperature: "--temperature", topK: "--top-k", topP: "--top-p", uniforms: "--uniforms", seed: "--seed" };
  if (!sampled) {
    for (const [key, flag] of Object.entries(flags)) {
      if (options[key] !== null) fail(`${flag} is for models that sample tokens; ${feedback.output} is fed back as it is`);
    }
  }
  const strategy = options.sample || (options.topK !== null ? "top_k" : options.topP !== null ? "top_p" : "greedy");
  if (sampled && strategy === "greedy") {
    for (const key of ["temperature", "topK", "topP", "uniforms", "seed"]) {
      if (options[key] !== null) fail(`${flags[key]} is not used by --sample greedy`);
    }
  }
  if (strategy === "top_k" && options.topK === null) fail("--sample top_k needs --top-k K");
  if (strategy === "top_p" && options.topP === null) fail("--sample top_p needs --top-p P");
  if (options.topK !== null && strategy !== "top_k") fail(`--top-k is for --sample top_k, not ${strategy}`);
  if (options.topP !== null && strategy !== "top_p") fail(`--top-p is for --sample top_p, not ${strategy}`);
  if (options.uniforms !== null && options.seed !== null) fail("give --uniforms or --seed, not both");
  const allowed = ["step", ...(sampled ? SAMPLING_FORMS : [])];
  if (options.form && !allowed.includes(options.form)) fail(`--form must be ${allowed.join(" or ")} for this folder`);
  let sampler = null;
  if (sampled) {
    try {
      sampler = new shared.Sampler(strategy, {
        temperature: options.temperature === null ? 1 : options.temperature,
        topK: options.topK,
        topP: options.topP,
        seed: options.seed === null ? 0 : options.seed,
      });
    } catch (error) {
      fail(error.message);
    }
  }
  const uniforms =
    sampled && !sampler.greedy
      ? options.uniforms !== null
        ? readUniforms(options.uniforms, options.steps)
        : sampler.uniforms(options.steps)
      : null;

  const vocabulary = readVocabulary(options, manifest, target, sampled, shared);
  const prompt = promptIds(options, vocabulary, target);
  const inputs = new Map(manifest.inputs.map((spec) => [spec.name, inputTensor(spec, options.inputs.get(spec.name))]));
  let states = manifest.state.map((s) => new ort.Tensor("float32", Float32Array.from(s.initial), batchOne(s)));
  const fused = sampled ? (strategy === "greedy" ? "rollout_greedy" : "rollout_sample") : null;
  let form = options.form || (fused && fileFor(manifest, fused) && !options.text ? fused : "step");
  if (form !== "step" && form !== fused) fail(`--form ${form} does not run --sample ${strategy}`);
  const file = fileFor(manifest, form === "step" ? "step_onnx" : form);
  if (!file) fail(`the manifest lists no model for form ${form}`);
  const session = await ort.InferenceSession.create(path.join(options.folder, file));
  const step = form === "step" ? session : await ort.InferenceSession.create(path.join(options.folder, fileFor(manifest, "step_onnx")));
  const run = async (feedsIn) => {
    const feeds = Object.fromEntries(feedsIn);
    manifest.state.forEach((s, i) => (feeds[s.name] = states[i]));
    const out = await step.run(feeds);
    states = manifest.state.map((s) => out[s.output]);
    return out;
  };
  const tokenTensor = (id) => new ort.Tensor("int64", BigInt64Array.from([BigInt(id)]), [1]);
  for (let i = 0; i < prompt.length; i++) {  // teacher-forced: every token but the last, outputs dropped
    inputs.set(target.name, tokenTensor(prompt[i]));
    if (i + 1 < prompt.length) await run(inputs);
  }

  const print = printer(options, sampled, source, vocabulary);
  if (form === "step") {
    for (let t = 0; t < options.steps; t++) {
      const result = (await run(inputs))[source.name];
      if (sampled) {
        const token = sampler.draw(result.data, uniforms ? uniforms[t] : 0);
        print(token);
        inputs.set(target.name, tokenTensor(token));
      } else {
        print(result.data[0]);
        inputs.set(target.name, new ort.Tensor("float32", Float32Array.from(result.data), batchOne(target)));
      }
    }
  } else {
    // token0, *other inputs, *state, then steps (greedy) or uniforms, temperature, top_k, top_p
    const feeds = { token0: inputs.get(target.name) };
    for (const [name, tensor] of inputs) if (name !== target.name) feeds[name] = tensor;
    manifest.state.forEach((s, i) => (feeds[s.name] = states[i]));
    if (form === "rollout_greedy") {
      feeds.steps = new ort.Tensor("int64", BigInt64Array.from([BigInt(options.steps)]), [1]);
    } else {
      feeds.uniforms = new ort.Tensor("float32", uniforms, [options.steps, 1]);
      const settings = sampler.settings(target.vocabulary);
      feeds.temperature = new ort.Tensor("float32", Float32Array.from([settings.temperature]), [1]);
      feeds.top_k = new ort.Tensor("int64", BigInt64Array.from([BigInt(settings.topK)]), [1]);
      feeds.top_p = new ort.Tensor("float32", Float32Array.from([settings.topP]), [1]);
    }
    const out = await session.run(feeds);
    for (const token of out.tokens.data) print(Number(token));
  }
  print.end();
}

// The manifest's vocabulary (a shared Vocabulary), or null where it has none.
function readVocabulary(options, manifest, target, sampled, shared) {
  if (manifest.vocabulary === undefined) {
    if (options.prompt !== null || options.text) {
      fail(`${options.prompt !== null ? "--prompt" : "--text"} needs a vocabulary in manifest.json (export the model with vocabulary=[...]); ${options.folder} has none`);
    }
    return null;
  }
  if (!sampled) fail("manifest.json has a vocabulary, but its model does not sample tokens");
  try {
    return new shared.Vocabulary(manifest.vocabulary, target.vocabulary);
  } catch (error) {
    fail(`manifest.json: ${error.message}`);
  }
}

// The token ids of --prompt (none without one), checked against the other options.
function promptIds(options, vocabulary, target) {
  if (options.prompt === null) return [];
  if (options.inputs.has(target.name)) fail(`give --prompt or --input ${target.name}=ID, not both`);
  let ids;
  try {
    ids = vocabulary.encode(options.prompt);
  } catch (error) {
    fail(`--prompt: ${error.message}`);
  }
  if (!ids.length) fail("--prompt is empty: it needs at least one token");
  return ids;
}

// Prints each value as it comes: CSV rows (a text column where there is a vocabulary), or with
// --text the prompt and then each token's text.
function printer(options, sampled, source, vocabulary) {
  let t = 0;
  const csvField = (text) => `"${text.replaceAll('"', '""')}"`;
  if (options.text) process.stdout.write(options.prompt === null ? "" : options.prompt);
  else process.stdout.write(`step,${sampled ? "token" : source.name}${vocabulary ? ",text" : ""}\n`);
  const print = (value) => {
    t++;
    if (options.text) process.stdout.write(vocabulary.tokens[value]);
    else if (!sampled) process.stdout.write(`${t},${value.toPrecision(9)}\n`);
    else process.stdout.write(`${t},${value}${vocabulary ? "," + csvField(vocabulary.tokens[value]) : ""}\n`);
  };
  print.end = () => options.text && process.stdout.write("\n");
  return print;
}

async function main(options) {
  const manifest = readManifest(options.folder);
  if (manifest.format_version === 1) await generateClassic(options, manifest);
  else {
    const shared = Object.assign({}, ...(await Promise.all(SHARED.map((url) => import(url)))));
    ({ countOf, isTokens, batchOne } = shared);
    await generateGeneral(options, manifest, shared);
  }
}

main(parse(process.argv.slice(2))).catch((error) => fail(error.message));
