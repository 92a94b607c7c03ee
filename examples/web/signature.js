// A manifest's signature as the browser page and the Node example read it: the tensors' sizes at
// batch 1 and how generate closes the loop (runtime.manifest's feedback), with what either can
// feed checked by name. Shared by examples/web/model.js and examples/node/generate.js.

export const sizesOf = (spec) => spec.shape.filter((d) => d !== "batch");
export const countOf = (spec) => sizesOf(spec).reduce((a, b) => a * b, 1);
export const isTokens = (spec) => spec.role === "tokens";
export const isLogits = (spec) => spec.role === "logits";
export const batchOne = (spec) => spec.shape.map((d) => (d === "batch" ? 1 : d));

// How generate closes the loop: the declared feedback, or (as runtime.manifest's closed_loop) a
// one-input, one-output model whose float output has the input's shape.
function closedLoop(manifest, who) {
  if (manifest.feedback) return manifest.feedback;
  if (manifest.inputs.length === 1 && manifest.outputs.length === 1) {
    const [x, y] = [manifest.inputs[0], manifest.outputs[0]];
    if (x.dtype === "float32" && y.dtype === "float32" && !isTokens(x) && !isLogits(y)) {
      if (JSON.stringify(sizesOf(x)) === JSON.stringify(sizesOf(y))) return { output: y.name, input: x.name, via: "identity" };
    }
  }
  throw new Error(`the manifest declares no feedback (which output becomes which input): ${who} cannot close the loop`);
}

// {feedback, source: the fed-back output, target: the input it feeds} of a manifest whose inputs,
// outputs and states `who` ("this page", "this example") can feed; an Error naming what it cannot.
export function readSignature(manifest, who) {
  for (const spec of manifest.inputs) {
    if (spec.shape[0] !== "batch") throw new Error(`input ${spec.name}: ${who} needs the batch axis first, got ${JSON.stringify(spec.shape)}`);
    if (isTokens(spec) ? spec.dtype !== "int64" || spec.shape.length !== 1 : spec.dtype !== "float32") {
      throw new Error(`input ${spec.name} (${spec.dtype} ${JSON.stringify(spec.shape)}, role ${spec.role}) is not supported by ${who}`);
    }
  }
  for (const spec of [...manifest.outputs, ...manifest.state]) {
    if (spec.dtype !== "float32") throw new Error(`${spec.name} is ${spec.dtype}: ${who} runs float32 outputs and states only`);
  }
  const feedback = closedLoop(manifest, who);
  if (!["identity", "sample"].includes(feedback.via)) throw new Error(`feedback via ${feedback.via} is not supported by ${who}`);
  const source = manifest.outputs.find((t) => t.name === feedback.output);
  const target = manifest.inputs.find((t) => t.name === feedback.input);
  if (!source || !target) {
    throw new Error(`feedback names output ${feedback.output} and input ${feedback.input}, which the manifest does not list`);
  }
  if (feedback.via === "sample" && (!isLogits(source) || !isTokens(target) || countOf(source) !== target.vocabulary)) {
    throw new Error("feedback via sample needs a logits output of the tokens input's vocabulary");
  }
  if (feedback.via === "identity" && (isTokens(target) || countOf(source) !== countOf(target))) {
    throw new Error(`feedback via identity needs output ${source.name} to have input ${target.name}'s shape`);
  }
  return { feedback, source, target };
}
