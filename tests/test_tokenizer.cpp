// Tokenizers against Hugging Face `tokenizers` 0.23.3: the shared reference strings, then a corpus of 350 strings
// (many scripts, emoji, combining marks, whitespace and control characters, random text from the whole code
// space, inputs of several KB) through eleven tokenizer files (tools/make_tokenizer_reference.py), id for id and
// decoded text for decoded text; the vocab.json + merges.txt and vocab.txt fallbacks; and every malformed input
// giving a typed error that names the file and the field (or the byte offset of bad UTF-8).

#include "test_util.hpp"

#include <qformer/io/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <random>

using namespace qformer;
using nlohmann::json;

namespace {

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return json::parse(in);
}

std::string tok_file(const std::string& name) { return test::fixture("tokenizer/" + name); }

std::string show(const std::string& s) { return json(s).dump().substr(0, 300); }

const json& corpus() {
  static const json c = read_json(tok_file("corpus.json"));
  return c;
}

/// Expects `f` to throw E whose message contains every needle.
template <class E, class F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    FAIL("no error was thrown");
  } catch (const E& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
  }
}

/// A tokenizer.json built from the small WordPiece fixture with one part replaced.
std::string wordpiece_with(const std::string& key, const json& value) {
  json j = read_json(tok_file("wordpiece_tokenizer.json"));
  j[key] = value;
  return j.dump();
}

}  // namespace

TEST_CASE("tokenizer: the shared reference strings, ids and decoded text") {
  const json ref = read_json(tok_file("reference.json"));
  for (const char* name : {"bpe", "wordpiece", "unigram"}) {
    const tokenizer t = tokenizer::from_file(tok_file(std::string(name) + "_tokenizer.json"));
    for (const json& c : ref[name]) {
      const std::string text = c["text"].get<std::string>();
      CAPTURE(name);
      CAPTURE(show(text));
      const auto ids = t.encode(text);
      CHECK(ids == c["ids"].get<std::vector<std::int64_t>>());
      if (c.contains("decoded")) CHECK(t.decode(ids) == c["decoded"].get<std::string>());
    }
  }
}

TEST_CASE("tokenizer: corpus of 350 strings x 11 tokenizer files, id for id") {
  const json& c = corpus();
  const auto texts = c["texts"].get<std::vector<std::string>>();
  REQUIRE(texts.size() >= 300);
  REQUIRE(c["tokenizers"].size() == 11);
  for (const auto& [name, spec] : c["tokenizers"].items()) {
    const auto& name_copy = name;  // clang 14 cannot capture a structured binding
    CAPTURE(name_copy);
    const tokenizer t = tokenizer::from_file(tok_file(spec["file"].get<std::string>()));
    const auto prefix = spec["prefix"].get<std::vector<std::int64_t>>();
    const auto suffix = spec["suffix"].get<std::vector<std::int64_t>>();
    std::size_t id_matches = 0, decode_matches = 0;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      CAPTURE(i);
      CAPTURE(show(texts[i]));
      const auto want = spec["ids"][i].get<std::vector<std::int64_t>>();
      const auto plain = t.encode(texts[i], false);
      CHECK(plain == want);
      std::vector<std::int64_t> full_want = prefix;
      full_want.insert(full_want.end(), want.begin(), want.end());
      full_want.insert(full_want.end(), suffix.begin(), suffix.end());
      const auto full = t.encode(texts[i], true);
      CHECK(full == full_want);
      id_matches += plain == want && full == full_want;
      const std::string decoded = t.decode(full_want);
      CHECK(decoded == spec["decoded"][i].get<std::string>());
      decode_matches += decoded == spec["decoded"][i].get<std::string>();
    }
    MESSAGE(name << ": " << id_matches << "/" << texts.size() << " id sequences, " << decode_matches << "/"
                 << texts.size() << " decoded texts equal to tokenizers'");
    CHECK(t.vocab_size() == spec["vocab_size"].get<std::size_t>());
    for (const auto& [token, id] : spec["token_to_id"].items()) {
      const auto& token_copy = token;  // clang 14 cannot capture a structured binding
      CAPTURE(token_copy);
      const auto got = t.token_to_id(token);
      if (id.is_null()) CHECK_FALSE(got.has_value());
      else CHECK(got == std::optional<std::int64_t>(id.get<std::int64_t>()));
    }
    for (const auto& [id, token] : spec["id_to_token"].items()) {
      const auto& id_copy = id;  // clang 14 cannot capture a structured binding
      CAPTURE(id_copy);
      const auto got = t.id_to_token(std::stoll(id));
      if (token.is_null()) CHECK_FALSE(got.has_value());
      else CHECK(got == std::optional<std::string>(token.get<std::string>()));
    }
  }
}

TEST_CASE("tokenizer: every code point, alone, between spaces and between letters, as tokenizers encodes it") {
  // Hashes of the ids tokenizers gives for all 1,112,064 scalar values, 700 to a string, in three contexts
  // (tools/make_tokenizer_reference.py): this pins every per-character table (letters, numbers, whitespace,
  // control, punctuation, marks, lowercase, NFD / NFKC, grapheme breaks, the T5 charsmap) to the library's.
  std::vector<char32_t> cps;
  for (char32_t c = 0; c < 0x110000; ++c)
    if (c < 0xD800 || c > 0xDFFF) cps.push_back(c);
  auto strings = [&](const std::string& joiner) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < cps.size(); i += 700) {
      std::string s;
      for (std::size_t k = i; k < std::min(cps.size(), i + 700); ++k) {
        if (k > i) s += joiner;
        unicode::append_utf8(s, cps[k]);
      }
      if (joiner == "a") s += "\u0301";
      out.push_back(std::move(s));
    }
    return out;
  };
  const std::pair<const char*, std::string> contexts[] = {{"plain", ""}, {"spaced", " "}, {"after_a", "a"}};
  for (const auto& [name, spec] : corpus()["tokenizers"].items()) {
    if (!spec.contains("codepoint_hashes")) continue;
    const tokenizer t = tokenizer::from_file(tok_file(spec["file"].get<std::string>()));
    for (const auto& [ctx, joiner] : contexts) {
      const auto& name_copy = name;  // clang 14 cannot capture a structured binding
      CAPTURE(name_copy);
      const auto& ctx_copy = ctx;  // clang 14 cannot capture a structured binding
      CAPTURE(ctx_copy);
      const auto want = spec["codepoint_hashes"][ctx].get<std::vector<std::uint64_t>>();
      const auto texts = strings(joiner);
      REQUIRE(want.size() == (texts.size() + 63) / 64);
      for (std::size_t g = 0; g < want.size(); ++g) {
        std::uint64_t h = 14695981039346656037ull;
        for (std::size_t i = 64 * g; i < std::min(texts.size(), 64 * g + 64); ++i) {
          auto ids = t.encode(texts[i], false);
          ids.push_back(-1);
          for (const std::int64_t x : ids) {
            h ^= static_cast<std::uint64_t>(x + 1);
            h *= 1099511628211ull;
          }
        }
        CAPTURE(g);  // strings 64g .. 64g+63, i.e. code points from about U+(44800 g)
        CHECK(h == want[g]);
      }
    }
  }
}

TEST_CASE("tokenizer: T5's Precompiled charsmap (a real sentencepiece nmt_nfkc map)") {
  const tokenizer t = tokenizer::from_file(tok_file("t5_tokenizer.json"));
  // NFKC through the charsmap: full-width letters, the fi ligature, a circled digit; T5 appends </s>.
  const auto ids = t.encode("ＡＢＣ ﬁ ①");
  CHECK(ids == std::vector<std::int64_t>{120, 75, 78, 55, 73, 1});  // tokenizers: ▁AB C ▁f i ▁1 </s>
  CHECK(ids.back() == *t.token_to_id("</s>"));
  CHECK(t.eos_token_id() == t.token_to_id("</s>"));
  CHECK(t.pad_token_id() == t.token_to_id("<pad>"));
  CHECK(t.unk_token_id() == std::optional<std::int64_t>(2));
  CHECK(t.decode(ids) == "ABC fi 1");
  CHECK(t.is_special(*t.token_to_id("<extra_id_0>")));
}

TEST_CASE("tokenizer: from_folder falls back to vocab.json + merges.txt and to vocab.txt") {
  const json& c = corpus();
  const auto texts = c["texts"].get<std::vector<std::string>>();
  test::temp_dir bpe_dir, wp_dir, json_dir, empty_dir;
  std::filesystem::copy_file(tok_file("vocab.json"), bpe_dir.file("vocab.json"));
  std::filesystem::copy_file(tok_file("merges.txt"), bpe_dir.file("merges.txt"));
  std::filesystem::copy_file(tok_file("vocab.txt"), wp_dir.file("vocab.txt"));
  std::filesystem::copy_file(tok_file("bpe_tokenizer.json"), json_dir.file("tokenizer.json"));
  test::write_bytes(json_dir.file("special_tokens_map.json"), R"({"bos_token": "</s>", "eos_token": {"content": "</s>"}})");

  SUBCASE("byte-level BPE from vocab.json + merges.txt equals bpe_tokenizer.json") {
    const tokenizer fallback = tokenizer::from_folder(bpe_dir.path.string());
    const tokenizer full = tokenizer::from_file(tok_file("bpe_tokenizer.json"));
    const auto& want = c["tokenizers"]["bpe"]["ids"];
    for (std::size_t i = 0; i < texts.size(); ++i) {
      CAPTURE(show(texts[i]));
      CHECK(fallback.encode(texts[i]) == want[i].get<std::vector<std::int64_t>>());
      CHECK(fallback.decode(want[i].get<std::vector<std::int64_t>>()) == c["tokenizers"]["bpe"]["decoded"][i].get<std::string>());
    }
    CHECK(fallback.vocab_size() == full.vocab_size());
    CHECK(fallback.eos_token_id() == full.token_to_id("</s>"));
    CHECK(fallback.pad_token_id() == full.token_to_id("<pad>"));
  }
  SUBCASE("WordPiece from vocab.txt equals wordpiece_tokenizer.json, plus [CLS] ... [SEP]") {
    const tokenizer fallback = tokenizer::from_folder(wp_dir.path.string());
    const auto& want = c["tokenizers"]["wordpiece"]["ids"];
    const std::int64_t cls = *fallback.token_to_id("[CLS]"), sep = *fallback.token_to_id("[SEP]");
    for (std::size_t i = 0; i < texts.size(); ++i) {
      CAPTURE(show(texts[i]));
      auto ids = want[i].get<std::vector<std::int64_t>>();
      CHECK(fallback.encode(texts[i], false) == ids);
      ids.insert(ids.begin(), cls);
      ids.push_back(sep);
      CHECK(fallback.encode(texts[i]) == ids);
    }
    CHECK(fallback.unk_token_id() == fallback.token_to_id("[UNK]"));
    CHECK(fallback.pad_token_id() == fallback.token_to_id("[PAD]"));
  }
  SUBCASE("tokenizer.json wins, with special_tokens_map.json naming bos / eos") {
    const tokenizer t = tokenizer::from_folder(json_dir.path.string());
    CHECK(t.source() == json_dir.file("tokenizer.json"));
    CHECK(t.bos_token_id() == t.token_to_id("</s>"));  // OPT's bos is </s>
    CHECK(t.eos_token_id() == t.token_to_id("</s>"));
  }
  SUBCASE("a folder with none of them") {
    expect_error<load_error>([&] { (void)tokenizer::from_folder(empty_dir.path.string()); }, {"no tokenizer.json"});
  }
}

TEST_CASE("tokenizer: invalid UTF-8 input names the bad byte's offset") {
  const tokenizer t = tokenizer::from_file(tok_file("bpe_tokenizer.json"));
  const std::pair<std::string, std::size_t> cases[] = {
      {std::string("ok \x80 no", 6), 3},          // lone continuation byte
      {std::string("ab\xC3", 3), 2},              // truncated at the end
      {std::string("a\xC0\xAF", 3), 1},           // overlong
      {std::string("xx\xED\xA0\x80", 5), 2},      // encoded surrogate
      {std::string("\xF4\x90\x80\x80", 4), 0},    // above U+10FFFF
      {std::string("\xE2\x82 z", 4), 2},          // a lead byte without its continuations
      {std::string("\xFF", 1), 0},
  };
  for (const auto& [bytes, offset] : cases) {
    const auto& offset_copy = offset;  // clang 14 cannot capture a structured binding
    CAPTURE(offset_copy);
    try {
      (void)t.encode(bytes);
      FAIL("accepted invalid UTF-8");
    } catch (const encoding_error& e) {
      CHECK(e.offset() == offset);
      CHECK(std::string(e.what()).find("offset " + std::to_string(offset)) != std::string::npos);
    }
    CHECK_THROWS_AS((void)t.encode(bytes), invalid_argument);  // encoding_error is an invalid_argument
  }
}

TEST_CASE("tokenizer: malformed tokenizer.json files name the file and the field") {
  test::temp_dir dir;
  const std::string path = dir.file("tokenizer.json");
  auto load = [&](const std::string& text) {
    test::write_bytes(path, text);
    return tokenizer::from_file(path);
  };
  auto expect_config = [&](const std::string& text, std::initializer_list<std::string> needles) {
    try {
      (void)load(text);
      FAIL("accepted a malformed tokenizer.json");
    } catch (const config_error& e) {
      const std::string msg = e.what();
      CAPTURE(msg);
      CHECK(e.file() == path);
      for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
    }
  };
  const json wp = read_json(tok_file("wordpiece_tokenizer.json"));
  const json bpe = read_json(tok_file("bpe_tokenizer.json"));

  SUBCASE("missing file") { expect_error<load_error>([&] { (void)tokenizer::from_file(dir.file("none.json")); }, {"none.json"}); }
  SUBCASE("not JSON") { expect_error<load_error>([&] { (void)load("{\"model\": [1,"); }, {path, "not valid JSON"}); }
  SUBCASE("root not an object") { expect_config("[1, 2]", {"(root)"}); }
  SUBCASE("missing model") { expect_config(R"({"version": "1.0"})", {"'model'", "missing"}); }
  SUBCASE("unknown version") { expect_config(R"({"version": "9.9", "model": {}})", {"'version'"}); }
  SUBCASE("unknown model type") { expect_config(R"({"model": {"type": "Magic", "vocab": {}}})", {"'model.type'", "Magic"}); }
  SUBCASE("untyped model") { expect_config(R"({"model": {"vocab": {}}})", {"'model.type'"}); }
  SUBCASE("vocab with a string id") {
    json j = wp;
    j["model"]["vocab"]["cat"] = "7";
    expect_config(j.dump(), {"model.vocab[\"cat\"]", "expected an integer"});
  }
  SUBCASE("vocab with a negative id") {
    json j = wp;
    j["model"]["vocab"]["cat"] = -1;
    expect_config(j.dump(), {"model.vocab[\"cat\"]", "outside"});
  }
  SUBCASE("vocab is an array") {
    json j = wp;
    j["model"]["vocab"] = json::array({1, 2});
    expect_config(j.dump(), {"'model.vocab'", "expected an object"});
  }
  SUBCASE("merge names an unknown token") {
    json j = bpe;
    j["model"]["merges"].push_back("zzz qqq");
    expect_config(j.dump(), {"model.merges[201]", "'zzz'", "not in the vocabulary"});
  }
  SUBCASE("merge without a space") {
    json j = bpe;
    j["model"]["merges"][3] = "nospace";
    expect_config(j.dump(), {"model.merges[3]"});
  }
  SUBCASE("merge of the wrong type") {
    json j = bpe;
    j["model"]["merges"][0] = 5;
    expect_config(j.dump(), {"model.merges[0]"});
  }
  SUBCASE("BPE dropout") {
    json j = bpe;
    j["model"]["dropout"] = 0.1;
    expect_config(j.dump(), {"model.dropout"});
  }
  SUBCASE("unigram entries and unk_id") {
    json u = read_json(tok_file("unigram_tokenizer.json"));
    json j = u;
    j["model"]["vocab"][5] = json::array({"x"});
    expect_config(j.dump(), {"model.vocab[5]", "[token, score]"});
    j = u;
    j["model"]["unk_id"] = 100000;
    expect_config(j.dump(), {"model.unk_id", "above"});
  }
  SUBCASE("unknown normalizer, pre-tokenizer, post-processor, decoder") {
    expect_config(wordpiece_with("normalizer", {{"type", "Sparkle"}}), {"'normalizer.type'", "Sparkle"});
    expect_config(wordpiece_with("normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Lowercase"}}, {{"type", "Nope"}}}}}),
                  {"'normalizer.normalizers[1].type'", "Nope"});
    expect_config(wordpiece_with("pre_tokenizer", {{"type", "Sparkle"}}), {"'pre_tokenizer.type'"});
    expect_config(wordpiece_with("post_processor", {{"type", "Sparkle"}}), {"'post_processor.type'"});
    expect_config(wordpiece_with("decoder", {{"type", "Sparkle"}}), {"'decoder.type'"});
    expect_config(wordpiece_with("normalizer", {{"kind", "Lowercase"}}), {"'normalizer.type'", "missing"});
    expect_config(wordpiece_with("normalizer", {{"type", "Strip"}, {"strip_left", "yes"}}), {"normalizer.strip_left"});
  }
  SUBCASE("regex the engine does not support") {
    expect_config(wordpiece_with("normalizer", {{"type", "Replace"}, {"pattern", {{"Regex", "(?<=a)b"}}}, {"content", ""}}),
                  {"'normalizer.pattern.Regex'", "not supported"});
    expect_config(wordpiece_with("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "\\p{Han}"}}}, {"behavior", "Isolated"}}),
                  {"pre_tokenizer.pattern.Regex", "Han"});
    expect_config(wordpiece_with("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(ab"}}}, {"behavior", "Isolated"}}),
                  {"pre_tokenizer.pattern.Regex"});
    expect_config(wordpiece_with("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"String", "x"}}}, {"behavior", "Sideways"}}),
                  {"pre_tokenizer.behavior", "Sideways"});
  }
  SUBCASE("Precompiled: bad base64, truncated trie") {
    expect_config(wordpiece_with("normalizer", {{"type", "Precompiled"}, {"precompiled_charsmap", "AB$="}}),
                  {"normalizer.precompiled_charsmap", "base64"});
    // Claims a 4 KB trie in 8 bytes.
    expect_config(wordpiece_with("normalizer", {{"type", "Precompiled"}, {"precompiled_charsmap", "ABAAAAAAAAA="}}),
                  {"normalizer.precompiled_charsmap", "runs past"});
  }
  SUBCASE("TemplateProcessing naming a missing special token") {
    expect_config(wordpiece_with("post_processor", {{"type", "TemplateProcessing"},
                                                    {"single", {{{"SpecialToken", {{"id", "[X]"}, {"type_id", 0}}}}}},
                                                    {"special_tokens", json::object()}}),
                  {"post_processor.single[0].SpecialToken.id", "[X]"});
  }
  SUBCASE("added token without content, or with a non-boolean flag") {
    json j = wp;
    j["added_tokens"][0].erase("content");
    expect_config(j.dump(), {"added_tokens[0].content", "missing"});
    j = wp;
    j["added_tokens"][2]["lstrip"] = 1;
    expect_config(j.dump(), {"added_tokens[2].lstrip"});
  }
  SUBCASE("nesting is bounded") {
    json n = {{"type", "Lowercase"}};
    for (int i = 0; i < 100; ++i) n = {{"type", "Sequence"}, {"normalizers", {n}}};
    expect_config(wordpiece_with("normalizer", n), {"nested too deeply"});
  }
  SUBCASE("merges.txt with a bad line") {
    test::temp_dir d;
    std::filesystem::copy_file(tok_file("vocab.json"), d.file("vocab.json"));
    test::write_bytes(d.file("merges.txt"), "#version: 0.2\nĠ t\ni n x\n");
    expect_error<config_error>([&] { (void)tokenizer::from_folder(d.path.string()); }, {"merges.txt", "line 3"});
    test::write_bytes(d.file("merges.txt"), "Ġ t\nqq zz\n");
    expect_error<config_error>([&] { (void)tokenizer::from_folder(d.path.string()); }, {"merges.txt", "line 2", "'qq'"});
  }
}

TEST_CASE("tokenizer: unknown tokens a model cannot express are typed errors") {
  // A WordPiece whose [UNK] is missing from the vocabulary meets a word it cannot split.
  json j = read_json(tok_file("wordpiece_tokenizer.json"));
  j["model"]["unk_token"] = "[NOPE]";
  const tokenizer t = tokenizer::from_json(j.dump(), "wp.json");
  CHECK(t.encode("a cat").size() == 2);
  expect_error<config_error>([&] { (void)t.encode("ŋŋŋ"); }, {"wp.json", "model.unk_token"});
}

TEST_CASE("tokenizer: the regex engine (leftmost-first, as onig)") {
  using detail::tok::regex;
  auto spans = [](const char32_t* pattern, const char32_t* text) {
    std::string out;
    for (const auto& [b, e] : regex(pattern).find_all(text)) {
      out += '[';  // (built piecewise: GCC 12 warns falsely on "[" + std::to_string(...))
      out += std::to_string(b);
      out += ',';
      out += std::to_string(e);
      out += ')';
    }
    return out;
  };
  CHECK(spans(U" {2,}", U"a  b c   d") == "[1,3)[6,9)");
  CHECK(spans(U"ab|abc", U"abc") == "[0,2)");                // first alternative wins, not the longest
  CHECK(spans(U"a+?", U"aaa") == "[0,1)[1,2)[2,3)");         // lazy
  CHECK(spans(U"\\s+(?!\\S)|\\s+", U"a   b") == "[1,3)[3,4)");
  CHECK(spans(U"(?i:'s|'t)", U"it'S x's") == "[2,4)[6,8)");
  CHECK(spans(U"\\p{N}{1,3}", U"12345") == "[0,3)[3,5)");
  CHECK(spans(U"^a|b$", U"ab\nab") == "[0,1)[1,2)[3,4)[4,5)");
  CHECK(spans(U"[^\\s\\p{L}]+", U"ab, 12!") == "[2,3)[4,7)");
  CHECK(spans(U"x*", U"abc") == "");                         // empty matches are skipped
  CHECK(spans(U"\\bcat\\b", U"cat concat cat") == "[0,3)[11,14)");
  CHECK_THROWS_AS(regex(U"a{3,1}"), std::string);
  CHECK_THROWS_AS(regex(U"[a-"), std::string);
  CHECK_THROWS_AS(regex(U"a{1001}"), std::string);
  CHECK_THROWS_AS(regex(U"(a{100}){1000}"), std::string);            // too large once expanded
  CHECK_THROWS_AS(regex(std::u32string(100000, U'(')), std::string);  // nesting is bounded, not recursed into
  CHECK_THROWS_AS(regex(U"a" + std::u32string(100000, U'*')), std::string);
}

TEST_CASE("tokenizer: random UTF-8 and long inputs never crash and decode round-trips byte-level BPE") {
  const tokenizer bpe = tokenizer::from_file(tok_file("bpe_tokenizer.json"));
  const tokenizer t5 = tokenizer::from_file(tok_file("t5_tokenizer.json"));
  const tokenizer wp = tokenizer::from_file(tok_file("wordpiece_tokenizer.json"));
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::string s;
    const int n = static_cast<int>(rng() % 64);
    for (int i = 0; i < n; ++i) {
      char32_t c = rng() % 0x110000;
      if (c >= 0xD800 && c <= 0xDFFF) c = 'x';
      if (rng() % 3 == 0) c = rng() % 0x80;
      unicode::append_utf8(s, c);
    }
    CAPTURE(show(s));
    CHECK(bpe.decode(bpe.encode(s)) == s);  // byte-level BPE loses nothing
    (void)t5.decode(t5.encode(s));
    (void)wp.decode(wp.encode(s));
  }
  const std::string long_word(200000, 'z');
  CHECK(wp.encode(long_word) == std::vector<std::int64_t>{*wp.unk_token_id()});  // over max_input_chars_per_word
  CHECK(bpe.decode(bpe.encode(long_word)) == long_word);
  CHECK(t5.decode(std::vector<std::int64_t>{-5, 1 << 30}).empty());  // unknown ids are skipped
}
