// Caption metrics against the reference Python implementations (tests/data/metrics, made by
// tools/make_metrics_reference.py): corpus BLEU-4 = sacrebleu, ROUGE-L = rouge-score, CIDEr-D = pycocoevalcap, each
// to 1e-6, with every tokenisation checked string by string; and the JSONL reader's errors.

#include "test_util.hpp"

#include <qformer/metrics/evaluate.hpp>

#include <nlohmann/json.hpp>

using namespace qformer;
using nlohmann::json;

namespace {

constexpr double tolerance = 1e-6;

json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return json::parse(in);
}

const json& expected() {
  static const json e = read_json(test::fixture("metrics/expected.json"));
  return e;
}

/// Largest |a - b| seen per metric in the running test case (reset with `diffs() = {}`, printed by report()).
struct max_diffs {
  double bleu = 0, rouge = 0, cider = 0;
};
max_diffs& diffs() {
  static max_diffs d;
  return d;
}
void report() {
  MESSAGE("max |diff|: BLEU " << diffs().bleu << ", ROUGE-L " << diffs().rouge << ", CIDEr-D " << diffs().cider);
}

void check_close(double actual, double wanted, double& max_seen) {
  max_seen = std::max(max_seen, std::abs(actual - wanted));
  CHECK(std::abs(actual - wanted) <= tolerance);
}

/// Compares one corpus's three results with the expected JSON (corpus values and per prediction).
void check_results(const metrics::evaluation& got, const json& want) {
  const auto& wb = want.at("bleu");
  check_close(got.bleu.score, wb.at("score").get<double>(), diffs().bleu);
  check_close(got.bleu.brevity_penalty, wb.at("bp").get<double>(), diffs().bleu);
  check_close(got.bleu.ratio, wb.at("ratio").get<double>(), diffs().bleu);
  for (std::size_t n = 0; n < 4; ++n) {
    check_close(got.bleu.precisions[n], wb.at("precisions")[n].get<double>(), diffs().bleu);
    CHECK(got.bleu.counts[n] == wb.at("counts")[n].get<std::int64_t>());
    CHECK(got.bleu.totals[n] == wb.at("totals")[n].get<std::int64_t>());
  }
  CHECK(got.bleu.sys_len == wb.at("sys_len").get<std::int64_t>());
  CHECK(got.bleu.ref_len == wb.at("ref_len").get<std::int64_t>());
  REQUIRE(got.bleu.segments.size() == wb.at("segments").size());
  for (std::size_t i = 0; i < got.bleu.segments.size(); ++i) {
    CAPTURE(i);
    const auto& s = got.bleu.segments[i];
    std::vector<std::int64_t> stats{s.hyp_len, s.ref_len};
    stats.insert(stats.end(), s.correct.begin(), s.correct.end());
    stats.insert(stats.end(), s.total.begin(), s.total.end());
    CHECK(stats == wb.at("segments")[i].get<std::vector<std::int64_t>>());
  }

  const auto& wr = want.at("rouge_l");
  check_close(got.rouge_l.fmeasure, wr.at("fmeasure").get<double>(), diffs().rouge);
  check_close(got.rouge_l.precision, wr.at("precision").get<double>(), diffs().rouge);
  check_close(got.rouge_l.recall, wr.at("recall").get<double>(), diffs().rouge);
  REQUIRE(got.rouge_l.per_prediction.size() == wr.at("per_prediction").size());
  for (std::size_t i = 0; i < got.rouge_l.per_prediction.size(); ++i) {
    CAPTURE(i);
    const auto& p = wr.at("per_prediction")[i];
    check_close(got.rouge_l.per_prediction[i].precision, p[0].get<double>(), diffs().rouge);
    check_close(got.rouge_l.per_prediction[i].recall, p[1].get<double>(), diffs().rouge);
    check_close(got.rouge_l.per_prediction[i].fmeasure, p[2].get<double>(), diffs().rouge);
    CHECK(got.rouge_l.best_reference[i] == wr.at("best_reference")[i].get<std::size_t>());
  }

  const auto& wc = want.at("cider_d");
  check_close(got.cider_d.score, wc.at("score").get<double>(), diffs().cider);
  REQUIRE(got.cider_d.per_prediction.size() == wc.at("per_prediction").size());
  for (std::size_t i = 0; i < got.cider_d.per_prediction.size(); ++i) {
    CAPTURE(i);
    check_close(got.cider_d.per_prediction[i], wc.at("per_prediction")[i].get<double>(), diffs().cider);
  }
}

/// Writes `text` to `name` in `dir` and returns the path.
std::string write(const test::temp_dir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.file(name);
  test::write_bytes(path, text);
  return path;
}

/// Expects load_caption_corpus to throw E whose message names the file, and contains every needle.
template <class E>
void expect_error(const std::string& preds, const std::string& refs, const std::string& file_named,
                  std::initializer_list<std::string> needles) {
  test::temp_dir dir;
  const std::string p = write(dir, "p.jsonl", preds), r = write(dir, "r.jsonl", refs);
  const std::string named = file_named == "p" ? p : r;
  try {
    metrics::load_caption_corpus(p, r);
    FAIL("accepted a malformed corpus");
  } catch (const E& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(e.file() == named);
    CHECK(msg.find(named) != std::string::npos);
    for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
  }
}

const std::string one_ref = "{\"id\": 1, \"captions\": [\"a cat\"]}\n";
const std::string one_pred = "{\"id\": 1, \"caption\": \"a cat\"}\n";

}  // namespace

TEST_CASE("metrics: each tokenisation equals its library's, caption by caption") {
  const json tokens = read_json(test::fixture("metrics/tokens.json"));
  REQUIRE(tokens.size() > 1000);
  for (const auto& t : tokens) {
    const auto text = t.at("text").get<std::string>();
    CAPTURE(text);
    CHECK(metrics::tokenize_13a(text) == t.at("bleu").get<std::string>());
    CHECK(metrics::tokenize_rouge(text) == t.at("rouge").get<std::vector<std::string>>());
    CHECK(metrics::tokenize_cider(text) == t.at("cider").get<std::vector<std::string>>());
  }
}

TEST_CASE("metrics: BLEU, ROUGE-L and CIDEr-D of the JSONL corpus equal sacrebleu, rouge-score, pycocoevalcap") {
  const auto corpus = metrics::load_caption_corpus(test::fixture("metrics/predictions.jsonl"),
                                                   test::fixture("metrics/references.jsonl"));
  const json& want = expected();
  REQUIRE(corpus.predictions.size() == want.at("count").get<std::size_t>());
  REQUIRE(corpus.predictions.size() >= 300);
  CHECK(corpus.ids[0] == json(3));
  CHECK(corpus.ids[1] == json("img_0001"));
  std::size_t most_refs = 0, fewest_refs = 99;
  for (const auto& r : corpus.references) most_refs = std::max(most_refs, r.size()), fewest_refs = std::min(fewest_refs, r.size());
  CHECK(fewest_refs == 1);
  CHECK(most_refs == 5);

  diffs() = {};
  const auto e = metrics::evaluate(test::fixture("metrics/predictions.jsonl"), test::fixture("metrics/references.jsonl"));
  check_results(e, want);
  report();

  // the JSON the CLI prints
  const json j = metrics::to_json(e, true);
  CHECK(j.at("count") == corpus.predictions.size());
  CHECK(std::abs(j.at("bleu").at("score").get<double>() - want.at("bleu").at("score").get<double>()) <= tolerance);
  CHECK(std::abs(j.at("rouge_l").at("fmeasure").get<double>() - want.at("rouge_l").at("fmeasure").get<double>()) <=
        tolerance);
  CHECK(std::abs(j.at("cider_d").at("score").get<double>() - want.at("cider_d").at("score").get<double>()) <=
        tolerance);
  CHECK(j.at("per_caption").size() == corpus.predictions.size());
  CHECK(j.at("per_caption")[1].at("id") == "img_0001");
  CHECK(j.at("per_caption")[2].at("bleu_stats").size() == 10);
  CHECK(metrics::to_json(e).count("per_caption") == 0);
}

TEST_CASE("metrics: small corpora at the edges of each formula") {
  diffs() = {};
  for (const auto& c : expected().at("small")) {
    CAPTURE(c.at("name").get<std::string>());
    const auto preds = c.at("predictions").get<std::vector<std::string>>();
    const auto refs = c.at("references").get<metrics::reference_lists>();
    check_results(metrics::evaluate(preds, refs), c);
  }
  report();
}

TEST_CASE("metrics: CIDEr-D on text that is already tokenised, and single-pair ROUGE-L") {
  const auto corpus = metrics::load_caption_corpus(test::fixture("metrics/predictions.jsonl"),
                                                   test::fixture("metrics/references.jsonl"));
  // pre_tokenize = false splits on whitespace only: given tokenize_cider's output joined by spaces, it is the
  // same computation as pycocoevalcap's on those strings.
  auto joined = [](std::string_view text) {
    std::string out;
    for (const auto& t : metrics::tokenize_cider(text)) out += (out.empty() ? "" : " ") + t;
    return out;
  };
  std::vector<std::string> preds;
  metrics::reference_lists refs;
  for (std::size_t i = 0; i < corpus.predictions.size(); ++i) {
    preds.push_back(joined(corpus.predictions[i]));
    refs.emplace_back();
    for (const auto& r : corpus.references[i]) refs.back().push_back(joined(r));
  }
  metrics::cider_options raw;
  raw.pre_tokenize = false;
  const auto c = metrics::cider_d(preds, refs, raw);
  check_close(c.score, expected().at("cider_d").at("score").get<double>(), diffs().cider);

  const auto s = metrics::rouge_l_single("The cat sat on the mat.", "a cat was sitting on the mat");
  CHECK(s.precision == doctest::Approx(4.0 / 6.0));
  CHECK(s.recall == doctest::Approx(4.0 / 7.0));
  CHECK(metrics::lcs_length({"a", "b", "c", "d"}, {"b", "d", "a"}) == 2);
}

TEST_CASE("metrics: misuse of the vector API is refused") {
  CHECK_THROWS_AS(metrics::corpus_bleu({}, {}), invalid_argument);
  CHECK_THROWS_AS(metrics::rouge_l({"a"}, {}), invalid_argument);
  CHECK_THROWS_AS(metrics::cider_d({"a"}, {{}}), invalid_argument);
  CHECK_THROWS_AS(metrics::corpus_bleu({"a\xff"}, {{"a"}}), invalid_argument);
  CHECK_THROWS_AS(metrics::cider_d({"a"}, {{"\xc3"}}), invalid_argument);
  metrics::cider_options zero;
  zero.n = 0;
  CHECK_THROWS_AS(metrics::cider_d({"a"}, {{"a"}}, zero), invalid_argument);
}

TEST_CASE("metrics: the JSONL reader accepts ids of both types in any order, and blank lines") {
  test::temp_dir dir;
  const std::string p = write(dir, "p.jsonl",
                              "{\"id\": \"x\", \"caption\": \"a dog\", \"score\": 1}\r\n\n"
                              "{\"id\": 7, \"caption\": \"\"}\n  \n{\"id\": \"7\", \"caption\": \"caf\\u00e9\"}");
  const std::string r = write(dir, "r.jsonl",
                              "{\"id\": \"7\", \"captions\": [\"a\"]}\n{\"id\": 7, \"captions\": [\"b\", \"c\"]}\n"
                              "{\"id\": \"x\", \"captions\": [\"a dog\", \"\"]}\n");
  const auto c = metrics::load_caption_corpus(p, r);
  REQUIRE(c.predictions.size() == 3);
  CHECK(c.ids == std::vector<json>{"x", 7, "7"});
  CHECK(c.predictions[2] == "café");
  CHECK(c.references[0] == std::vector<std::string>{"a dog", ""});
  CHECK(c.references[1] == std::vector<std::string>{"b", "c"});
  CHECK(c.references[2] == std::vector<std::string>{"a"});
}

TEST_CASE("metrics: malformed JSONL is refused with the file, line and field named") {
  SUBCASE("missing file") {
    test::temp_dir dir;
    const std::string r = write(dir, "r.jsonl", one_ref);
    CHECK_THROWS_AS(metrics::load_caption_corpus(dir.file("nope.jsonl"), r), load_error);
  }
  SUBCASE("not JSON") { expect_error<load_error>(one_pred + "{\"id\": 2, \"caption\": \n", one_ref, "p", {"line 2", "not valid JSON"}); }
  SUBCASE("not an object") { expect_error<load_error>(one_pred, "[1, 2]\n", "r", {"line 1", "expected a JSON object"}); }
  SUBCASE("invalid UTF-8 bytes") {
    expect_error<load_error>(one_pred + "\n{\"id\": 2, \"caption\": \"caf\xc3\x28\"}\n", one_ref, "p",
                             {"line 3", "UTF-8", "column 26"});
  }
  SUBCASE("lone surrogate escape") {
    expect_error<load_error>(one_pred, "{\"id\": 1, \"captions\": [\"ok\", \"\\ud800\"]}\n", "r",
                             {"line 1", "not valid JSON", "surrogate"});
  }
  SUBCASE("empty predictions") { expect_error<load_error>("\n\n", one_ref, "p", {"no predictions"}); }
  SUBCASE("missing id") { expect_error<config_error>("{\"caption\": \"a\"}\n", one_ref, "p", {"line 1", "'id'", "missing"}); }
  SUBCASE("float id") { expect_error<config_error>("{\"id\": 1.5, \"caption\": \"a\"}\n", one_ref, "p", {"'id'", "string or an integer"}); }
  SUBCASE("missing caption") { expect_error<config_error>("{\"id\": 1, \"captions\": [\"a\"]}\n", one_ref, "p", {"'caption'", "missing"}); }
  SUBCASE("caption not a string") { expect_error<config_error>("{\"id\": 1, \"caption\": 3}\n", one_ref, "p", {"'caption'", "must be a string"}); }
  SUBCASE("missing captions") { expect_error<config_error>(one_pred, "{\"id\": 1, \"caption\": \"a\"}\n", "r", {"'captions'", "missing"}); }
  SUBCASE("captions not an array") { expect_error<config_error>(one_pred, "{\"id\": 1, \"captions\": \"a\"}\n", "r", {"'captions'", "array"}); }
  SUBCASE("captions empty") { expect_error<config_error>(one_pred, "{\"id\": 1, \"captions\": []}\n", "r", {"'captions'", "empty"}); }
  SUBCASE("captions with a number") { expect_error<config_error>(one_pred, "{\"id\": 1, \"captions\": [\"a\", 2]}\n", "r", {"'captions[1]'"}); }
  SUBCASE("repeated prediction id") { expect_error<config_error>(one_pred + one_pred, one_ref, "p", {"line 2", "repeats line 1"}); }
  SUBCASE("repeated reference id") { expect_error<config_error>(one_pred, one_ref + "\n" + one_ref, "r", {"line 3", "repeats line 1"}); }
  SUBCASE("prediction without references") {
    expect_error<config_error>(one_pred + "{\"id\": \"b\", \"caption\": \"x\"}\n", one_ref, "r",
                               {"no references", "\"b\"", "line 2"});
  }
  SUBCASE("references without prediction") {
    expect_error<config_error>(one_pred, one_ref + "{\"id\": 9, \"captions\": [\"x\"]}\n", "p",
                               {"no prediction", "integer id 9", "line 2"});
  }
  SUBCASE("an integer id against a string id") {
    expect_error<config_error>(one_pred, "{\"id\": \"1\", \"captions\": [\"a cat\"]}\n", "r",
                               {"no references", "integer id 1", "it has the string id \"1\""});
  }
}
