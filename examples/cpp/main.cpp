// rnn_generate: loads an artifact folder's step.torchscript.pt with libtorch and runs the
// closed-loop context loop (an output fed back as the next input), printing CSV.
//
//   rnn_generate FOLDER [--steps N] [--x0 VALUE] [--hidden H] [--form step]
//                [--input NAME=v1,v2,...]... [--sample greedy|temperature|top_k|top_p] [--temperature T]
//                [--top-k K] [--top-p P] [--uniforms FILE] [--seed S] [--prompt TEXT] [--text]
//   rnn_generate --print-uniforms N [--seed S]
//
// A format 1 folder (one float32 input x, one output y): the state tensors (any number, in
// manifest order: h for Elman and GRU, h and c for LSTM) and their initial values come from
// FOLDER/manifest.json; --hidden H instead gives one zero state of size H. --x0 is the first
// input (default sin(2)). Prints "step,y".
//
// A format 2 folder (named inputs, int64 token inputs, logits, states of any rank, "feedback"),
// as examples/node/generate.js runs it: --input NAME=v1,v2,... gives an input's values (every
// value of one stream, C order; one id for a token input); inputs other than the feedback input
// are held for every step (default zeros, token 0), the feedback input's value is the first
// step's. Feedback "identity" feeds the output back as it is and prints "step,<output name>"
// (its first value); feedback "sample" draws the next token from the logits and prints
// "step,token": --sample greedy (argmax, first maximum; the default) or --sample temperature
// (inverse-CDF draw from softmax(logits / T), --temperature T default 1; top_k / top_p: over the
// K largest logits (--top-k K) or the smallest set of ids whose probability reaches P (--top-p P),
// the draw runtime.sampling pins; --top-k / --top-p alone choose their strategy; one uniform a step from
// --uniforms FILE, raw little-endian float32, exactly one a step, or else from numpy's generator
// seeded with --seed S (default 0; 0 to 2**64 - 1): numpy.random.default_rng(S).random(steps,
// dtype=float32), the uniforms runtime.Sampler(strategy, ..., seed=S) draws at batch 1, so one
// seed gives the tokens of the Python runtime's generate (numpy_random.h). --print-uniforms N
// prints that generator's first N uniforms, one a line, and runs no model.
// Text: where manifest.json has a "vocabulary" (one string per id of the sampled token input),
// the rows are "step,token,text" (the token's string, a quoted CSV field); --prompt TEXT encodes
// TEXT (greedy longest match, vocabulary.h) and feeds its tokens one a step, teacher-forced
// (outputs dropped, the state kept), its last token the closed loop's first input, as the worked
// example's predict-then-generate; --text prints the prompt and the generated text instead of
// CSV, token by token as they come.
// This example always runs the step model once per step: the fused forms (rollout_*) are
// ONNX models, run by the Python runtime and the Node example.
// Errors print one line on stderr and exit 2.
#include <torch/script.h>

#include "json_reader.h"
#include "numpy_random.h"
#include "vocabulary.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

const char* const USAGE =
    "usage: rnn_generate FOLDER [--steps N] [--x0 VALUE] [--hidden H] [--form step] [--input NAME=v1,v2,...]... "
    "[--sample greedy|temperature|top_k|top_p] [--temperature T] [--top-k K] [--top-p P] [--uniforms FILE] [--seed S] "
    "[--prompt TEXT] [--text]\n       rnn_generate --print-uniforms N [--seed S]\n"
    "  runs the step model once per step (the fused rollout forms are for the Python runtime and Node)";

struct Options {
  std::string folder;
  long steps = 100;
  bool x0_given = false;
  double x0 = 0.9092974268256817;  // sin(2), the first point of the reference data
  long hidden = -1;
  std::string form;
  std::vector<std::pair<std::string, std::string>> inputs;  // --input NAME=VALUES, in the order given
  std::string sample;
  bool temperature_given = false;
  double temperature = 1.0;
  long top_k = 0;      // 0: not given
  double top_p = 0.0;  // 0: not given
  std::string uniforms;
  bool seed_given = false;
  uint64_t seed = 0;
  long print_uniforms = 0;  // 0: not given
  bool prompt_given = false;
  std::string prompt;
  bool text = false;
};

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "error: " << message.substr(0, message.find('\n')) << std::endl;
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(arg + " needs a value");
      return argv[++i];
    };
    try {
      if (arg == "--steps") options.steps = std::stol(value());
      else if (arg == "--x0") options.x0 = std::stod(value()), options.x0_given = true;
      else if (arg == "--hidden") options.hidden = std::stol(value());
      else if (arg == "--form") options.form = value();
      else if (arg == "--input") {
        const std::string text = value();
        const auto equals = text.find('=');
        if (equals == std::string::npos || equals == 0) fail("--input must be NAME=v1,v2,..., got \"" + text + "\"");
        const std::string name = text.substr(0, equals);
        for (const auto& given : options.inputs)
          if (given.first == name) fail("--input " + name + " is given twice");
        options.inputs.emplace_back(name, text.substr(equals + 1));
      } else if (arg == "--sample") options.sample = value();
      else if (arg == "--temperature") options.temperature = std::stod(value()), options.temperature_given = true;
      else if (arg == "--top-k") {
        options.top_k = std::stol(value());
        if (options.top_k < 1) fail("--top-k must be a whole number >= 1");
      } else if (arg == "--top-p") {
        options.top_p = std::stod(value());
        if (!(options.top_p > 0 && options.top_p <= 1)) fail("--top-p must be a number in (0, 1]");
      } else if (arg == "--uniforms") options.uniforms = value();
      else if (arg == "--seed") {
        const std::string text = value();
        if (!std::regex_match(text, std::regex("[0-9]+"))) fail("--seed must be a whole number from 0 to 2**64 - 1");
        options.seed = std::stoull(text), options.seed_given = true;  // out_of_range: caught below
      } else if (arg == "--print-uniforms") {
        options.print_uniforms = std::stol(value());
        if (options.print_uniforms < 1) fail("--print-uniforms must be a whole number >= 1");
      } else if (arg == "--prompt") options.prompt = value(), options.prompt_given = true;
      else if (arg == "--text") options.text = true;
      else if (arg == "-h" || arg == "--help") {
        std::cout << USAGE << "\n";
        std::exit(0);
      } else if (!arg.empty() && arg[0] == '-') fail("unknown option " + arg);
      else if (!options.folder.empty()) fail("one FOLDER only, got " + options.folder + " and " + arg);
      else options.folder = arg;
    } catch (const std::logic_error&) {
      fail(arg == "--seed" ? "--seed must be a whole number from 0 to 2**64 - 1" : "bad value for " + arg);
    }
  }
  if (options.print_uniforms > 0) {
    if (!options.folder.empty()) fail("--print-uniforms runs no model: give --seed S and no FOLDER");
    return options;
  }
  if (options.folder.empty()) fail(std::string(USAGE).substr(0, std::string(USAGE).find('\n')));
  if (options.steps < 1) fail("--steps must be >= 1");
  if (!options.form.empty() && options.form != "step")
    fail("--form must be step: this example runs the step model once per step");
  if (!options.sample.empty() && options.sample != "greedy" && options.sample != "temperature" &&
      options.sample != "top_k" && options.sample != "top_p")
    fail("--sample must be greedy, temperature, top_k, top_p");
  if (options.temperature_given && !(std::isfinite(options.temperature) && options.temperature > 0))
    fail("--temperature must be a number > 0");
  return options;
}

std::string read_text(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) fail(path + " cannot be read");
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// ---- format 1 ---------------------------------------------------------------------------------

// The initial row of every state tensor, in manifest order: a deliberately small reader for
// the one field it needs ("initial" appears only in the state entries), not a JSON parser.
std::vector<std::vector<float>> initial_states(const std::string& document) {
  const std::regex initial(R"("initial"\s*:\s*\[([^\]]*)\])");
  std::vector<std::vector<float>> states;
  for (auto it = std::sregex_iterator(document.begin(), document.end(), initial); it != std::sregex_iterator(); ++it) {
    std::vector<float> values;
    std::stringstream numbers((*it)[1].str());
    std::string item;
    while (std::getline(numbers, item, ',')) values.push_back(std::stof(item));
    states.push_back(values);
  }
  if (states.empty()) fail("manifest.json has no state with an \"initial\" row");
  return states;
}

torch::jit::script::Module load_step(const std::string& path) {
  torch::jit::script::Module step;
  try {
    step = torch::jit::load(path);
  } catch (const c10::Error& error) {
    fail("cannot load " + path + ": " + std::string(error.what_without_backtrace()));
  }
  step.eval();
  return step;
}

int run_classic(const Options& options, const std::vector<std::vector<float>>& initial_rows) {
  if (!options.inputs.empty() || !options.sample.empty() || options.temperature_given || !options.uniforms.empty() ||
      options.seed_given || options.top_k || options.top_p > 0 || options.prompt_given || options.text)
    fail("--input, --sample, --temperature, --top-k, --top-p, --uniforms, --seed, --prompt and --text are for format 2 folders; " + options.folder +
         " is format 1 (use --x0)");
  std::vector<std::vector<float>> initial = initial_rows;
  torch::jit::script::Module step = load_step(options.folder + "/step.torchscript.pt");
  torch::NoGradGuard no_grad;

  auto x = torch::full({1, 1}, static_cast<float>(options.x0));  // (batch, 1)
  std::vector<torch::Tensor> state;                               // each (batch, size)
  for (auto& row : initial) state.push_back(torch::from_blob(row.data(), {1, static_cast<long>(row.size())}).clone());
  std::cout << "step,y\n" << std::setprecision(9);
  for (long t = 1; t <= options.steps; ++t) {
    std::vector<torch::jit::IValue> inputs{x};
    inputs.insert(inputs.end(), state.begin(), state.end());
    auto outputs = step.forward(inputs).toTuple()->elements();
    x = outputs[0].toTensor();  // y becomes the next input
    for (size_t i = 0; i < state.size(); ++i) state[i] = outputs[i + 1].toTensor();
    std::cout << t << "," << x.item<float>() << "\n";
  }
  return 0;
}

// ---- format 2 ---------------------------------------------------------------------------------

struct Spec {
  std::string name, dtype, role, output;
  std::vector<long> shape;  // -1 marks the batch axis
  long vocabulary = 0;
  std::vector<float> initial;

  bool tokens() const { return role == "tokens"; }
  bool logits() const { return role == "logits"; }
  long count() const {
    long n = 1;
    for (long d : shape)
      if (d != -1) n *= d;
    return n;
  }
  std::vector<int64_t> batch_one() const {
    std::vector<int64_t> sizes;
    for (long d : shape) sizes.push_back(d == -1 ? 1 : d);
    return sizes;
  }
};

std::vector<Spec> specs(const Json& manifest, const std::string& key) {
  const Json* list = manifest.get(key);
  if (!list || list->kind != Json::Array) fail("manifest.json has no list \"" + key + "\"");
  std::vector<Spec> out;
  for (const Json& item : list->items) {
    Spec spec;
    spec.name = item.string_at("name");
    spec.dtype = item.string_at("dtype", "float32");
    spec.role = item.string_at("role");
    spec.output = item.string_at("output");
    const Json* shape = item.get("shape");
    if (spec.name.empty() || !shape || shape->kind != Json::Array) fail("manifest.json: a \"" + key + "\" entry needs a name and a shape");
    for (const Json& d : shape->items) spec.shape.push_back(d.kind == Json::String ? -1 : static_cast<long>(d.number));
    if (const Json* v = item.get("vocabulary")) spec.vocabulary = static_cast<long>(v->number);
    if (const Json* initial = item.get("initial"))
      for (const Json& v : initial->items) spec.initial.push_back(static_cast<float>(v.number));
    out.push_back(spec);
  }
  return out;
}

const Spec* find(const std::vector<Spec>& list, const std::string& name) {
  for (const Spec& spec : list)
    if (spec.name == name) return &spec;
  return nullptr;
}

std::string names(const std::vector<Spec>& list) {
  std::string out;
  for (const Spec& spec : list) out += (out.empty() ? "" : ", ") + spec.name;
  return out;
}

std::string shape_text(const Spec& spec) {
  std::string out = "[";
  for (size_t i = 0; i < spec.shape.size(); ++i)
    out += (i ? "," : "") + (spec.shape[i] == -1 ? std::string("\"batch\"") : std::to_string(spec.shape[i]));
  return out + "]";
}

// The tensor of one input at batch 1, from its --input text (null: the default, zeros or token 0).
torch::Tensor input_tensor(const Spec& spec, const std::string* text) {
  if (spec.tokens()) {
    long id = 0;
    if (text) {
      if (!std::regex_match(*text, std::regex(R"(\s*[0-9]+\s*)")))
        fail("--input " + spec.name + " takes one token id, a whole number, got \"" + *text + "\"");
      try {
        id = std::stol(*text);
      } catch (const std::logic_error&) {
        id = spec.vocabulary;  // too large for a long: out of range below
      }
      if (id >= spec.vocabulary)
        fail("--input " + spec.name + ": token " + *text + " is out of range (vocabulary " +
             std::to_string(spec.vocabulary) + ": ids 0 to " + std::to_string(spec.vocabulary - 1) + ")");
    }
    return torch::full({1}, id, torch::kLong);
  }
  std::vector<float> values(static_cast<size_t>(spec.count()), 0.0f);
  if (text) {
    std::vector<std::string> items;
    std::stringstream stream(*text);
    std::string item;
    while (std::getline(stream, item, ',')) items.push_back(item);
    if (!text->empty() && text->back() == ',') items.push_back("");
    if (text->empty()) items.push_back("");
    if (static_cast<long>(items.size()) != spec.count())
      fail("--input " + spec.name + " needs " + std::to_string(spec.count()) + " values (shape " + shape_text(spec) +
           "), got " + std::to_string(items.size()));
    for (size_t i = 0; i < items.size(); ++i) {
      char* end = nullptr;
      const double number = std::strtod(items[i].c_str(), &end);
      const bool rest_blank = std::all_of(static_cast<const char*>(end), items[i].c_str() + items[i].size(),
                                          [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
      if (end == items[i].c_str() || !rest_blank || !std::isfinite(number))
        fail("--input " + spec.name + ": \"" + items[i] + "\" is not a finite number");
      values[i] = static_cast<float>(number);
    }
  }
  return torch::from_blob(values.data(), spec.batch_one()).clone();
}

std::vector<float> read_uniforms(const std::string& file, long steps) {
  std::ifstream stream(file, std::ios::binary);
  if (!stream) fail("--uniforms " + file + " cannot be read");
  std::string bytes((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  if (static_cast<long>(bytes.size()) != 4 * steps)
    fail("--uniforms " + file + " holds " + std::to_string(bytes.size() / 4) + " float32 values, one a step needs " +
         std::to_string(steps) + " (" + std::to_string(4 * steps) + " bytes)");
  std::vector<float> out(static_cast<size_t>(steps));
  for (long t = 0; t < steps; ++t) {
    uint32_t bits = 0;
    for (int b = 3; b >= 0; --b) bits = (bits << 8) | static_cast<unsigned char>(bytes[4 * t + b]);  // little-endian
    std::memcpy(&out[t], &bits, 4);
    if (!(out[t] >= 0.0f && out[t] < 1.0f))
      fail("--uniforms " + file + ": value " + std::to_string(t) + " is " + std::to_string(out[t]) + ", not in [0, 1)");
  }
  return out;
}

long argmax(const float* logits, long vocabulary) {
  long best = 0;
  for (long i = 1; i < vocabulary; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

// The inverse-CDF draw of runtime.sampling, in float32: z = logits / T; top-k (k > 0): every z
// below the k-th largest becomes -inf (ties kept); p = softmax(z); top-p (0 < P < 1): s = p sorted
// descending, m = min(count(cumsum(s) < P), V - 1), every p below s[m] becomes 0 (ties kept);
// cdf = cumsum(p) in id order, token = min(count(cdf <= u * cdf[V - 1]), V - 1).
long draw_sampled(const float* logits, long vocabulary, float temperature, float u, long top_k, float top_p) {
  std::vector<float> z(static_cast<size_t>(vocabulary)), cdf(static_cast<size_t>(vocabulary));
  for (long i = 0; i < vocabulary; ++i) z[i] = logits[i] / temperature;
  if (top_k > 0 && top_k < vocabulary) {
    std::vector<float> ordered(z);
    std::sort(ordered.begin(), ordered.end(), std::greater<float>());
    const float threshold = ordered[top_k - 1];
    for (float& v : z)
      if (v < threshold) v = -INFINITY;
  }
  float max = -INFINITY;
  for (long i = 0; i < vocabulary; ++i) max = std::max(max, z[i]);
  float sum = 0.0f;
  for (long i = 0; i < vocabulary; ++i) sum += (z[i] = std::exp(z[i] - max));
  for (long i = 0; i < vocabulary; ++i) z[i] /= sum;  // p
  if (top_p > 0 && top_p < 1) {
    std::vector<float> ordered(z);
    std::sort(ordered.begin(), ordered.end(), std::greater<float>());
    float mass = 0.0f;
    long m = 0;
    for (long i = 0; i < vocabulary; ++i) m += (mass += ordered[i]) < top_p;
    const float threshold = ordered[std::min(m, vocabulary - 1)];
    for (float& v : z)
      if (v < threshold) v = 0.0f;
  }
  float running = 0.0f;
  for (long i = 0; i < vocabulary; ++i) cdf[i] = running += z[i];
  const float threshold = u * cdf[vocabulary - 1];
  long count = 0;
  for (long i = 0; i < vocabulary; ++i) count += cdf[i] <= threshold;
  return std::min(count, vocabulary - 1);
}

// The manifest's "vocabulary" (one string per id of the sampled token input), or an empty one.
Vocabulary read_vocabulary(const Json& manifest, const Spec& target, bool sampled) {
  const Json* list = manifest.get("vocabulary");
  if (!list) return Vocabulary();
  if (!sampled) fail("manifest.json has a vocabulary, but its model does not sample tokens");
  if (list->kind != Json::Array) fail("manifest.json's vocabulary must be a list of strings");
  std::vector<std::string> tokens;
  for (const Json& item : list->items) {
    if (item.kind != Json::String) fail("manifest.json's vocabulary must be a list of strings");
    tokens.push_back(item.text);
  }
  if (static_cast<long>(tokens.size()) != target.vocabulary)
    fail("manifest.json's vocabulary has " + std::to_string(tokens.size()) + " strings, input " + target.name +
         " has a vocabulary of " + std::to_string(target.vocabulary));
  try {
    return Vocabulary(tokens);
  } catch (const std::invalid_argument& error) {
    fail("manifest.json: " + std::string(error.what()));
  }
}

// The token ids of --prompt (none without one), checked against the other options.
std::vector<long> prompt_ids(const Options& options, const Vocabulary& vocabulary, const Spec& target) {
  if ((options.prompt_given || options.text) && vocabulary.empty())
    fail(std::string(options.prompt_given ? "--prompt" : "--text") +
         " needs a vocabulary in manifest.json (export the model with vocabulary=[...]); " + options.folder + " has none");
  if (!options.prompt_given) return {};
  for (const auto& given : options.inputs)
    if (given.first == target.name) fail("give --prompt or --input " + target.name + "=ID, not both");
  std::vector<long> ids;
  try {
    ids = vocabulary.encode(options.prompt);
  } catch (const std::invalid_argument& error) {
    fail("--prompt: " + std::string(error.what()));
  }
  if (ids.empty()) fail("--prompt is empty: it needs at least one token");
  return ids;
}

// One run of the step model on feeds (the inputs in manifest order, then the states): the states
// become the new states, the outputs are returned.
std::vector<torch::jit::IValue> run_step(torch::jit::script::Module& step, std::vector<torch::Tensor>& feeds,
                                         size_t n_inputs, size_t n_outputs) {
  std::vector<torch::jit::IValue> arguments(feeds.begin(), feeds.end());
  torch::jit::IValue result;
  try {
    result = step.forward(arguments);
  } catch (const c10::Error& error) {
    fail("the step model failed: " + std::string(error.what_without_backtrace()));
  }
  std::vector<torch::jit::IValue> values =
      result.isTuple() ? result.toTuple()->elements().vec() : std::vector<torch::jit::IValue>{result};
  const size_t n_states = feeds.size() - n_inputs;
  if (values.size() != n_outputs + n_states)
    fail("the step model returned " + std::to_string(values.size()) + " tensors, the manifest lists " +
         std::to_string(n_outputs + n_states));
  for (size_t i = 0; i < n_states; ++i) feeds[n_inputs + i] = values[n_outputs + i].toTensor();
  values.resize(n_outputs);
  return values;
}

int run_general(const Options& options, const Json& manifest) {
  const std::vector<Spec> inputs = specs(manifest, "inputs"), outputs = specs(manifest, "outputs"),
                          states = specs(manifest, "state");
  if (options.x0_given) fail("--x0 is for format 1 folders; give the first value with --input NAME=...");
  if (options.hidden > 0) fail("--hidden is for format 1 folders");

  // How the loop closes: the declared feedback, or one float input fed by an output of its shape.
  std::string out_name, in_name, via;
  if (const Json* feedback = manifest.get("feedback"); feedback && feedback->kind == Json::Object) {
    out_name = feedback->string_at("output"), in_name = feedback->string_at("input"), via = feedback->string_at("via");
  } else if (inputs.size() == 1 && outputs.size() == 1 && !inputs[0].tokens() && !outputs[0].logits() &&
             inputs[0].dtype == "float32" && outputs[0].dtype == "float32" && inputs[0].shape == outputs[0].shape) {
    out_name = outputs[0].name, in_name = inputs[0].name, via = "identity";
  } else {
    fail("the manifest declares no feedback (which output becomes which input): this example cannot close the loop");
  }
  for (const Spec& spec : inputs) {
    if (spec.shape.empty() || spec.shape[0] != -1)
      fail("input " + spec.name + ": this example needs the batch axis first, got " + shape_text(spec));
    if (spec.tokens() ? spec.dtype != "int64" || spec.shape.size() != 1 : spec.dtype != "float32")
      fail("input " + spec.name + " (" + spec.dtype + " " + shape_text(spec) + ") is not supported by this example");
  }
  for (const auto* list : {&outputs, &states})
    for (const Spec& spec : *list)
      if (spec.dtype != "float32") fail(spec.name + " is " + spec.dtype + ": this example runs float32 outputs and states only");
  if (via != "identity" && via != "sample") fail("feedback via " + via + " is not supported by this example");
  const Spec* source = find(outputs, out_name);
  const Spec* target = find(inputs, in_name);
  if (!source || !target) fail("feedback names output " + out_name + " and input " + in_name + ", which the manifest does not list");
  const bool sampled = via == "sample";
  if (sampled && (!source->logits() || !target->tokens() || source->count() != target->vocabulary))
    fail("feedback via sample needs a logits output of the tokens input's vocabulary");
  if (!sampled && (target->tokens() || source->count() != target->count()))
    fail("feedback via identity needs output " + source->name + " to have input " + target->name + "'s shape");
  for (const Spec& state : states)
    if (static_cast<long>(state.initial.size()) != state.count())
      fail("state " + state.name + ": manifest.json's initial has " + std::to_string(state.initial.size()) +
           " values, its shape needs " + std::to_string(state.count()));

  for (const auto& given : options.inputs)
    if (!find(inputs, given.first))
      fail("--input " + given.first + ": the model has no input " + given.first + " (its inputs: " + names(inputs) + ")");
  const bool top_k_given = options.top_k > 0, top_p_given = options.top_p > 0;
  if (!sampled && (!options.sample.empty() || options.temperature_given || !options.uniforms.empty() ||
                   options.seed_given || top_k_given || top_p_given))
    fail("--sample, --temperature, --top-k, --top-p, --uniforms and --seed are for models that sample tokens; " +
         source->name + " is fed back as it is");
  const std::string strategy = !options.sample.empty() ? options.sample
                               : top_k_given          ? "top_k"
                               : top_p_given          ? "top_p"
                                                      : "greedy";
  if (sampled && strategy == "greedy" &&
      (options.temperature_given || !options.uniforms.empty() || options.seed_given || top_k_given || top_p_given))
    fail("--temperature, --top-k, --top-p, --uniforms and --seed are not used by --sample greedy");
  if (strategy == "top_k" && !top_k_given) fail("--sample top_k needs --top-k K");
  if (strategy == "top_p" && !top_p_given) fail("--sample top_p needs --top-p P");
  if (top_k_given && strategy != "top_k") fail("--top-k is for --sample top_k, not " + strategy);
  if (top_p_given && strategy != "top_p") fail("--top-p is for --sample top_p, not " + strategy);
  if (!options.uniforms.empty() && options.seed_given) fail("give --uniforms or --seed, not both");
  std::vector<float> uniforms;
  if (sampled && strategy != "greedy")
    uniforms = options.uniforms.empty() ? numpy_random::uniforms(options.seed, options.steps)
                                        : read_uniforms(options.uniforms, options.steps);
  const float temperature = static_cast<float>(options.temperature);
  const Vocabulary vocabulary = read_vocabulary(manifest, *target, sampled);
  const std::vector<long> prompt = prompt_ids(options, vocabulary, *target);

  std::string file;
  if (const Json* files = manifest.get("files"))
    for (const Json& entry : files->items)
      if (entry.string_at("role") == "step_torchscript") file = entry.string_at("name");
  if (file.empty()) fail(options.folder + " has no step.torchscript.pt (the dynamo exporter skipped it): this example runs TorchScript step models");
  torch::jit::script::Module step = load_step(options.folder + "/" + file);
  torch::NoGradGuard no_grad;

  std::vector<torch::Tensor> feeds;  // the inputs in manifest order, then the states
  size_t target_index = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string* text = nullptr;
    for (const auto& given : options.inputs)
      if (given.first == inputs[i].name) text = &given.second;
    feeds.push_back(input_tensor(inputs[i], text));
    if (inputs[i].name == target->name) target_index = i;
  }
  for (const Spec& state : states) {
    std::vector<float> initial = state.initial;
    feeds.push_back(torch::from_blob(initial.data(), state.batch_one()).clone());
  }
  size_t source_index = 0;
  for (size_t i = 0; i < outputs.size(); ++i)
    if (outputs[i].name == source->name) source_index = i;

  for (size_t i = 0; i < prompt.size(); ++i) {  // teacher-forced: every token but the last, outputs dropped
    feeds[target_index] = torch::full({1}, prompt[i], torch::kLong);
    if (i + 1 < prompt.size()) run_step(step, feeds, inputs.size(), outputs.size());
  }

  if (options.text)
    std::cout << options.prompt << std::flush;
  else
    std::cout << "step," << (sampled ? std::string("token") : source->name) << (vocabulary.empty() ? "" : ",text")
              << "\n" << std::setprecision(9);
  for (long t = 1; t <= options.steps; ++t) {
    const std::vector<torch::jit::IValue> values = run_step(step, feeds, inputs.size(), outputs.size());
    torch::Tensor y = values[source_index].toTensor().contiguous().to(torch::kFloat);
    if (sampled) {
      const float* logits = y.data_ptr<float>();
      const long token = strategy == "greedy" ? argmax(logits, target->vocabulary)
                                              : draw_sampled(logits, target->vocabulary, temperature, uniforms[t - 1],
                                                             options.top_k, static_cast<float>(options.top_p));
      feeds[target_index] = torch::full({1}, token, torch::kLong);
      if (options.text)
        std::cout << vocabulary.token(token) << std::flush;
      else
        std::cout << t << "," << token << (vocabulary.empty() ? "" : "," + Vocabulary::csv_field(vocabulary.token(token)))
                  << "\n";
    } else {
      feeds[target_index] = y.reshape(target->batch_one());
      std::cout << t << "," << y.data_ptr<float>()[0] << "\n";
    }
  }
  if (options.text) std::cout << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  if (options.print_uniforms > 0) {
    std::cout << std::setprecision(9);
    for (float u : numpy_random::uniforms(options.seed, options.print_uniforms)) std::cout << u << "\n";
    return 0;
  }
  if (options.hidden > 0) {
    return run_classic(options, {std::vector<float>(options.hidden, 0.0f)});
  }
  const std::string document = read_text(options.folder + "/manifest.json");
  Json manifest;
  try {
    manifest = JsonReader(document).document();
  } catch (const JsonError& error) {
    fail("manifest.json is " + std::string(error.what()));
  }
  const Json* version = manifest.get("format_version");
  if (manifest.string_at("format") != "rnn-toolkit-artifact" || !version || version->kind != Json::Number ||
      (version->number != 1 && version->number != 2))
    fail(options.folder + " is not an rnn-toolkit artifact folder of format version 1 or 2");
  if (version->number == 1) return run_classic(options, initial_states(document));
  return run_general(options, manifest);
}
