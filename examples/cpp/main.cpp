// rnn_generate: loads an artifact folder's step.torchscript.pt with libtorch and runs the
// closed-loop context loop (each output fed back as the next input), printing CSV.
//
//   rnn_generate FOLDER [--steps N] [--x0 VALUE] [--hidden H]
//
// The state's size and initial values come from FOLDER/manifest.json ("state": [{"shape":
// ["batch", H], "initial": [...]}]); --hidden overrides the size (initial state zeros).
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

// The initial state row of the manifest's first state tensor: a deliberately small reader
// for the one field it needs, not a JSON parser.
std::vector<float> initial_state(const std::string& folder) {
  std::ifstream file(folder + "/manifest.json");
  if (!file) fail(folder + "/manifest.json cannot be read");
  std::stringstream text;
  text << file.rdbuf();
  std::smatch match;
  const std::string document = text.str();
  if (!std::regex_search(document, match, std::regex(R"("initial"\s*:\s*\[([^\]]*)\])")))
    fail("manifest.json has no state with an \"initial\" row");
  std::vector<float> values;
  std::stringstream numbers(match[1].str());
  std::string item;
  while (std::getline(numbers, item, ',')) values.push_back(std::stof(item));
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  std::vector<float> initial = options.hidden > 0 ? std::vector<float>(options.hidden, 0.0f)
                                                  : initial_state(options.folder);
  torch::jit::script::Module step;
  try {
    step = torch::jit::load(options.folder + "/step.torchscript.pt");
  } catch (const c10::Error& error) {
    fail("cannot load step.torchscript.pt: " + std::string(error.what_without_backtrace()));
  }
  step.eval();
  torch::NoGradGuard no_grad;

  auto x = torch::full({1, 1}, static_cast<float>(options.x0));                       // (batch, 1)
  auto h = torch::from_blob(initial.data(), {1, static_cast<long>(initial.size())}).clone();  // (batch, H)
  std::cout << "step,y\n" << std::setprecision(9);
  for (long t = 1; t <= options.steps; ++t) {
    auto outputs = step.forward({x, h}).toTuple();
    x = outputs->elements()[0].toTensor();  // y becomes the next input
    h = outputs->elements()[1].toTensor();
    std::cout << t << "," << x.item<float>() << "\n";
  }
  return 0;
}
