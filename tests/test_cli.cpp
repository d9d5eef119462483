// The qformer program as users and scripts call it: dump's fixed contract, inspect, and its errors.

#include "test_util.hpp"

#include <qformer/io/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <set>
#include <sstream>
#include <cstdio>
#include <sys/wait.h>

using namespace qformer;

namespace {

/// Runs the CLI; its stdout (and stderr too, unless `merge_stderr` is false) come back.
test::shell_result run(const std::string& args, bool merge_stderr = true) {
  return test::run_shell(std::string(QFORMER_CLI) + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null"));
}

}  // namespace

TEST_CASE("qformer dump reproduces every reference tensor of every generation fixture") {
  for (const char* name : {"tiny-opt", "tiny-opt-hub-layout", "tiny-t5", "tiny-opt-sharded", "tiny-t5-seed7", "tiny-retrieval"}) {
    CAPTURE(name);
    test::temp_dir dir;
    const std::string folder = test::fixture(name);
    const test::shell_result r = run("dump --model " + folder + " --inputs " + folder + "/reference.safetensors --out " +
                             dir.file("out.safetensors") + " --new-tokens 8");
    CAPTURE(r.out);
    REQUIRE(r.status == 0);
    const safetensors_file out(dir.file("out.safetensors")), ref(folder + "/reference.safetensors");
    const std::set<std::string> inputs = {"pixel_values", "prompt_ids", "padded_prompt_ids", "padded_prompt_mask", "input_ids",
                                          "attention_mask"};
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

TEST_CASE("qformer caption and vqa on Hub-shaped folders answer exactly as transformers' processor + generate") {
  // tests/data/tiny-{opt,t5}-hub: sharded weights, image_token_index, generation_config.json, processor_config.json,
  // tokenizer.json, all written by transformers (tools/make_pipeline_reference.py), and its recorded answers.
  for (const char* name : {"tiny-opt-hub", "tiny-t5-hub"}) {
    const std::string folder = test::fixture(name);
    std::ifstream in(folder + "/pipeline_reference.json");
    const nlohmann::json reference = nlohmann::json::parse(in);
    const std::string image = folder + "/" + reference["image"].get<std::string>();
    for (const auto& c : reference["cases"]) {
      const std::string prompt = c["prompt"].get<std::string>();
      const auto& o = c["options"];
      std::string args;
      const std::string question_prefix = "Question: ", answer_suffix = " Answer:";
      if (prompt.rfind(question_prefix, 0) == 0)
        args = "vqa --question \"" + prompt.substr(question_prefix.size(), prompt.size() - question_prefix.size() - answer_suffix.size()) + "\"";
      else
        args = "caption" + (prompt.empty() ? std::string() : " --prompt \"" + prompt + "\"");
      args += " --model " + folder + " --image " + image + " --json --max-new-tokens " + std::to_string(o["max_new_tokens"].get<int>());
      if (o.contains("num_beams")) args += " --beams " + std::to_string(o["num_beams"].get<int>());
      if (o.contains("length_penalty")) args += " --length-penalty " + std::to_string(o["length_penalty"].get<double>());
      if (o.contains("repetition_penalty")) args += " --repetition-penalty " + std::to_string(o["repetition_penalty"].get<double>());
      CAPTURE(args);
      const test::shell_result r = run(args);
      CAPTURE(r.out);
      REQUIRE(r.status == 0);
      const nlohmann::json got = nlohmann::json::parse(r.out);
      CHECK(got["ids"] == c["ids"]);
      CHECK(got[prompt.rfind(question_prefix, 0) == 0 ? "answer" : "caption"] == c["text"]);
    }
    // The first case is what `qformer caption` does with nothing but the folder and the image.
    const test::shell_result plain = run("caption --model " + folder + " --image " + image);
    CHECK(plain.status == 0);
    CHECK(plain.out == reference["cases"][0]["text"].get<std::string>() + "\n");
  }
}

TEST_CASE("qformer caption over a folder prints one JSON line per image and reports bad images without stopping") {
  test::temp_dir dir;
  const std::string image = test::fixture("images/pattern.png");
  std::filesystem::copy_file(image, dir.file("a.png"));
  std::filesystem::copy_file(image, dir.file("c.png"));
  test::write_bytes(dir.file("b.png"), "not a png");
  const test::shell_result r = run("caption --model " + test::fixture("tiny-opt-hub") + " --image " + dir.path.string() + " --max-new-tokens 4", false);
  CAPTURE(r.out);
  CHECK(r.status == 1);  // one image failed
  std::istringstream lines(r.out);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(nlohmann::json::parse(line));
  REQUIRE(rows.size() == 3);
  CHECK(rows[0]["caption"] == rows[2]["caption"]);
  CHECK(rows[1].contains("error"));
  CHECK(rows[1]["error"].get<std::string>().find("b.png") != std::string::npos);
  // A list file names images relative to itself.
  test::write_bytes(dir.file("list.txt"), "a.png\nc.png\n");
  const test::shell_result listed = run("caption --model " + test::fixture("tiny-opt-hub") + " --image " + dir.file("list.txt") + " --max-new-tokens 4", false);
  CHECK(listed.status == 0);
  CHECK(std::count(listed.out.begin(), listed.out.end(), '\n') == 2);
}

TEST_CASE("qformer match and rank score image-text pairs as transformers' retrieval model does") {
  const std::string folder = test::fixture("tiny-retrieval-hub");
  std::ifstream in(folder + "/pipeline_reference.json");
  const nlohmann::json reference = nlohmann::json::parse(in);
  std::string texts;
  for (const auto& t : reference["texts"]) texts += " \"" + t.get<std::string>() + "\"";
  std::string images;
  for (const auto& i : reference["images"]) images += " " + folder + "/" + i.get<std::string>();
  for (std::size_t i = 0; i < reference["images"].size(); ++i) {
    std::string args = "match --model " + folder + " --image " + folder + "/" + reference["images"][i].get<std::string>();
    for (const auto& t : reference["texts"]) args += " --text \"" + t.get<std::string>() + "\"";
    const test::shell_result r = run(args, false);
    CAPTURE(r.out);
    REQUIRE(r.status == 0);
    std::istringstream lines(r.out);
    std::size_t t = 0;
    for (std::string line; std::getline(lines, line); ++t) {
      const nlohmann::json got = nlohmann::json::parse(line);
      CHECK(got["itm_probability"].get<double>() == doctest::Approx(reference["itm_probability"][i][t].get<double>()).epsilon(1e-4));
      CHECK(got["itc_score"].get<double>() == doctest::Approx(reference["itc_similarity"][i][t].get<double>()).epsilon(1e-4));
    }
    CHECK(t == reference["texts"].size());
  }
  const test::shell_result r = run("rank --model " + folder + " --images" + images + " --texts" + texts + " --top-k 2", false);
  CAPTURE(r.out);
  REQUIRE(r.status == 0);
  const nlohmann::json got = nlohmann::json::parse(r.out);
  for (std::size_t i = 0; i < reference["images"].size(); ++i) {
    for (std::size_t t = 0; t < reference["texts"].size(); ++t)
      CHECK(got["similarity"][i][t].get<double>() == doctest::Approx(reference["itc_similarity"][i][t].get<double>()).epsilon(1e-4));
    REQUIRE(got["top"][i].size() == 2);
    CHECK(got["top"][i][0]["score"].get<double>() >= got["top"][i][1]["score"].get<double>());
  }
  CHECK(run("rank --model " + folder + " --images" + images).status == 2);
}

TEST_CASE("qformer eval prints BLEU-4, ROUGE-L and CIDEr-D equal to the reference implementations") {
  const std::string dir = test::fixture("metrics");
  const test::shell_result r = run("eval --predictions " + dir + "/predictions.jsonl --references " + dir + "/references.jsonl", false);
  CAPTURE(r.out);
  REQUIRE(r.status == 0);
  const nlohmann::json got = nlohmann::json::parse(r.out);
  std::ifstream in(dir + "/expected.json");
  const nlohmann::json expected = nlohmann::json::parse(in);
  CHECK(got["bleu"]["score"].get<double>() == doctest::Approx(expected["bleu"]["score"].get<double>()).epsilon(1e-9));
  CHECK(got["rouge_l"]["fmeasure"].get<double>() == doctest::Approx(expected["rouge_l"]["fmeasure"].get<double>()).epsilon(1e-9));
  CHECK(got["cider_d"]["score"].get<double>() == doctest::Approx(expected["cider_d"]["score"].get<double>()).epsilon(1e-9));
  test::temp_dir tmp;
  test::write_bytes(tmp.file("p.jsonl"), "{\"id\": 1, \"caption\": \"a cat\"}\n{\"id\": 2}\n");
  const test::shell_result bad = run("eval --predictions " + tmp.file("p.jsonl") + " --references " + dir + "/references.jsonl");
  CHECK(bad.status == 1);
  CHECK(bad.out.find("p.jsonl") != std::string::npos);
}

TEST_CASE("qformer tokenize prints the ids as one JSON array") {
  const test::shell_result r = run("tokenize --tokenizer " + test::fixture("tiny-opt-hub") + " --text \"a photo of\"");
  CHECK(r.status == 0);
  std::ifstream in(test::fixture("tiny-opt-hub/pipeline_reference.json"));
  const nlohmann::json reference = nlohmann::json::parse(in);
  // The processor's ids for "a photo of" are 6 <image> placeholders followed by the tokenizer's encoding.
  nlohmann::json expected = nlohmann::json::array();
  for (const auto& c : reference["cases"])
    if (c["prompt"] == "a photo of") {
      for (std::size_t i = 6; i < c["prompt_ids"].size(); ++i) expected.push_back(c["prompt_ids"][i]);
      break;
    }
  CHECK(nlohmann::json::parse(r.out) == expected);
  CHECK(run("tokenize --tokenizer /nonexistent --text x").status == 1);
}

TEST_CASE("qformer inspect summarises a model folder") {
  const test::shell_result r = run("inspect --model " + test::fixture("tiny-opt"));
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
  const test::shell_result missing = run("inspect --model /nonexistent/model");
  CHECK(missing.status == 1);
  CHECK(missing.out.find("/nonexistent/model") != std::string::npos);
  CHECK(std::count(missing.out.begin(), missing.out.end(), '\n') == 1);
  test::temp_dir dir;
  test::write_bytes(dir.file("in.safetensors"), "garbage");
  const test::shell_result bad_inputs = run("dump --model " + test::fixture("tiny-opt") + " --inputs " + dir.file("in.safetensors") +
                                    " --out " + dir.file("out.safetensors"));
  CHECK(bad_inputs.status == 1);
  CHECK(bad_inputs.out.find("in.safetensors") != std::string::npos);

  const std::string caption = "caption --model " QFORMER_MODELS_DIR "/shapes-captioner --image " QFORMER_MODELS_DIR
                              "/../examples/images/red_circle_and_blue_square.png";
  CHECK(run(caption + " --device tpu").status == 2);
  CHECK(run("bench --device tpu").status == 2);
  // Without the CUDA backend (status 2) or without a GPU (status 1): one line that names the option; with both,
  // the caption.
  const test::shell_result gpu = run(caption + " --device cuda");
  if (gpu.status != 0) {
    CHECK((gpu.status == 1 || gpu.status == 2));
    CHECK(gpu.out.find("--device cuda") != std::string::npos);
    CHECK(std::count(gpu.out.begin(), gpu.out.end(), '\n') == 1);
  }
}

TEST_CASE("the README's caption example prints transformers' caption") {
  const std::string folder = test::fixture("tiny-opt-hub");
  std::ifstream in(folder + "/pipeline_reference.json");
  const nlohmann::json reference = nlohmann::json::parse(in);
  const std::string cmd = std::string(QFORMER_EXAMPLE_CAPTION) + " " + folder + " " + test::fixture("images/pattern.png");
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  CHECK(::pclose(p) == 0);
  CHECK(out == reference["cases"][0]["text"].get<std::string>() + "\n");
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
