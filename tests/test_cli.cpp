// The qformer program as users and scripts call it: dump's fixed contract, inspect, and its errors.

#include "test_util.hpp"

#include <qformer/io/safetensors.hpp>

#include <array>
#include <set>
#include <cstdio>
#include <sys/wait.h>

using namespace qformer;

namespace {

struct run_result {
  int status;
  std::string out;  // stdout and stderr together
};

run_result run(const std::string& args) {
  const std::string cmd = std::string(QFORMER_CLI) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int raw = ::pclose(p);
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, out};
}

}  // namespace

TEST_CASE("qformer dump reproduces every reference tensor of every generation fixture") {
  for (const char* name : {"tiny-opt", "tiny-opt-hub-layout", "tiny-t5", "tiny-opt-sharded", "tiny-t5-seed7"}) {
    CAPTURE(name);
    test::temp_dir dir;
    const std::string folder = test::fixture(name);
    const run_result r = run("dump --model " + folder + " --inputs " + folder + "/reference.safetensors --out " +
                             dir.file("out.safetensors") + " --new-tokens 8");
    CAPTURE(r.out);
    REQUIRE(r.status == 0);
    const safetensors_file out(dir.file("out.safetensors")), ref(folder + "/reference.safetensors");
    const std::set<std::string> inputs = {"pixel_values", "prompt_ids", "padded_prompt_ids", "padded_prompt_mask"};
    for (const tensor_entry& e : ref.entries()) {
      if (inputs.count(e.name)) continue;
      CAPTURE(e.name);
      REQUIRE(out.find(e.name) != nullptr);
      CHECK(out.at(e.name).type == e.type);
      CHECK(out.at(e.name).dims == e.dims);
      if (e.type == dtype::i64) {
        const auto got = out.load<std::int64_t>(e.name), want = ref.load<std::int64_t>(e.name);
        CHECK(std::equal(got.data(), got.data() + got.numel(), want.data()));
      } else {
        test::check_against_reference(ref, e.name, out.load<float>(e.name).get());
      }
    }
  }
}

TEST_CASE("qformer inspect summarises a model folder") {
  const run_result r = run("inspect --model " + test::fixture("tiny-opt"));
  CAPTURE(r.out);
  CHECK(r.status == 0);
  CHECK(r.out.find("Blip2ForConditionalGeneration") != std::string::npos);
  CHECK(r.out.find("tensors: 139") != std::string::npos);
  CHECK(r.out.find("F32: 139 tensors") != std::string::npos);
  CHECK(r.out.find("language model: opt, hidden 40") != std::string::npos);
}

TEST_CASE("qformer: help, usage errors (status 2) and load errors (status 1, one line)") {
  CHECK(run("--help").status == 0);
  CHECK(run("--help").out.find("dump --model DIR") != std::string::npos);
  CHECK(run("").status == 2);
  CHECK(run("frobnicate").status == 2);
  CHECK(run("dump --model x").status == 2);
  CHECK(run("dump --model x --inputs y --out z --dtype f64").status == 2);
  CHECK(run("inspect --model").status == 2);
  const run_result missing = run("inspect --model /nonexistent/model");
  CHECK(missing.status == 1);
  CHECK(missing.out.find("/nonexistent/model") != std::string::npos);
  CHECK(std::count(missing.out.begin(), missing.out.end(), '\n') == 1);
  test::temp_dir dir;
  test::write_bytes(dir.file("in.safetensors"), "garbage");
  const run_result bad_inputs = run("dump --model " + test::fixture("tiny-opt") + " --inputs " + dir.file("in.safetensors") +
                                    " --out " + dir.file("out.safetensors"));
  CHECK(bad_inputs.status == 1);
  CHECK(bad_inputs.out.find("in.safetensors") != std::string::npos);
}

TEST_CASE("the custom Q-Former example loads stock weights and runs") {
  const std::string cmd = std::string(QFORMER_EXAMPLE_CUSTOM) + " " + test::fixture("tiny-opt") + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  CAPTURE(out);
  CHECK(::pclose(p) == 0);
  CHECK(out.find("early-exit Q-Former") != std::string::npos);
}
