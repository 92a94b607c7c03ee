// rnn_generate: loads an artifact folder's step.torchscript.pt with libtorch and runs the
// closed-loop context loop (each output fed back as the next input), printing CSV.
//
//   rnn_generate FOLDER [--steps N] [--x0 VALUE] [--hidden H]
//
// The state tensors (any number, in manifest order: h for Elman and GRU, h and c for LSTM)
// and their initial values come from FOLDER/manifest.json ("state": [{"initial": [...]}, ...]);
// --hidden H instead gives one zero state of size H.
#include <torch/script.h>

#include <fstream>
#include <iomanip>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string folder;
  long steps = 100;
  double x0 = 0.9092974268256817;  // sin(2), the first point of the reference data
  long hidden = -1;
};

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "error: " << message << std::endl;
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
      else if (arg == "--x0") options.x0 = std::stod(value());
      else if (arg == "--hidden") options.hidden = std::stol(value());
      else if (arg == "-h" || arg == "--help") {
        std::cout << "usage: rnn_generate FOLDER [--steps N] [--x0 VALUE] [--hidden H]\n";
        std::exit(0);
      } else if (!arg.empty() && arg[0] == '-') fail("unknown option " + arg);
      else options.folder = arg;
    } catch (const std::logic_error&) {
      fail("bad value for " + arg);
    }
  }
  if (options.folder.empty()) fail("usage: rnn_generate FOLDER [--steps N] [--x0 VALUE] [--hidden H]");
  if (options.steps < 1) fail("--steps must be >= 1");
  return options;
}

// The initial row of every state tensor, in manifest order: a deliberately small reader for
// the one field it needs ("initial" appears only in the state entries), not a JSON parser.
std::vector<std::vector<float>> initial_states(const std::string& folder) {
  std::ifstream file(folder + "/manifest.json");
  if (!file) fail(folder + "/manifest.json cannot be read");
  std::stringstream text;
  text << file.rdbuf();
  const std::string document = text.str();
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

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  std::vector<std::vector<float>> initial =
      options.hidden > 0 ? std::vector<std::vector<float>>{std::vector<float>(options.hidden, 0.0f)}
                         : initial_states(options.folder);
  torch::jit::script::Module step;
  try {
    step = torch::jit::load(options.folder + "/step.torchscript.pt");
  } catch (const c10::Error& error) {
    fail("cannot load step.torchscript.pt: " + std::string(error.what_without_backtrace()));
  }
  step.eval();
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
