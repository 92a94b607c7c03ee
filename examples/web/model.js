// An rnn-toolkit artifact folder in onnxruntime-web: the folder (every file checked against the
// manifest's sha256 with Web Crypto before use) and its model, format 1 (one float input fed back
// as it is) or format 2 (named inputs, int64 token ids, states of any rank, the manifest's
// feedback: the output fed back as it is, or the next token sampled from the logits).
import * as ort from "./ort/ort.wasm.min.mjs";
import { Vocabulary } from "./sampling.js";
import { batchOne, countOf, isTokens, readSignature } from "./signature.js";

const READ_VERSIONS = [1, 2];
const ROLLOUT_FORMS = ["rollout_rnn", "rollout_loop"];
const SEQUENCE_FORMS = ["sequence_rnn", "sequence_loop"];
const SAMPLING_FORMS = ["rollout_greedy", "rollout_sample"];
const FORMS = [...ROLLOUT_FORMS, ...SEQUENCE_FORMS, ...SAMPLING_FORMS];

async function sha256(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- a folder: served next to the page (./model/) or picked with the file input ----

export function servedFolder(base) {
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

export function pickedFolder(fileList) {
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

export class Folder {
  constructor(source, manifest) {
    this.source = source;
    this.manifest = manifest;
    this.checked = [];
  }

  static async open(source) {
    const manifest = JSON.parse(new TextDecoder().decode(await source.read("manifest.json")));
    if (manifest.format !== "rnn-toolkit-artifact") throw new Error("manifest.json is not an rnn-toolkit manifest");
    if (!READ_VERSIONS.includes(manifest.format_version)) {
      throw new Error(
        `this page runs format versions ${READ_VERSIONS.join(" and ")}; this folder's manifest is format_version ` +
          `${manifest.format_version}: update the page (examples/web) to the toolkit that wrote the folder`,
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

export class Model {
  static async load(folder) {
    const model = new Model();
    const m = folder.manifest;
    model.folder = folder;
    model.format = m.format_version;
    model.inputs = m.inputs;
    model.outputs = m.outputs;
    model.states = m.state;
    const { feedback, source, target } = readSignature(m, "this page");
    model.feedback = feedback;
    model.source = source; // the fed-back output (the logits when sampled)
    model.target = target; // the input it feeds
    model.sampled = model.feedback.via === "sample";
    model.vocabulary = m.vocabulary === undefined ? null : new Vocabulary(m.vocabulary, target.vocabulary);
    if (model.vocabulary && !model.sampled) throw new Error("the manifest has a vocabulary, but its model does not sample tokens");
    model.sessions = {};
    const step = folder.entry("step_onnx");
    if (!step) throw new Error("the manifest lists no step model");
    model.sessions.step = await ort.InferenceSession.create(await folder.checkedBytes(step));
    for (const form of FORMS) {
      const entry = folder.entry(form);
      if (entry) model.sessions[form] = await ort.InferenceSession.create(await folder.checkedBytes(entry));
    }
    const config = folder.entry("config");
    model.config = config ? JSON.parse(new TextDecoder().decode(await folder.checkedBytes(config))) : {};
    return model;
  }

  get inputSize() {
    return countOf(this.target);
  }

  get outputSize() {
    return countOf(this.source);
  }

  initial() {
    return this.states.map((s) => new ort.Tensor("float32", Float32Array.from(s.initial), batchOne(s)));
  }

  // One input at batch 1: a token id (a number) or the values of a float input (an array).
  tensor(spec, value) {
    if (isTokens(spec)) {
      if (!(Number.isInteger(value) && value >= 0 && value < spec.vocabulary)) {
        throw new Error(`${spec.name}: token ${value} is out of range (vocabulary ${spec.vocabulary}: ids 0 to ${spec.vocabulary - 1})`);
      }
      return new ort.Tensor("int64", BigInt64Array.from([BigInt(value)]), [1]);
    }
    const values = Array.from(value);
    if (values.length !== countOf(spec) || !values.every(Number.isFinite)) {
      throw new Error(`${spec.name} needs ${countOf(spec)} finite numbers (shape ${JSON.stringify(spec.shape)}), got ${JSON.stringify(values)}`);
    }
    return new ort.Tensor("float32", Float32Array.from(values), batchOne(spec));
  }

  // The first step's inputs, {name: value} (missing ones: zeros, token 0), as tensors by name.
  firstInputs(values = {}) {
    const tensors = new Map();
    for (const spec of this.inputs) {
      const value = values[spec.name] ?? (isTokens(spec) ? 0 : new Array(countOf(spec)).fill(0));
      tensors.set(spec.name, this.tensor(spec, value));
    }
    return tensors;
  }

  // One run of the step model: (its outputs by name, the next state).
  async step(inputs, state) {
    const feeds = Object.fromEntries(inputs);
    this.states.forEach((s, i) => (feeds[s.name] = state[i]));
    const out = await this.sessions.step.run(feeds);
    return [out, this.states.map((s) => out[s.output])];
  }

  rolloutForm() {
    if (this.sampled) return null;
    return ROLLOUT_FORMS.find((f) => this.sessions[f]) || null;
  }

  // A fused form's feeds in the runtime's order: the fed-back input, the others, the states, then
  // what the form adds (steps, or the sampler's uniforms and settings).
  fusedFeeds(session, inputs, state, extra) {
    const values = [inputs.get(this.target.name), ...[...inputs].filter(([n]) => n !== this.target.name).map(([, t]) => t)];
    values.push(...state, ...extra);
    if (values.length !== session.inputNames.length) throw new Error(`a fused form takes ${session.inputNames.length} inputs, not ${values.length}`);
    return Object.fromEntries(session.inputNames.map((name, i) => [name, values[i]]));
  }

  // The closed loop fed back as it is, at batch 1, from `inputs` (a Map of tensors, or for format
  // 1 the start value x0): the fused rollout (one run) or the step loop; the fed-back output's
  // values, step after step.
  async generate(inputs, steps, form = this.rolloutForm() || "step") {
    if (!(inputs instanceof Map)) inputs = new Map([[this.target.name, this.tensor(this.target, inputs)]]);
    if (form !== "step") {
      const session = this.sessions[form];
      if (!session) throw new Error(`this folder has no ${form} form`);
      const steps64 = new ort.Tensor("int64", BigInt64Array.from([BigInt(steps)]), [1]);
      const out = await session.run(this.fusedFeeds(session, inputs, this.initial(), [steps64]));
      return Float32Array.from(out[session.outputNames[0]].data);
    }
    let state = this.initial();
    const ys = new Float32Array(steps * this.outputSize);
    for (let t = 0; t < steps; t++) {
      const [out, next] = await this.step(inputs, state);
      state = next;
      const y = out[this.source.name];
      ys.set(y.data, t * this.outputSize);
      inputs.set(this.target.name, new ort.Tensor("float32", Float32Array.from(y.data), batchOne(this.target)));
    }
    return ys;
  }

  // Teacher-forced one-step predictions over a 1-D series (format 1, input size 1).
  async predict(series) {
    const form = SEQUENCE_FORMS.find((f) => this.sessions[f]);
    if (form) {
      const session = this.sessions[form];
      const xs = new ort.Tensor("float32", Float32Array.from(series), [series.length, 1, 1]);
      const out = await session.run(Object.fromEntries(session.inputNames.map((n, i) => [n, [xs, ...this.initial()][i]])));
      return Float32Array.from(out[session.outputNames[0]].data);
    }
    const ys = new Float32Array(series.length);
    let state = this.initial();
    for (let t = 0; t < series.length; t++) {
      const [out, next] = await this.step(new Map([[this.target.name, this.tensor(this.target, [series[t]])]]), state);
      state = next;
      ys[t] = out[this.source.name].data[0];
    }
    return ys;
  }

  // ---- sampled feedback ----

  // The state after feeding `tokens` teacher-forced (the other inputs held at `inputs`' values).
  async prime(inputs, tokens) {
    let state = this.initial();
    for (const token of tokens) {
      inputs.set(this.target.name, this.tensor(this.target, token));
      state = (await this.step(inputs, state))[1];
    }
    return state;
  }

  // `steps` sampled tokens from `inputs` and `state`, one at a time as each is drawn (the step
  // loop; `sampler` a sampling.js Sampler, its uniforms drawn up front as the runtime does).
  async *sample(inputs, steps, sampler, state = this.initial()) {
    const uniforms = sampler.uniforms(steps);
    for (let t = 0; t < steps; t++) {
      const [out, next] = await this.step(inputs, state);
      state = next;
      const token = sampler.draw(out[this.source.name].data, uniforms[t]);
      inputs.set(this.target.name, this.tensor(this.target, token));
      yield token;
    }
  }

  // The same tokens in one run of the fused sampling form (rollout_greedy or rollout_sample).
  async sampleFused(inputs, steps, sampler, state = this.initial()) {
    const form = sampler.greedy ? "rollout_greedy" : "rollout_sample";
    const session = this.sessions[form];
    if (!session) throw new Error(`this folder has no ${form} form`);
    let extra;
    if (sampler.greedy) extra = [new ort.Tensor("int64", BigInt64Array.from([BigInt(steps)]), [1])];
    else {
      const s = sampler.settings(this.target.vocabulary);
      extra = [
        new ort.Tensor("float32", sampler.uniforms(steps), [steps, 1]),
        new ort.Tensor("float32", Float32Array.from([s.temperature]), [1]),
        new ort.Tensor("int64", BigInt64Array.from([BigInt(s.topK)]), [1]),
        new ort.Tensor("float32", Float32Array.from([s.topP]), [1]),
      ];
    }
    const out = await session.run(this.fusedFeeds(session, inputs, state, extra));
    return Array.from(out[session.outputNames[0]].data, Number);
  }
}
