// The committed corpus of broken inputs, tests/data/broken/ (made by tools/make_broken_corpus.py): each case
// through the public API must throw the manifest's exception type with a message holding the manifest's strings
// (the file and the field or tensor), and through the CLI must exit non-zero with one line on stderr naming it.

#include "test_util.hpp"

#include <qformer/io/image.hpp>
#include <qformer/pipeline.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <sys/wait.h>

using namespace qformer;

namespace {

struct broken_case {
  std::string name, kind, path, error;
  std::vector<std::string> contains;
};

std::string broken_dir() { return test::fixture("broken"); }

std::vector<broken_case> manifest() {
  std::ifstream in(broken_dir() + "/manifest.json");
  REQUIRE(in.good());
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<broken_case> out;
  for (const auto& c : j.at("cases"))
    out.push_back({c.at("name"), c.at("kind"), c.at("path"), c.at("error"), c.at("contains").get<std::vector<std::string>>()});
  return out;
}

/// The most derived qformer exception type of `e`, by name.
std::string type_name(const std::exception& e) {
  if (dynamic_cast<const encoding_error*>(&e)) return "encoding_error";
  if (dynamic_cast<const config_error*>(&e)) return "config_error";
  if (dynamic_cast<const shape_error*>(&e)) return "shape_error";
  if (dynamic_cast<const load_error*>(&e)) return "load_error";
  if (dynamic_cast<const qformer::invalid_argument*>(&e)) return "invalid_argument";
  if (dynamic_cast<const qformer::error*>(&e)) return "error";
  return std::string("not a qformer error: ") + typeid(e).name();
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// The tiny captioner the prompt and image cases run through (loaded once).
const Blip2Pipeline<float>& tiny_pipeline() {
  static const Blip2Pipeline<float> pipe = Blip2Pipeline<float>::from_pretrained(test::fixture("tiny-opt-hub"));
  return pipe;
}

const std::string valid_image = test::fixture("images/pattern.png");

/// Loads the case as a user of the library would.
void load_case(const broken_case& c) {
  const std::string path = broken_dir() + "/" + c.path;
  if (c.kind == "safetensors") {
    const safetensors_file file(path);
    for (const tensor_entry& e : file.entries()) {
      std::vector<float> values(static_cast<std::size_t>(e.dims.numel()));
      file.read(e, dtype::f32, values.data());
    }
  } else if (c.kind == "model") {
    (void)Blip2<float>::from_pretrained(path);
  } else if (c.kind == "tokenizer") {
    (void)tokenizer::from_file(path);
  } else if (c.kind == "image") {
    (void)tiny_pipeline().image_processor()(load_image(path));
  } else if (c.kind == "prompt") {
    context<cpu> ctx;
    (void)tiny_pipeline().caption(ctx, load_image(valid_image), read_all(path));
  } else {
    FAIL("unknown kind '" << c.kind << "' in manifest.json");
  }
}

/// The CLI command that meets the case.
std::string cli_args(const broken_case& c) {
  const std::string path = "'" + broken_dir() + "/" + c.path + "'";
  const std::string hub = "'" + test::fixture("tiny-opt-hub") + "'";
  if (c.kind == "safetensors") return "inspect --model " + path;
  if (c.kind == "model") return "caption --model " + path + " --image '" + valid_image + "'";
  if (c.kind == "tokenizer") return "tokenize --tokenizer " + path + " --text 'a red circle'";
  if (c.kind == "image") return "caption --model " + hub + " --image " + path;
  return "caption --model " + hub + " --image '" + valid_image + "' --prompt \"$(cat " + path + ")\"";
}

/// The CLI's exit status and its stderr alone (stdout discarded).
test::shell_result run_cli(const std::string& args) {
  return test::run_shell(std::string(QFORMER_CLI) + " " + args + " 2>&1 >/dev/null");
}

}  // namespace

TEST_CASE("broken inputs: the corpus has the cases issue E lists") {
  const auto cases = manifest();
  CHECK(cases.size() >= 40);
  std::map<std::string, int> per_kind;
  for (const auto& c : cases) ++per_kind[c.kind];
  for (const char* kind : {"safetensors", "model", "tokenizer", "image", "prompt"}) {
    CAPTURE(kind);
    CHECK(per_kind[kind] >= 2);
  }
}

TEST_CASE("broken inputs: each gives its typed error naming the file and the field or tensor") {
  for (const broken_case& c : manifest()) {
    CAPTURE(c.name);
    std::string got_type = "no exception", message;
    try {
      load_case(c);
    } catch (const std::exception& e) {
      got_type = type_name(e);
      message = e.what();
    }
    CAPTURE(message);
    CHECK(got_type == c.error);
    for (const std::string& s : c.contains) {
      CAPTURE(s);
      CHECK(message.find(s) != std::string::npos);
    }
  }
}

TEST_CASE("broken inputs: the CLI exits non-zero with one line on stderr that names the problem") {
  for (const broken_case& c : manifest()) {
    CAPTURE(c.name);
    const test::shell_result r = run_cli(cli_args(c));
    const std::string& err = r.out;
    CAPTURE(err);
    CHECK(r.status == 1);
    CHECK(err.starts_with("qformer: error: "));
    CHECK(std::count(err.begin(), err.end(), '\n') == 1);
    CHECK(err.back() == '\n');
    CHECK(err.find(c.contains.front()) != std::string::npos);
  }
}
