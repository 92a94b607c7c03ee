// The next token from a model's logits as the Python runtime draws it (runtime/sampling.py's
// docstring pins the draw): greedy, temperature, top-k and top-p, float32 throughout, each draw fed
// one uniform of numpy's default generator for the seed (numpy_random.js), so that a seed gives
// the tokens of `runtime.Sampler(strategy, ..., seed=seed)` at batch 1. And a vocabulary's text in
// and out (runtime/vocabulary.py: greedy longest match, concatenation). Shared by the browser
// page (app.js) and the Node example (examples/node/generate.js).
import { checkedSeed, defaultRng } from "./numpy_random.js";

export const STRATEGIES = ["greedy", "temperature", "top_k", "top_p"];
export const MIN_TEMPERATURE = 1e-6; // runtime.sampling.MIN_TEMPERATURE
const U_MAX = Math.fround(1 - 2 ** -24); // runtime.sampling.U_MAX

// The first maximum's index.
export function argmax(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

// The pinned draw, in float32: z = logits / T; top-k: every z below the k-th largest becomes -inf
// (ties kept); p = softmax(z); top-p: s = p sorted descending, m = min(count(cumsum(s) < P), V - 1),
// every p below s[m] becomes 0 (ties kept); cdf = cumsum(p) in id order,
// token = min(count(cdf <= u * cdf[V - 1]), V - 1).
export function drawToken(logits, u, temperature, topK = null, topP = null) {
  const f = Math.fround;
  const V = logits.length;
  const t = f(temperature);
  const z = new Float32Array(V);
  for (let i = 0; i < V; i++) z[i] = f(logits[i] / t);
  if (topK !== null && topK < V) {
    const threshold = Float32Array.from(z).sort().reverse()[Math.max(topK, 1) - 1];
    for (let i = 0; i < V; i++) if (z[i] < threshold) z[i] = -Infinity;
  }
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (z[i] > max) max = z[i];
  let sum = 0;
  for (let i = 0; i < V; i++) {
    z[i] = f(Math.exp(f(z[i] - max)));
    sum = f(sum + z[i]);
  }
  const p = z.map((e) => f(e / sum));
  if (topP !== null && topP < 1) {
    const ordered = Float32Array.from(p).sort().reverse();
    let mass = 0;
    let m = 0;
    for (let i = 0; i < V; i++) {
      mass = f(mass + ordered[i]);
      if (mass < f(topP)) m++;
    }
    const threshold = ordered[Math.min(m, V - 1)];
    for (let i = 0; i < V; i++) if (p[i] < threshold) p[i] = 0;
  }
  let cdf = 0;
  const cdfs = new Float32Array(V);
  for (let i = 0; i < V; i++) {
    cdf = f(cdf + p[i]);
    cdfs[i] = cdf;
  }
  const threshold = f(Math.min(Math.max(u, 0), U_MAX) * cdfs[V - 1]);
  let count = 0;
  for (let i = 0; i < V; i++) if (cdfs[i] <= threshold) count++;
  return Math.min(count, V - 1);
}

// runtime.Sampler at batch 1: the strategy and its settings checked as the runtime checks them,
// numpy's generator for `seed` (a whole number >= 0: a Number, BigInt or decimal text).
export class Sampler {
  constructor(strategy = "temperature", { temperature = 1, topK = null, topP = null, seed = 0 } = {}) {
    if (!STRATEGIES.includes(strategy)) throw new Error(`the strategy must be one of ${STRATEGIES.join(", ")}, got ${strategy}`);
    if (!(Number.isFinite(temperature) && temperature >= MIN_TEMPERATURE && temperature <= 1e30)) {
      throw new Error(`the temperature must be a number from ${MIN_TEMPERATURE} to 1e30, got ${temperature}`);
    }
    if (strategy === "top_k" && !(Number.isInteger(topK) && topK >= 1)) throw new Error(`top_k needs top-k, a whole number >= 1, got ${topK}`);
    if (strategy === "top_p" && !(topP > 0 && topP <= 1)) throw new Error(`top_p needs top-p, a number in (0, 1], got ${topP}`);
    this.strategy = strategy;
    this.temperature = temperature;
    this.topK = strategy === "top_k" ? topK : null;
    this.topP = strategy === "top_p" ? topP : null;
    this.seed = checkedSeed(seed);
    this.rng = defaultRng(this.seed);
  }

  get greedy() {
    return this.strategy === "greedy";
  }

  // The next `steps` uniforms (runtime.Sampler.uniforms(steps, 1)); greedy draws none: zeros.
  uniforms(steps) {
    return this.greedy ? new Float32Array(steps) : this.rng.random(steps);
  }

  draw(logits, u) {
    return this.greedy ? argmax(logits) : drawToken(logits, u, this.temperature, this.topK, this.topP);
  }

  // What the fused rollout_sample form takes besides the uniforms (runtime.Sampler.feeds).
  settings(vocabulary) {
    return {
      temperature: this.temperature,
      topK: this.topK === null ? vocabulary : Math.min(this.topK, vocabulary),
      topP: this.topP === null ? 1 : this.topP,
    };
  }
}

// A manifest's "vocabulary": one distinct, non-empty string per token id.
export class Vocabulary {
  constructor(tokens, size) {
    if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string" && t.length > 0)) {
      throw new Error("the manifest's vocabulary must be a list of non-empty strings");
    }
    if (new Set(tokens).size !== tokens.length) throw new Error("the manifest's vocabulary lists a token twice");
    if (size !== undefined && tokens.length !== size) {
      throw new Error(`the manifest's vocabulary has ${tokens.length} tokens, the token input ${size} ids`);
    }
    this.tokens = tokens;
    this.byLength = tokens.map((token, id) => [token, id]).sort((a, b) => b[0].length - a[0].length || a[1] - b[1]);
  }

  get size() {
    return this.tokens.length;
  }

  // Token ids of `text`: at each place the longest token that matches there.
  encode(text) {
    const ids = [];
    let at = 0;
    while (at < text.length) {
      const found = this.byLength.find(([token]) => text.startsWith(token, at));
      if (!found) {
        const position = Array.from(text.slice(0, at)).length; // in characters, as Python counts them
        throw new Error(`no token of the vocabulary matches the text at position ${position} (${JSON.stringify(Array.from(text.slice(at))[0])})`);
      }
      ids.push(found[1]);
      at += found[0].length;
    }
    return ids;
  }

  decode(ids) {
    return ids
      .map((id) => {
        if (!(Number.isInteger(id) && id >= 0 && id < this.tokens.length)) throw new Error(`token id ${id} is out of the vocabulary`);
        return this.tokens[id];
      })
      .join("");
  }
}
