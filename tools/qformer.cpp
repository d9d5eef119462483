// The qformer command-line program: caption, vqa, tokenize, inspect, dump (see usage_text).
//
// `dump`'s contract is fixed: tests and users verify conversions with it. It reads pixel_values (F32 [B,3,H,W])
// and writes, under the names of the reference folders, every tensor the model supports.

#include <qformer/metrics/evaluate.hpp>
#include <qformer/pipeline.hpp>
#include <qformer/qformer.hpp>
#if defined(QFORMER_WITH_CUDA)
#include <qformer/cuda.hpp>  // Blip2Pipeline<T, cuda>; its kernels are instantiated in bench_cuda.cu
#endif

#include "bench_command.hpp"

#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

constexpr const char* usage_text = R"(qformer — BLIP-2 and the Q-Former in C++

usage:
  qformer caption --model DIR --image PATH [generation options] [--prompt TEXT]
      Captions an image. PATH may also be a folder (every .png / .jpg / .jpeg in it) or a list file (.txt, one
      image path per line): then one JSON line per image goes to stdout and a progress bar to stderr.
  qformer vqa --model DIR --image PATH --question TEXT [generation options]
      Answers a question about an image (prompt "Question: {q} Answer:"); PATH as for caption.
  qformer match --model DIR --image PATH --text TEXT [--text TEXT ...]
      Image-text matching with a retrieval checkpoint (blip2-itm-vit-g): per text, the ITM match probability and
      logits and the ITC cosine score, as JSON lines.
  qformer rank --model DIR --images PATH... --texts TEXT... [--top-k K]
      ITC similarity of every image (files, folders or .txt lists) with every text, and each image's top-k texts,
      as one JSON object.
  qformer eval --predictions P.jsonl --references R.jsonl [--per-caption]
      Corpus BLEU-4 (sacrebleu, 13a), ROUGE-L (rouge-score) and CIDEr-D (pycocoevalcap) as one JSON object.
      P: lines {"id": ..., "caption": "..."}; R: lines {"id": ..., "captions": ["...", ...]}.
  qformer tokenize --tokenizer FILE_OR_DIR --text TEXT
      Prints the token ids of TEXT as one JSON array (special tokens added as the tokenizer's post-processor does).
  qformer bench [--stages vision,qformer,decode,caption] [--batches 1,8] [--dtypes f32,bf16,int8] [--repeats N]
                [--threads N] [--new-tokens N] [--device cpu|cuda] [--json]
      Times BLIP-2 at full size (blip2-opt-2.7b shapes, random weights made in process; fp32 needs ~16 GB of
      memory, bf16 ~8 GB): min / median ms, GFLOP/s or GB/s and the fraction of this machine's peak, measured
      in the same run by FMA, bf16 and memory-read probes. --json prints one JSON document for scripts.
      --device cuda (builds with -DQFORMER_CUDA=ON): the same stages on the first GPU (f32 or bf16; vision and
      qformer also as a replayed CUDA graph).
  qformer inspect --model DIR|FILE.safetensors
      Config summary, tensor count, bytes and dtypes of a Hub-style BLIP-2 folder; for one .safetensors file,
      its tensors (name, dtype, shape).
  qformer dump --model DIR --inputs IN.safetensors --out OUT.safetensors [--new-tokens N] [--dtype f32|bf16|f16]
      Runs the model on the inputs and writes every tensor it supports (floats as F32, ids as I64):
        pixel_values (F32 [B,3,H,W])  -> vision_last_hidden_state, vision_pooler_output,
                                         qformer_last_hidden_state, language_projection
        prompt_ids (I64 [B,T])        -> lm_logits, greedy_ids, beam3_ids
        padded_prompt_ids + padded_prompt_mask -> padded_lm_logits (OPT), padded_greedy_ids
        input_ids + attention_mask (retrieval) -> itm_logits, itc_logits_per_image, itc_image_embeds,
                                         itc_text_embeds
      The language model reads [projected queries; prompt]; greedy and beam search (3 beams, length penalty 1,
      early stopping) produce exactly --new-tokens tokens (default 20).
  qformer --help | --version

generation options (defaults: the folder's generation_config.json, else greedy, 20 new tokens):
  --beams N  --max-new-tokens N  --min-new-tokens N  --length-penalty X  --repetition-penalty X
  --sample  --top-k N  --top-p X  --temperature X  --seed N
  --dtype f32|bf16|f16|int8 (default f32; int8: bf16 with the language model's weights in int8, activations
  quantised per row)  --threads N  --batch-size N (images per forward pass, default 8)  --json
  --device cpu|cuda (default cpu; cuda: builds with -DQFORMER_CUDA=ON, the model on the first GPU, f32/bf16/f16)

Errors print one line on stderr and exit with status 1 (2 for a bad command line).
)";

/// Command-line usage mistakes (exit status 2).
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// "--name value" pairs (and bare "--flag"s) after the subcommand.
std::map<std::string, std::string> parse_options(int argc, char** argv, int first, const std::vector<std::string>& known,
                                                 const std::vector<std::string>& flags = {}) {
  std::map<std::string, std::string> out;
  for (int i = first; i < argc; ++i) {
    std::string key = argv[i];
    if (key.rfind("--", 0) != 0) throw usage_error("unexpected argument '" + key + "'");
    key = key.substr(2);
    if (std::find(flags.begin(), flags.end(), key) != flags.end()) {
      out[key] = "1";
      continue;
    }
    if (std::find(known.begin(), known.end(), key) == known.end()) throw usage_error("unknown option '--" + key + "'");
    if (i + 1 >= argc) throw usage_error("option '--" + key + "' needs a value");
    out[key] = argv[++i];
  }
  return out;
}

/// An integer option in [lo, hi].
long long integer_option(const std::map<std::string, std::string>& opts, const std::string& key, long long fallback, long long lo,
                         long long hi) {
  auto it = opts.find(key);
  if (it == opts.end()) return fallback;
  const std::string& v = it->second;
  std::size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty() || x < lo || x > hi)
    throw usage_error("--" + key + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
  return x;
}

/// A number option in [lo, hi].
float number_option(const std::map<std::string, std::string>& opts, const std::string& key, float fallback, double lo, double hi) {
  auto it = opts.find(key);
  if (it == opts.end()) return fallback;
  const std::string& v = it->second;
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty() || !(x >= lo && x <= hi))
    throw usage_error("--" + key + " must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
  return static_cast<float>(x);
}

std::string required(const std::map<std::string, std::string>& opts, const std::string& key) {
  auto it = opts.find(key);
  if (it == opts.end()) throw usage_error("missing --" + key);
  return it->second;
}

/// An error message as one line of stderr: line breaks and other control bytes become spaces.
std::string one_line(std::string message) {
  for (char& ch : message)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = ' ';
  return message;
}

int inspect(const std::map<std::string, std::string>& opts) {
  using namespace qformer;
  const std::string dir = required(opts, "model");
  std::error_code ec;
  const bool one_file = std::filesystem::is_regular_file(dir, ec);  // a lone .safetensors: its tensors, no config
  const checkpoint ckpt(dir);
  std::map<std::string, std::pair<std::size_t, std::size_t>> by_dtype;  // dtype -> (tensors, bytes)
  std::size_t bytes = 0;
  for (const auto& name : ckpt.names()) {
    const tensor_entry& e = ckpt.entry(name);
    auto& [n, b] = by_dtype[std::string(dtype_name(e.type))];
    ++n;
    b += e.end - e.begin;
    bytes += e.end - e.begin;
  }
  auto print_tensors = [&] {
    std::printf("files: %zu\n", ckpt.files().size());
    std::printf("tensors: %zu, %zu bytes (%.2f MiB)\n", ckpt.names().size(), bytes, double(bytes) / (1 << 20));
    for (const auto& [dt, nb] : by_dtype) std::printf("  %s: %zu tensors, %zu bytes\n", dt.c_str(), nb.first, nb.second);
  };
  if (one_file) {
    std::printf("file: %s\n", dir.c_str());
    print_tensors();
    for (const auto& name : ckpt.names())
      std::printf("  %s %s %s\n", name.c_str(), std::string(dtype_name(ckpt.entry(name).type)).c_str(),
                  ckpt.entry(name).dims.str().c_str());
    return 0;
  }
  const Blip2Config c = load_blip2_config(dir);
  std::printf("model: %s\n", dir.c_str());
  std::printf("architecture: %s\n", c.architecture.empty() ? "(unset)" : c.architecture.c_str());
  std::printf("vision: %lld layers, hidden %lld, heads %lld, mlp %lld, image %lld px, patch %lld, eps %g\n",
              (long long)c.vision.num_hidden_layers, (long long)c.vision.hidden_size, (long long)c.vision.num_attention_heads,
              (long long)c.vision.intermediate_size, (long long)c.vision.image_size, (long long)c.vision.patch_size,
              double(c.vision.layer_norm_eps));
  std::printf("qformer: %lld layers, hidden %lld, heads %lld, ffn %lld, cross-attention every %lld, %lld queries, text input %s\n",
              (long long)c.qformer.num_hidden_layers, (long long)c.qformer.hidden_size, (long long)c.qformer.num_attention_heads,
              (long long)c.qformer.intermediate_size, (long long)c.qformer.cross_attention_frequency,
              (long long)c.num_query_tokens, c.qformer.use_qformer_text_input ? "yes" : "no");
  std::printf("language model: %s, hidden %lld%s\n", c.text.model_type.c_str(), (long long)c.text.hidden_size,
              c.image_token_index ? (", image token " + std::to_string(*c.image_token_index)).c_str() : "");
  print_tensors();
  return 0;
}

/// Reads an I64 tensor of `inputs` as (batch, length) token ids.
std::pair<qformer::index_t, std::vector<std::int64_t>> read_ids(const qformer::safetensors_file& inputs, const std::string& name,
                                                                qformer::index_t batch) {
  using namespace qformer;
  const tensor_entry& e = inputs.at(name);
  if (e.dims.rank() != 2 || e.dims[0] != batch)
    throw shape_error(inputs.path() + ": tensor '" + name + "' has shape " + e.dims.str() + ", expected [" + std::to_string(batch) + ", T]");
  const tensor<std::int64_t> t = inputs.load<std::int64_t>(name);
  return {e.dims[1], std::vector<std::int64_t>(t.data(), t.data() + t.numel())};
}

/// The tensors `dump` writes: converted to F32 (floats of any element type) or kept as I64 (ids), owned until
/// written.
class dump_records {
 public:
  template <class V>
  void add_floats(const char* name, const V& v) {
    if (v.empty()) return;
    std::vector<float>& t = floats_.emplace_back();
    t.reserve(static_cast<std::size_t>(v.numel()));
    for (qformer::index_t r = 0; r < v.rows(); ++r)
      for (qformer::index_t c = 0; c < v.cols(); ++c) t.push_back(qformer::to_float(v.row(r)[c]));
    records_.push_back({name, qformer::dtype::f32, v.shape(), t.data()});
  }
  void add_ids(const char* name, const qformer::generation_result& g) {
    std::vector<std::int64_t>& t = ints_.emplace_back(g.ids);
    records_.push_back({name, qformer::dtype::i64, {g.batch, g.length}, t.data()});
  }
  void write(const std::string& path) const {
    qformer::write_safetensors(path, records_);
    std::fprintf(stderr, "qformer dump: wrote %zu tensors to %s\n", records_.size(), path.c_str());
  }

 private:
  std::deque<std::vector<float>> floats_;  // records_ point into these buffers; a deque never moves them
  std::deque<std::vector<std::int64_t>> ints_;
  std::vector<qformer::tensor_record> records_;
};

/// dump for retrieval checkpoints: the image path and, with input_ids + attention_mask, ITM and ITC.
template <class T>
int dump_retrieval(const std::string& dir, const std::string& inputs_path, const std::string& out_path) {
  using namespace qformer;
  const auto model = Blip2ForImageTextRetrieval<T>::from_pretrained(dir);
  const safetensors_file inputs(inputs_path);
  const tensor_entry& px = inputs.at("pixel_values");
  if (px.dims.rank() != 4) throw shape_error(inputs_path + ": tensor 'pixel_values' has shape " + px.dims.str() + ", expected [B, 3, H, W]");
  const tensor<float> pixels = inputs.load<float>("pixel_values");
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  dump_records out;
  auto add = [&](const char* name, const auto& v) { out.add_floats(name, v); };
  view<T> vision = model.vision()(ctx, pixels.get());
  add("vision_last_hidden_state", vision);
  add("vision_pooler_output", model.vision().pooler(ctx, vision));
  add("qformer_last_hidden_state", model.qformer()(ctx, vision));
  if (inputs.find("input_ids")) {
    auto [length, ids] = read_ids(inputs, "input_ids", px.dims[0]);
    auto [mask_length, mask] = read_ids(inputs, "attention_mask", px.dims[0]);
    if (mask_length != length) throw shape_error(inputs_path + ": 'attention_mask' does not match 'input_ids'");
    const token_batch text{px.dims[0], length, std::move(ids), std::move(mask)};
    add("itm_logits", model.itm_logits(ctx, vision, text));
    view<T> image_feats = model.image_features(ctx, vision), text_feats = model.text_features(ctx, text);
    add("itc_logits_per_image", model.similarity(ctx, image_feats, text_feats));
    add("itc_image_embeds", image_feats);
    add("itc_text_embeds", text_feats);
  }
  out.write(out_path);
  return 0;
}

template <class T>
int dump_as(const std::string& dir, const std::string& inputs_path, const std::string& out_path, qformer::index_t new_tokens) {
  using namespace qformer;
  if (load_blip2_config(dir).architecture == "Blip2ForImageTextRetrieval") return dump_retrieval<T>(dir, inputs_path, out_path);
  std::vector<std::string> unused;
  const Blip2<T> model = Blip2<T>::from_pretrained(dir, &unused);
  const safetensors_file inputs(inputs_path);
  const tensor_entry* px = inputs.find("pixel_values");
  if (!px) throw load_error(inputs_path, "tensor 'pixel_values' is missing");
  if (px->dims.rank() != 4) throw shape_error(inputs_path + ": tensor 'pixel_values' has shape " + px->dims.str() + ", expected [B, 3, H, W]");
  const tensor<float> pixels = inputs.load<float>("pixel_values");
  const index_t B = px->dims[0];

  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  const image_features<T, cpu> f = model.encode_image(ctx, pixels.get());

  dump_records out;
  auto add = [&](const char* name, const auto& v) { out.add_floats(name, v); };
  auto add_ids = [&](const char* name, const generation_result& g) { out.add_ids(name, g); };
  add("vision_last_hidden_state", f.vision_last_hidden_state);
  add("vision_pooler_output", f.vision_pooler_output);
  add("qformer_last_hidden_state", f.qformer_last_hidden_state);
  add("language_projection", f.language_projection);

  if (!f.language_projection.empty() && (inputs.find("prompt_ids") || inputs.find("padded_prompt_ids"))) {
    // As the reference folders define them: greedy and beam-3 produce exactly new_tokens tokens (EOS suppressed).
    const TextConfig& text = model.config().text;
    generation_options greedy;
    greedy.max_new_tokens = greedy.min_new_tokens = new_tokens;
    greedy.eos_token_ids = {text.eos_token_id()};
    greedy.pad_token_id = text.pad_token_id();
    generation_options beam3 = greedy;
    beam3.num_beams = 3;
    beam3.length_penalty = 1.0f;
    beam3.early_stopping = true;
    if (inputs.find("prompt_ids")) {
      auto [length, ids] = read_ids(inputs, "prompt_ids", B);
      const token_batch prompt = token_batch::unpadded(B, length, std::move(ids));
      add("lm_logits", model.lm_logits(ctx, f.language_projection, prompt));
      add_ids("greedy_ids", model.generate(ctx, f.language_projection, prompt, greedy));
      add_ids("beam3_ids", model.generate(ctx, f.language_projection, prompt, beam3));
    }
    if (inputs.find("padded_prompt_ids")) {
      auto [length, ids] = read_ids(inputs, "padded_prompt_ids", B);
      auto [mask_length, mask] = read_ids(inputs, "padded_prompt_mask", B);
      if (mask_length != length) throw shape_error(inputs_path + ": 'padded_prompt_mask' does not match 'padded_prompt_ids'");
      const token_batch prompt{B, length, std::move(ids), std::move(mask)};
      if (model.opt()) add("padded_lm_logits", model.lm_logits(ctx, f.language_projection, prompt));
      add_ids("padded_greedy_ids", model.generate(ctx, f.language_projection, prompt, greedy));
    }
  }
  out.write(out_path);
  if (!unused.empty())
    std::fprintf(stderr, "qformer dump: %zu checkpoint tensors were not used (first: %s)\n", unused.size(), unused.front().c_str());
  return 0;
}

/// The image paths PATH stands for: the file itself, every .png / .jpg / .jpeg of a folder (sorted), or the
/// lines of a .txt list file (relative paths taken from the list's folder). `batch` is set for the last two.
std::vector<std::string> image_paths(const std::string& path, bool& batch) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> out;
  batch = false;
  if (fs::is_directory(path, ec)) {
    batch = true;
    for (const auto& e : fs::directory_iterator(path, ec)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
      if (e.is_regular_file(ec) && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    if (out.empty()) throw qformer::load_error(path, "no .png, .jpg or .jpeg files in this folder");
  } else if (fs::path(path).extension() == ".txt") {
    batch = true;
    std::ifstream in(path);
    if (!in) throw qformer::load_error(path, "cannot open the image list");
    std::string line;
    while (std::getline(in, line)) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (line.empty()) continue;
      fs::path p(line);
      out.push_back(p.is_absolute() ? line : (fs::path(path).parent_path() / p).string());
    }
    if (out.empty()) throw qformer::load_error(path, "the image list is empty");
  } else {
    out.push_back(path);
  }
  return out;
}

/// JSON string literal.
std::string quoted(const std::string& s) { return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

/// "\r[#####     ] 3/10  1.2 s/image" on stderr.
void progress(std::size_t done, std::size_t total, double seconds) {
  const int width = 30, filled = int(double(width) * double(done) / double(total));
  std::fprintf(stderr, "\r[%s%s] %zu/%zu  %.2f s/image", std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(), done,
               total, done ? seconds / double(done) : 0.0);
  if (done == total) std::fputc('\n', stderr);
  std::fflush(stderr);
}

qformer::generation_options generation_from(const std::map<std::string, std::string>& o, qformer::generation_options g) {
  g.num_beams = integer_option(o, "beams", g.num_beams, 1, 256);
  g.max_new_tokens = integer_option(o, "max-new-tokens", g.max_new_tokens, 0, 100000);
  g.min_new_tokens = integer_option(o, "min-new-tokens", std::min(g.min_new_tokens, g.max_new_tokens), 0, g.max_new_tokens);
  g.length_penalty = number_option(o, "length-penalty", g.length_penalty, -1e6, 1e6);
  g.repetition_penalty = number_option(o, "repetition-penalty", g.repetition_penalty, 1e-6, 1e6);
  if (o.count("sample")) g.do_sample = true;
  g.top_k = integer_option(o, "top-k", g.top_k, 0, 1 << 24);
  g.top_p = number_option(o, "top-p", g.top_p, 1e-6, 1.0);
  g.temperature = number_option(o, "temperature", g.temperature, 1e-6, 1e6);
  g.seed = static_cast<std::uint64_t>(integer_option(o, "seed", static_cast<long long>(g.seed), 0, std::numeric_limits<long long>::max()));
  if (g.do_sample && g.num_beams > 1) throw usage_error("--sample works with --beams 1 only");
  return g;
}

/// caption and vqa: one image prints its text (or a JSON object with --json); a folder or list prints JSON lines.
/// D: where the model runs (cpu, or cuda in builds with the CUDA backend).
template <class T, class D = qformer::cpu>
int generate_text(const std::map<std::string, std::string>& opts, const std::string& prompt, const std::string& question,
                  bool int8_language_model = false) {
  using namespace qformer;
  auto pipe = Blip2Pipeline<T, D>::from_pretrained(required(opts, "model"));
  if constexpr (std::is_same_v<D, cpu>) {
    if (int8_language_model) pipe.quantize_language_model_int8();
  } else {
    if (int8_language_model) throw usage_error("--dtype int8 runs on the CPU only (use bf16 with --device cuda)");
  }
  const generation_options options = generation_from(opts, pipe.defaults());
  bool batch = false;
  const std::vector<std::string> paths = image_paths(required(opts, "image"), batch);
  const std::size_t chunk = static_cast<std::size_t>(integer_option(opts, "batch-size", 8, 1, 1024));
  const bool json = batch || opts.count("json");
  context<D> ctx;
  int failures = 0;
  const auto start = std::chrono::steady_clock::now();
  auto print = [&](const std::string& path, const generated_text* g, const std::string* error) {
    if (!json) {
      std::printf("%s\n", g->text.c_str());
      return;
    }
    std::string line = "{\"image\": " + quoted(path);
    if (!question.empty()) line += ", \"question\": " + quoted(question);
    if (g) line += std::string(question.empty() ? ", \"caption\": " : ", \"answer\": ") + quoted(g->text) + ", \"ids\": " + nlohmann::json(g->ids).dump();
    if (error) line += ", \"error\": " + quoted(*error);
    std::printf("%s}\n", line.c_str());
    std::fflush(stdout);
  };
  for (std::size_t first = 0; first < paths.size(); first += chunk) {
    const std::size_t last = std::min(paths.size(), first + chunk);
    std::vector<rgb_image> images;
    std::vector<std::string> errors(last - first);  // per path: empty, or why it could not be read
    for (std::size_t i = first; i < last; ++i) {
      try {
        images.push_back(load_image(paths[i]));
      } catch (const qformer::error& e) {
        if (!batch) throw;
        errors[i - first] = e.what();
        ++failures;
      }
    }
    const auto results = pipe.generate(ctx, images, prompt, options);
    for (std::size_t i = first, next = 0; i < last; ++i)  // in input order
      if (errors[i - first].empty()) print(paths[i], &results[next++], nullptr);
      else print(paths[i], nullptr, &errors[i - first]);
    if (batch) progress(last, paths.size(), std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return failures ? 1 : 0;
}

int caption_or_vqa(int argc, char** argv, bool vqa) {
  std::vector<std::string> known = {"model", "image", "beams", "max-new-tokens", "min-new-tokens", "length-penalty",
                                    "repetition-penalty", "top-k", "top-p", "temperature", "seed", "dtype", "threads", "batch-size",
                                    "device"};
  known.push_back(vqa ? "question" : "prompt");
  const auto opts = parse_options(argc, argv, 2, known, {"sample", "json"});
  const std::string question = vqa ? required(opts, "question") : "";
  const std::string prompt = vqa ? qformer::Blip2Pipeline<float>::vqa_prompt(question) : (opts.count("prompt") ? opts.at("prompt") : "");
  if (opts.count("threads")) Eigen::setNbThreads(static_cast<int>(integer_option(opts, "threads", 1, 1, 1024)));
  const std::string dt = opts.count("dtype") ? opts.at("dtype") : "f32";
  if (dt != "f32" && dt != "bf16" && dt != "f16" && dt != "int8") throw usage_error("--dtype must be f32, bf16, f16 or int8, got '" + dt + "'");
  const std::string device = opts.count("device") ? opts.at("device") : "cpu";
  if (device == "cuda") {
#if defined(QFORMER_WITH_CUDA)
    if (!qformer::cuda_available()) throw qformer::error("--device cuda: no CUDA device is visible");
    if (dt == "f32") return generate_text<float, qformer::cuda>(opts, prompt, question);
    if (dt == "bf16") return generate_text<qformer::bf16, qformer::cuda>(opts, prompt, question);
    if (dt == "f16") return generate_text<qformer::fp16, qformer::cuda>(opts, prompt, question);
    return generate_text<qformer::bf16, qformer::cuda>(opts, prompt, question, true);
#else
    throw usage_error("--device cuda: this qformer was built without the CUDA backend (configure with -DQFORMER_CUDA=ON)");
#endif
  }
  if (device != "cpu") throw usage_error("--device must be cpu or cuda, got '" + device + "'");
  if (dt == "f32") return generate_text<float>(opts, prompt, question);
  if (dt == "bf16") return generate_text<qformer::bf16>(opts, prompt, question);
  if (dt == "f16") return generate_text<qformer::fp16>(opts, prompt, question);
  return generate_text<qformer::bf16>(opts, prompt, question, true);
}

/// "--name v1 v2 ... --other ..." : every value after each occurrence of a multi-value option, in order.
std::map<std::string, std::vector<std::string>> parse_multi(int argc, char** argv, int first, const std::vector<std::string>& known) {
  std::map<std::string, std::vector<std::string>> out;
  std::string key;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      key = a.substr(2);
      if (std::find(known.begin(), known.end(), key) == known.end()) throw usage_error("unknown option '--" + key + "'");
      out[key];
      continue;
    }
    if (key.empty()) throw usage_error("unexpected argument '" + a + "'");
    out[key].push_back(a);
  }
  for (const auto& [k, v] : out)
    if (v.empty()) throw usage_error("option '--" + k + "' needs a value");
  return out;
}

/// The single value of a multi-value option map (usage error when absent or repeated).
std::map<std::string, std::string> singles(const std::map<std::string, std::vector<std::string>>& multi, const std::vector<std::string>& keys) {
  std::map<std::string, std::string> out;
  for (const auto& k : keys)
    if (auto it = multi.find(k); it != multi.end()) {
      if (it->second.size() != 1) throw usage_error("--" + k + " takes one value");
      out[k] = it->second.front();
    }
  return out;
}

int match(int argc, char** argv) {
  const auto multi = parse_multi(argc, argv, 2, {"model", "image", "text", "dtype", "threads"});
  const auto opts = singles(multi, {"model", "image", "dtype", "threads"});
  if (!multi.count("text")) throw usage_error("missing --text");
  if (opts.count("threads")) Eigen::setNbThreads(static_cast<int>(integer_option(opts, "threads", 1, 1, 1024)));
  const auto run = [&](auto tag) {
    using T = decltype(tag);
    const auto pipe = qformer::Blip2RetrievalPipeline<T>::from_pretrained(required(opts, "model"));
    qformer::context<qformer::cpu> ctx;
    const std::string image = required(opts, "image");
    const auto& texts = multi.at("text");
    const auto scores = pipe.match(ctx, qformer::load_image(image), texts);
    for (std::size_t i = 0; i < texts.size(); ++i)
      std::printf("{\"image\": %s, \"text\": %s, \"itm_probability\": %.7g, \"itm_logits\": [%.7g, %.7g], \"itc_score\": %.7g}\n",
                  quoted(image).c_str(), quoted(texts[i]).c_str(), double(scores[i].itm_probability), double(scores[i].itm_logit_no),
                  double(scores[i].itm_logit_yes), double(scores[i].itc_score));
    return 0;
  };
  const std::string dt = opts.count("dtype") ? opts.at("dtype") : "f32";
  if (dt == "f32") return run(float{});
  if (dt == "bf16") return run(qformer::bf16{});
  throw usage_error("--dtype must be f32 or bf16 for match, got '" + dt + "'");
}

int rank(int argc, char** argv) {
  const auto multi = parse_multi(argc, argv, 2, {"model", "images", "texts", "top-k", "threads"});
  const auto opts = singles(multi, {"model", "top-k", "threads"});
  if (!multi.count("images")) throw usage_error("missing --images");
  if (!multi.count("texts")) throw usage_error("missing --texts");
  if (opts.count("threads")) Eigen::setNbThreads(static_cast<int>(integer_option(opts, "threads", 1, 1, 1024)));
  std::vector<std::string> paths;
  for (const auto& p : multi.at("images")) {
    bool batch = false;
    for (auto& one : image_paths(p, batch)) paths.push_back(std::move(one));
  }
  const auto& texts = multi.at("texts");
  const std::size_t k = static_cast<std::size_t>(integer_option(opts, "top-k", std::min<long long>(5, (long long)texts.size()), 1,
                                                                (long long)texts.size()));
  const auto pipe = qformer::Blip2RetrievalPipeline<float>::from_pretrained(required(opts, "model"));
  std::vector<qformer::rgb_image> images;
  for (const auto& p : paths) images.push_back(qformer::load_image(p));
  qformer::context<qformer::cpu> ctx;
  const std::vector<float> sim = pipe.similarity(ctx, images, texts);
  nlohmann::json out = {{"images", paths}, {"texts", texts}, {"similarity", nlohmann::json::array()}, {"top", nlohmann::json::array()}};
  for (std::size_t i = 0; i < paths.size(); ++i) {
    std::vector<float> row(sim.begin() + i * texts.size(), sim.begin() + (i + 1) * texts.size());
    out["similarity"].push_back(row);
    std::vector<std::size_t> order(texts.size());
    for (std::size_t t = 0; t < order.size(); ++t) order[t] = t;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return row[a] > row[b]; });
    nlohmann::json top = nlohmann::json::array();
    for (std::size_t r = 0; r < k; ++r) top.push_back({{"text", texts[order[r]]}, {"index", order[r]}, {"score", row[order[r]]}});
    out["top"].push_back(top);
  }
  std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return 0;
}

std::vector<std::string> comma_list(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

int bench(const std::map<std::string, std::string>& opts) {
  bench_command::settings s;
  auto check_names = [](const std::vector<std::string>& got, const std::vector<std::string>& allowed, const char* what) {
    for (const auto& g : got)
      if (std::find(allowed.begin(), allowed.end(), g) == allowed.end())
        throw usage_error(std::string("--") + what + ": unknown '" + g + "'");
    if (got.empty()) throw usage_error(std::string("--") + what + " is empty");
    return got;
  };
  if (opts.count("stages")) s.stages = check_names(comma_list(opts.at("stages")), {"vision", "qformer", "decode", "caption"}, "stages");
  if (opts.count("dtypes")) s.dtypes = check_names(comma_list(opts.at("dtypes")), {"f32", "bf16", "int8"}, "dtypes");
  if (opts.count("batches")) {
    s.batches.clear();
    for (const auto& b : comma_list(opts.at("batches"))) {
      if (b.empty() || b.size() > 3 || b.find_first_not_of("0123456789") != std::string::npos || std::stoi(b) < 1)
        throw usage_error("--batches: '" + b + "' is not a batch size in [1, 999]");
      s.batches.push_back(std::stoi(b));
    }
    if (s.batches.empty()) throw usage_error("--batches is empty");
  }
  s.repeats = static_cast<int>(integer_option(opts, "repeats", 3, 1, 1000));
  s.threads = static_cast<int>(integer_option(opts, "threads", Eigen::nbThreads(), 1, 1024));
  s.new_tokens = integer_option(opts, "new-tokens", 30, 1, 1000);
  s.json = opts.count("json") != 0;
  if (opts.count("device")) {
    s.device = opts.at("device");
    if (s.device != "cpu" && s.device != "cuda") throw usage_error("--device: '" + s.device + "' is neither cpu nor cuda");
  }
  Eigen::setNbThreads(s.threads);
#if defined(_OPENMP)
  omp_set_num_threads(s.threads);
#endif
  return bench_command::run(s);
}

int eval(const std::map<std::string, std::string>& opts) {
  const qformer::metrics::evaluation e = qformer::metrics::evaluate(required(opts, "predictions"), required(opts, "references"));
  std::printf("%s\n", qformer::metrics::to_json(e, opts.count("per-caption") != 0).dump(1).c_str());
  return 0;
}

int tokenize(const std::map<std::string, std::string>& opts) {
  namespace fs = std::filesystem;
  const std::string source = required(opts, "tokenizer"), text = required(opts, "text");
  std::error_code ec;
  const qformer::tokenizer tok = fs::is_directory(source, ec) ? qformer::tokenizer::from_folder(source) : qformer::tokenizer::from_file(source);
  std::printf("%s\n", nlohmann::json(tok.encode(text, true)).dump().c_str());
  return 0;
}

int dump(const std::map<std::string, std::string>& opts) {
  const std::string dir = required(opts, "model"), in = required(opts, "inputs"), out = required(opts, "out");
  qformer::index_t new_tokens = 20;
  if (opts.count("new-tokens")) {
    const std::string& n = opts.at("new-tokens");
    if (n.empty() || n.find_first_not_of("0123456789") != std::string::npos || n.size() > 4)
      throw usage_error("--new-tokens must be an integer in [0, 9999], got '" + n + "'");
    new_tokens = std::stoll(n);
  }
  const std::string dt = opts.count("dtype") ? opts.at("dtype") : "f32";
  if (dt == "f32") return dump_as<float>(dir, in, out, new_tokens);
  if (dt == "bf16") return dump_as<qformer::bf16>(dir, in, out, new_tokens);
  if (dt == "f16") return dump_as<qformer::fp16>(dir, in, out, new_tokens);
  throw usage_error("--dtype must be f32, bf16 or f16, got '" + dt + "'");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    qformer::require_compiled_cpu_features();
    if (argc < 2) {
      std::fputs(usage_text, stderr);
      return 2;
    }
    const std::string cmd = argv[1];
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::fputs(usage_text, stdout);
      return 0;
    }
    if (cmd == "--version") {
      std::printf("qformer %d.%d.%d\n", QFORMER_VERSION_MAJOR, QFORMER_VERSION_MINOR, QFORMER_VERSION_PATCH);
      return 0;
    }
    if (cmd == "caption") return caption_or_vqa(argc, argv, false);
    if (cmd == "vqa") return caption_or_vqa(argc, argv, true);
    if (cmd == "match") return match(argc, argv);
    if (cmd == "rank") return rank(argc, argv);
    if (cmd == "eval") return eval(parse_options(argc, argv, 2, {"predictions", "references"}, {"per-caption"}));
    if (cmd == "tokenize") return tokenize(parse_options(argc, argv, 2, {"tokenizer", "text"}));
    if (cmd == "inspect") return inspect(parse_options(argc, argv, 2, {"model"}));
    if (cmd == "bench")
      return bench(parse_options(argc, argv, 2, {"stages", "batches", "dtypes", "repeats", "threads", "new-tokens", "device"}, {"json"}));
    if (cmd == "dump") return dump(parse_options(argc, argv, 2, {"model", "inputs", "out", "new-tokens", "dtype"}));
    throw usage_error("unknown command '" + cmd + "' (try qformer --help)");
  } catch (const usage_error& e) {
    std::fprintf(stderr, "qformer: %s\n", one_line(e.what()).c_str());
    return 2;
  } catch (const qformer::error& e) {
    std::fprintf(stderr, "qformer: error: %s\n", one_line(e.what()).c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "qformer: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qformer: error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}
