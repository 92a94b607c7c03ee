#!/usr/bin/env node
// Runs the closed-loop context loop of an rnn-toolkit artifact folder with onnxruntime-node.
//
//   node generate.js FOLDER [--steps N] [--x0 VALUE] [--form step|rollout_rnn|rollout_loop]
//
// Reads manifest.json for the tensors' names and the initial state; uses the fused rollout
// model (one run for the whole loop) where the manifest lists one, else the step model once
// per step. Prints "step,y" CSV.
"use strict";

const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

function parse(argv) {
  const options = { folder: null, steps: 100, x0: Math.sin(2), form: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : fail(`${arg} needs a value`));
    if (arg === "--steps") options.steps = Number(value());
    else if (arg === "--x0") options.x0 = Number(value());
    else if (arg === "--form") options.form = value();
    else if (arg.startsWith("-")) fail(`unknown option ${arg}`);
    else options.folder = arg;
  }
  if (!options.folder) fail("usage: node generate.js FOLDER [--steps N] [--x0 VALUE] [--form FORM]");
  if (!Number.isInteger(options.steps) || options.steps < 1) fail("--steps must be a whole number >= 1");
  if (!Number.isFinite(options.x0)) fail("--x0 must be a number");
  if (options.form && !["step", "rollout_rnn", "rollout_loop"].includes(options.form)) {
    fail("--form must be step, rollout_rnn or rollout_loop");
  }
  return options;
}

function readManifest(folder) {
  let manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(folder, "manifest.json"), "utf8"));
  } catch (error) {
    fail(`${folder}/manifest.json cannot be read: ${error.message}`);
  }
  if (manifest.format !== "rnn-toolkit-artifact" || manifest.format_version !== 1) {
    fail(`${folder} is not an rnn-toolkit artifact folder of format version 1`);
  }
  return manifest;
}

function fileFor(manifest, role) {
  const entry = manifest.files.find((f) => f.role === role);
  return entry ? entry.name : null;
}

async function generate(options) {
  const manifest = readManifest(options.folder);
  const x = manifest.inputs[0];
  const y = manifest.outputs[0];
  const states = manifest.state;
  const form = options.form || (fileFor(manifest, "rollout_rnn") && options.steps > 1 ? "rollout_rnn" : "step");
  const file = fileFor(manifest, form === "step" ? "step_onnx" : form);
  if (!file) fail(`the manifest lists no model for form ${form}`);
  const session = await ort.InferenceSession.create(path.join(options.folder, file));
  const initial = states.map((s) => new ort.Tensor("float32", Float32Array.from(s.initial), [1, s.shape[1]]));
  const x0 = new ort.Tensor("float32", Float32Array.from([options.x0]), [1, x.shape[1]]);
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

generate(parse(process.argv.slice(2))).catch((error) => fail(error.message));
