// safetensors, checkpoints and config.json: valid files round-trip; every malformed one gives a typed error
// whose message names the file and the tensor or field.

#include "test_util.hpp"

#include <qformer/io/checkpoint.hpp>
#include <qformer/io/safetensors.hpp>
#include <qformer/models/config.hpp>

#include <cstring>

using namespace qformer;

namespace {

/// A safetensors file from its JSON header text and data bytes; `claimed_length` overrides the length prefix.
std::string safetensors_bytes(const std::string& header, const std::string& data, std::uint64_t claimed_length = ~0ull) {
  const std::uint64_t n = claimed_length == ~0ull ? header.size() : claimed_length;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

/// Expects loading `bytes` as a safetensors file to throw load_error whose message contains every `needle`.
void expect_rejected(const std::string& bytes, std::initializer_list<std::string> needles) {
  test::temp_dir dir;
  const std::string path = dir.file("broken.safetensors");
  test::write_bytes(path, bytes);
  try {
    safetensors_file f(path);
    FAIL("accepted a malformed file");
  } catch (const load_error& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(msg.find(path) != std::string::npos);
    for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
  }
}

const std::string eight_bytes(8, '\x01');

}  // namespace

TEST_CASE("safetensors: written files read back, with dtype conversion") {
  test::temp_dir dir;
  const float f32[3] = {1.5f, -2.25f, 3.0f};
  const bf16 b16[2] = {bf16(0.5f), bf16(-7.0f)};
  const fp16 h16[2] = {fp16(0.125f), fp16(65504.0f)};
  const std::int64_t ids[4] = {2, 17, -1, 1LL << 40};
  write_safetensors(dir.file("a.safetensors"), {{"f", dtype::f32, {3}, f32}, {"b", dtype::bf16, {1, 2}, b16},
                                                {"h", dtype::f16, {2}, h16}, {"ids", dtype::i64, {2, 2}, ids}},
                    {{"format", "pt"}});
  safetensors_file f(dir.file("a.safetensors"));
  CHECK(f.entries().size() == 4);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.load<float>("f").data()[1] == -2.25f);
  CHECK(f.load<float>("b").data()[1] == -7.0f);
  CHECK(f.load<float>("h").data()[1] == 65504.0f);
  CHECK(to_float(f.load<bf16>("f").data()[0]) == 1.5f);
  CHECK(f.load<std::int64_t>("ids").data()[3] == (1LL << 40));
  CHECK(f.load<std::int64_t>("ids").shape() == shape{2, 2});
  CHECK_THROWS_AS(f.load<std::int64_t>("f"), load_error);  // float -> int is refused
  CHECK_THROWS_AS(f.load<float>("ids"), load_error);
  CHECK_THROWS_AS(f.at("missing"), load_error);
}

TEST_CASE("safetensors: malformed files are refused with the file and tensor named") {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  SUBCASE("empty file") { expect_rejected("", {"too short"}); }
  SUBCASE("truncated length prefix") { expect_rejected("\x10\x00\x00", {"too short"}); }
  SUBCASE("header length past the end") {
    expect_rejected(safetensors_bytes("{" + ok_entry + "}", eight_bytes, 4096), {"runs past the end"});
  }
  SUBCASE("header length absurd") {
    expect_rejected(safetensors_bytes("{}", "", 0xffffffffffffull), {"runs past the end"});
  }
  SUBCASE("truncated data") {
    expect_rejected(safetensors_bytes("{" + ok_entry + "}", "1234"), {"'t'", "past the data section"});
  }
  SUBCASE("header is not JSON") { expect_rejected(safetensors_bytes("{\"t\": [1,", ""), {"not valid JSON"}); }
  SUBCASE("header is not an object") { expect_rejected(safetensors_bytes("[1, 2]", ""), {"not a JSON object"}); }
  SUBCASE("entry is not an object") { expect_rejected(safetensors_bytes(R"({"t": 3})", ""), {"'t'", "not an object"}); }
  SUBCASE("missing dtype") {
    expect_rejected(safetensors_bytes(R"({"t":{"shape":[2],"data_offsets":[0,8]}})", eight_bytes), {"'t'", "dtype"});
  }
  SUBCASE("unknown dtype") {
    expect_rejected(safetensors_bytes(R"({"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", eight_bytes),
                    {"'t'", "unknown dtype 'Q4'"});
  }
  SUBCASE("negative shape") {
    expect_rejected(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight_bytes), {"'t'", "negative"});
  }
  SUBCASE("non-integer shape") {
    expect_rejected(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", eight_bytes), {"'t'", "shape"});
  }
  SUBCASE("rank above 4") {
    expect_rejected(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[1,1,1,1,2],"data_offsets":[0,8]}})", eight_bytes),
                    {"'t'", "rank 5"});
  }
  SUBCASE("shape product overflows") {
    expect_rejected(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", eight_bytes),
                    {"'t'", "overflows"});
  }
  SUBCASE("shape and size disagree") {
    expect_rejected(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight_bytes),
                    {"'t'", "needs 12 bytes"});
  }
  SUBCASE("reversed offsets") {
    expect_rejected(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", eight_bytes), {"'t'", "reversed"});
  }
  SUBCASE("offsets not integers") {
    expect_rejected(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,"8"]}})", eight_bytes), {"'t'", "data_offsets"});
  }
  SUBCASE("overlapping tensors") {
    expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight_bytes),
                    {"overlaps"});
  }
  SUBCASE("gap between tensors") {
    expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight_bytes), {"'a'", "gap"});
  }
  SUBCASE("unused trailing bytes") {
    expect_rejected(safetensors_bytes("{" + ok_entry + "}", eight_bytes + "xx"), {"data section is 10 bytes"});
  }
  SUBCASE("metadata with a non-string value") {
    expect_rejected(safetensors_bytes(R"({"__metadata__":{"format":1}})", ""), {"__metadata__"});
  }
}

TEST_CASE("safetensors: a path that is not a file") {
  CHECK_THROWS_AS(safetensors_file("/nonexistent/model.safetensors"), load_error);
  CHECK_THROWS_AS((safetensors_file(test::data_dir())), load_error);
}

TEST_CASE("checkpoint: missing tensors and wrong shapes name the file and tensor") {
  checkpoint ckpt(test::fixture("tiny-opt"));
  weight_scope root(ckpt);
  try {
    (void)root.load<float>("vision_model.post_layernorm.weight", {47});
    FAIL("accepted a wrong shape");
  } catch (const shape_error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("model.safetensors") != std::string::npos);
    CHECK(msg.find("vision_model.post_layernorm.weight") != std::string::npos);
    CHECK(msg.find("[48]") != std::string::npos);
    CHECK(msg.find("[47]") != std::string::npos);
  }
  try {
    (void)(root / "vision_model").load<float>("no_such_tensor", {1});
    FAIL("accepted a missing tensor");
  } catch (const load_error& e) {
    CHECK(std::string(e.what()).find("vision_model.no_such_tensor") != std::string::npos);
  }
  CHECK_THROWS_AS((checkpoint(test::data_dir())), load_error);  // a folder with no weights
}

TEST_CASE("checkpoint: sharded folders follow the index, and a lying index is refused") {
  checkpoint sharded(test::fixture("tiny-opt-sharded"));
  checkpoint single(test::fixture("tiny-opt"));
  CHECK(sharded.files().size() == 3);
  CHECK(sharded.names() == single.names());

  test::temp_dir dir;
  std::filesystem::copy(test::fixture("tiny-opt-sharded"), dir.path, std::filesystem::copy_options::recursive);
  const std::string index = dir.file("model.safetensors.index.json");
  auto rewrite_index = [&](const std::string& text) { test::write_bytes(index, text); };
  auto expect_index_error = [&](std::initializer_list<std::string> needles) {
    try {
      checkpoint c(dir.path.string());
      FAIL("accepted a bad index");
    } catch (const load_error& e) {
      const std::string msg = e.what();
      CAPTURE(msg);
      for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
    }
  };
  SUBCASE("shard path outside the folder") {
    rewrite_index(R"({"weight_map": {"query_tokens": "../model-00001-of-00003.safetensors"}})");
    expect_index_error({"query_tokens", "not a plain file name"});
  }
  SUBCASE("absolute shard path") {
    rewrite_index(R"({"weight_map": {"query_tokens": "/etc/passwd"}})");
    expect_index_error({"not a plain file name"});
  }
  SUBCASE("missing shard") {
    rewrite_index(R"({"weight_map": {"query_tokens": "model-00009-of-00009.safetensors"}})");
    expect_index_error({"model-00009-of-00009.safetensors", "does not exist"});
  }
  SUBCASE("tensor not in its shard") {
    rewrite_index(R"({"weight_map": {"no_such_tensor": "model-00001-of-00003.safetensors"}})");
    expect_index_error({"no_such_tensor", "missing from this shard"});
  }
  SUBCASE("index is not JSON") {
    rewrite_index("{\"weight_map\": ");
    expect_index_error({"model.safetensors.index.json", "not valid JSON"});
  }
  SUBCASE("index without weight_map") {
    rewrite_index("{}");
    expect_index_error({"weight_map"});
  }
}

TEST_CASE("config.json: absent fields take transformers' defaults") {
  const Blip2Config c = parse_blip2_config("{}", "config.json");
  CHECK(c.vision.hidden_size == 1408);
  CHECK(c.vision.num_hidden_layers == 39);
  CHECK(c.vision.layer_norm_eps == doctest::Approx(1e-6));
  CHECK(c.qformer.hidden_size == 768);
  CHECK(c.qformer.layer_norm_eps == doctest::Approx(1e-12));
  CHECK(c.qformer.cross_attention_frequency == 2);
  CHECK(c.qformer.encoder_hidden_size == 1408);
  CHECK(c.num_query_tokens == 32);
  CHECK(c.text.model_type == "opt");
  CHECK_FALSE(c.image_token_index.has_value());

  const Blip2Config t5 = load_blip2_config(test::fixture("tiny-t5"));
  CHECK(t5.text.model_type == "t5");
  CHECK(t5.text.hidden_size == 40);
  CHECK(t5.qformer.cross_attention_frequency == 1);
  CHECK(t5.qformer.encoder_hidden_size == 48);  // forced to the vision width
  const Blip2Config hub = parse_blip2_config(R"({"image_token_index": 50265, "vision_config": {"layer_norm_eps": 1e-5}})", "c.json");
  CHECK(hub.image_token_index == 50265);
  CHECK(hub.vision.layer_norm_eps == doctest::Approx(1e-5));
}

TEST_CASE("config.json: malformed configs name the file and field") {
  auto expect_field = [](const std::string& json, const std::string& field) {
    try {
      (void)parse_blip2_config(json, "/models/x/config.json");
      FAIL("accepted " << json);
    } catch (const config_error& e) {
      CAPTURE(std::string(e.what()));
      CHECK(e.field() == field);
      CHECK(e.file() == "/models/x/config.json");
      CHECK(std::string(e.what()).find(field) != std::string::npos);
    }
  };
  expect_field("{\"vision_config\": ", "(root)");
  expect_field("[]", "(root)");
  expect_field(R"({"vision_config": {"hidden_size": "48"}})", "vision_config.hidden_size");
  expect_field(R"({"vision_config": {"hidden_size": 48.0}})", "vision_config.hidden_size");
  expect_field(R"({"vision_config": {"hidden_size": -1}})", "vision_config.hidden_size");
  expect_field(R"({"vision_config": {"hidden_size": 0}})", "vision_config.hidden_size");
  expect_field(R"({"vision_config": {"num_hidden_layers": 1000000000}})", "vision_config.num_hidden_layers");
  expect_field(R"({"vision_config": {"hidden_size": 18446744073709551615}})", "vision_config.hidden_size");
  expect_field(R"({"vision_config": {"hidden_size": 48, "num_attention_heads": 5}})", "vision_config.num_attention_heads");
  expect_field(R"({"vision_config": {"image_size": 28, "patch_size": 5}})", "vision_config.patch_size");
  expect_field(R"({"vision_config": {"layer_norm_eps": "small"}})", "vision_config.layer_norm_eps");
  expect_field(R"({"vision_config": {"layer_norm_eps": -1e-6}})", "vision_config.layer_norm_eps");
  expect_field(R"({"vision_config": {"hidden_act": "silu"}})", "vision_config.hidden_act");
  expect_field(R"({"vision_config": {"qkv_bias": 1}})", "vision_config.qkv_bias");
  expect_field(R"({"vision_config": 7})", "vision_config");
  expect_field(R"({"qformer_config": {"num_attention_heads": 7}})", "qformer_config.num_attention_heads");
  expect_field(R"({"qformer_config": {"cross_attention_frequency": 0}})", "qformer_config.cross_attention_frequency");
  expect_field(R"({"text_config": {"model_type": "llama"}})", "text_config.model_type");
  expect_field(R"({"num_query_tokens": 0})", "num_query_tokens");
  expect_field(R"({"model_type": "clip"})", "model_type");
  expect_field(R"({"architectures": "Blip2"})", "architectures");
  CHECK_THROWS_AS(load_blip2_config("/nonexistent/folder"), load_error);
}
