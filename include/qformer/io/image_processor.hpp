#pragma once
/// \file
/// BLIP-2's image preprocessing, bit-exact to transformers 5.17: convert to RGB, resize straight to height x width
/// (no aspect keep, no crop) on uint8 pixels, rescale by 1/255, normalise with the OpenAI CLIP mean / std, and
/// lay out channels first as float32 `pixel_values` (1, 3, H, W).
///
/// Two resize backends, because transformers 5.17 has two and they differ by up to 2 LSB:
/// - `resize_backend::pil`: Pillow's `Image.resize` (Resample.c): `BlipImageProcessorPil`, LAVIS's
///   `BlipImageEvalProcessor`, and `BlipImageProcessor` where torchvision is not installed.
/// - `resize_backend::torchvision`: torchvision's antialiased resize of uint8 tensors (ATen's uint8 path):
///   5.17's `BlipImageProcessor` / `BlipImageProcessorFast` where torchvision is installed. The default for
///   configs read from preprocessor_config.json.
///
/// This header has no stb: decode files with <qformer/io/image.hpp>, or fill an `rgb_image` yourself.

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace qformer {

/// An 8-bit RGB image: rows top to bottom, pixels interleaved; `pixels` is (height, width, 3) row-major.
struct rgb_image {
  index_t width = 0;
  index_t height = 0;
  std::vector<std::uint8_t> pixels;  // (height, width, 3)
  /// Channels of the encoded image before it became RGB: 1 gray, 2 gray + alpha, 3 RGB (also palette and colour
  /// JPEG), 4 RGBA (also palette with transparency). `do_convert_rgb = false` accepts only 3, as transformers does.
  int source_channels = 3;

  rgb_image() = default;
  /// A black width x height image.
  rgb_image(index_t w, index_t h) : width(w), height(h) {
    if (w < 0 || h < 0) throw invalid_argument("rgb_image: negative size " + std::to_string(w) + " x " + std::to_string(h));
    pixels.assign(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3, 0);
  }
  std::uint8_t* row(index_t y) noexcept { return pixels.data() + y * width * 3; }
  const std::uint8_t* row(index_t y) const noexcept { return pixels.data() + y * width * 3; }
  bool empty() const noexcept { return width == 0 || height == 0; }
};

/// PIL's resampling filters, with PIL's codes (the `resample` field of preprocessor_config.json).
enum class resample_filter : int { nearest = 0, lanczos = 1, bilinear = 2, bicubic = 3, box = 4, hamming = 5 };

/// Which library's uint8 resize to reproduce (see the file comment).
enum class resize_backend { pil, torchvision };

namespace detail {

/// `x` rounded to double and kept apart from the next operation: the references (Pillow, ATen) compute these
/// coefficients without fused multiply-add, and a contracted `a * b + c` rounds differently.
inline double unfused(double x) noexcept {
  volatile double v = x;
  return v;
}

// Pillow's filters (libImaging/Resample.c), operation for operation.
inline double box_filter(double x) noexcept { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }
inline double bilinear_filter(double x) noexcept {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}
inline double hamming_filter(double x) noexcept {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * 3.14159265358979323846;
  return std::sin(x) / x * (unfused(0.46 * std::cos(x)) + 0.54);
}
inline double bicubic_filter(double x) noexcept {
  constexpr double a = -0.5;  // Keys' cubic, as Pillow and ATen use it
  if (x < 0.0) x = -x;
  if (x < 1.0) return unfused((unfused((a + 2.0) * x) - (a + 3.0)) * x * x) + 1;
  if (x < 2.0) return (unfused(unfused((x - 5) * x) + 8) * x - 4) * a;
  return 0.0;
}
inline double sinc_filter(double x) noexcept {
  if (x == 0.0) return 1.0;
  x = x * 3.14159265358979323846;
  return std::sin(x) / x;
}
inline double lanczos_filter(double x) noexcept {
  return (-3.0 <= x && x < 3.0) ? sinc_filter(x) * sinc_filter(x / 3) : 0.0;
}

struct resample_kernel {
  double (*fn)(double);
  double support;
};

inline resample_kernel kernel_for(resample_filter f) {
  switch (f) {
    case resample_filter::box: return {box_filter, 0.5};
    case resample_filter::bilinear: return {bilinear_filter, 1.0};
    case resample_filter::hamming: return {hamming_filter, 1.0};
    case resample_filter::bicubic: return {bicubic_filter, 2.0};
    case resample_filter::lanczos: return {lanczos_filter, 3.0};
    default: throw invalid_argument("resize: resample filter " + std::to_string(static_cast<int>(f)) +
                                    " (NEAREST) is not supported; use BICUBIC (3), BILINEAR (2), LANCZOS (1), BOX (4) or HAMMING (5)");
  }
}

/// Fixed-point coefficients of one 1-D pass: output i reads inputs [first[i], first[i] + count[i]) with weights
/// weights[i * taps, ...], sums them on top of 2^(precision-1) and shifts right by `precision`.
struct resample_coeffs {
  index_t taps = 0;
  int precision = 0;
  std::vector<index_t> first, count;
  std::vector<std::int32_t> weights;  // (out, taps)
};

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` (PRECISION_BITS 22) or, for torchvision, ATen's
/// `_compute_index_ranges_int16_weights` (same float weights, precision chosen so the largest fits in int16).
/// Downscaling widens the filter by the scale factor (antialiasing); weights are normalised to sum to one.
inline resample_coeffs precompute_coeffs(index_t in_size, index_t out_size, const resample_kernel& k, resize_backend b) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = k.support * filterscale;
  const double ss = 1.0 / filterscale;
  resample_coeffs c;
  c.taps = static_cast<index_t>(std::ceil(support)) * 2 + 1;
  c.first.resize(static_cast<std::size_t>(out_size));
  c.count.resize(static_cast<std::size_t>(out_size));
  std::vector<double> w(static_cast<std::size_t>(out_size * c.taps), 0.0);
  double w_max = 0.0;  // ATen: largest normalised weight, over outputs whose weights do not sum to zero
  for (index_t i = 0; i < out_size; ++i) {
    const double center = unfused((static_cast<double>(i) + 0.5) * scale);
    index_t lo = static_cast<index_t>(center - support + 0.5);  // truncation, as C's (int) cast
    if (lo < 0) lo = 0;
    index_t hi = static_cast<index_t>(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const index_t n = hi - lo;
    double* wi = w.data() + i * c.taps;
    double total = 0.0;
    for (index_t j = 0; j < n; ++j) {
      const double v = k.fn(unfused((static_cast<double>(j + lo) - center + 0.5) * ss));
      wi[j] = v;
      total += v;
    }
    if (total != 0.0)
      for (index_t j = 0; j < n; ++j) {
        wi[j] /= total;
        w_max = std::max(w_max, wi[j]);
      }
    c.first[static_cast<std::size_t>(i)] = lo;
    c.count[static_cast<std::size_t>(i)] = n;
  }
  if (b == resize_backend::pil) {
    c.precision = 22;  // Pillow: 32 - 8 - 2 bits
  } else {
    for (c.precision = 0; c.precision < 22; ++c.precision)
      if (static_cast<int>(0.5 + w_max * static_cast<double>(1 << (c.precision + 1))) >= (1 << 15)) break;
  }
  const double one = static_cast<double>(1 << c.precision);
  c.weights.resize(w.size());
  for (std::size_t j = 0; j < w.size(); ++j)
    c.weights[j] = static_cast<std::int32_t>(w[j] < 0 ? -0.5 + w[j] * one : 0.5 + w[j] * one);
  return c;
}

inline std::uint8_t clip8(std::int64_t sum, int precision) noexcept {
  const std::int64_t v = sum >> precision;  // arithmetic shift: floor, as Pillow and ATen
  return static_cast<std::uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

/// Horizontal pass over input rows [row0, row0 + out.height): (rows, in.width, 3) -> (rows, out.width, 3).
inline void resample_horizontal(const rgb_image& in, index_t row0, const resample_coeffs& c, rgb_image& out) {
  const std::int64_t half = std::int64_t(1) << (c.precision - 1);
  for (index_t y = 0; y < out.height; ++y) {
    const std::uint8_t* src = in.row(y + row0);
    std::uint8_t* dst = out.row(y);
    for (index_t x = 0; x < out.width; ++x) {
      const std::int32_t* k = c.weights.data() + x * c.taps;
      const std::uint8_t* s = src + c.first[static_cast<std::size_t>(x)] * 3;
      std::int64_t s0 = half, s1 = half, s2 = half;
      for (index_t j = 0, n = c.count[static_cast<std::size_t>(x)]; j < n; ++j) {
        s0 += std::int64_t(s[3 * j + 0]) * k[j];
        s1 += std::int64_t(s[3 * j + 1]) * k[j];
        s2 += std::int64_t(s[3 * j + 2]) * k[j];
      }
      dst[3 * x + 0] = clip8(s0, c.precision);
      dst[3 * x + 1] = clip8(s1, c.precision);
      dst[3 * x + 2] = clip8(s2, c.precision);
    }
  }
}

/// Vertical pass; `first` indices are relative to input row `row0`: (rows, width, 3) -> (out.height, width, 3).
inline void resample_vertical(const rgb_image& in, index_t row0, const resample_coeffs& c, rgb_image& out) {
  const std::int64_t half = std::int64_t(1) << (c.precision - 1);
  const index_t n_values = out.width * 3;
  std::vector<std::int64_t> acc(static_cast<std::size_t>(n_values));
  for (index_t y = 0; y < out.height; ++y) {
    const std::int32_t* k = c.weights.data() + y * c.taps;
    std::fill(acc.begin(), acc.end(), half);
    for (index_t j = 0, n = c.count[static_cast<std::size_t>(y)]; j < n; ++j) {
      const std::uint8_t* src = in.row(c.first[static_cast<std::size_t>(y)] + j - row0);
      const std::int64_t kj = k[j];
      for (index_t v = 0; v < n_values; ++v) acc[static_cast<std::size_t>(v)] += std::int64_t(src[v]) * kj;
    }
    std::uint8_t* dst = out.row(y);
    for (index_t v = 0; v < n_values; ++v) dst[v] = clip8(acc[static_cast<std::size_t>(v)], c.precision);
  }
}

}  // namespace detail

/// Resizes an RGB image to width x height as Pillow's `Image.resize(size, resample)` does (backend pil) or as
/// torchvision's `resize(uint8 tensor, antialias=True)` does (backend torchvision; BICUBIC and BILINEAR only).
/// Separable: a horizontal pass over the rows the vertical pass needs, rounded and clipped to uint8, then the
/// vertical pass, rounded and clipped again. A pass whose size does not change is skipped.
/// (H, W, 3) uint8 -> (height, width, 3) uint8.
inline rgb_image resize(const rgb_image& in, index_t width, index_t height,
                        resample_filter filter = resample_filter::bicubic, resize_backend backend = resize_backend::pil) {
  if (width <= 0 || height <= 0)
    throw invalid_argument("resize: target size " + std::to_string(width) + " x " + std::to_string(height) + " is empty");
  if (in.empty()) throw invalid_argument("resize: the input image is empty");
  if (in.pixels.size() != static_cast<std::size_t>(in.width * in.height * 3))
    throw invalid_argument("resize: rgb_image of " + std::to_string(in.width) + " x " + std::to_string(in.height) +
                           " holds " + std::to_string(in.pixels.size()) + " bytes, not width * height * 3");
  if (backend == resize_backend::torchvision && filter != resample_filter::bicubic && filter != resample_filter::bilinear)
    throw invalid_argument("resize: the torchvision backend reproduces BICUBIC and BILINEAR only");
  const detail::resample_kernel kernel = detail::kernel_for(filter);
  const bool horizontal = width != in.width, vertical = height != in.height;
  if (!horizontal && !vertical) return in;
  rgb_image out(width, height);
  out.source_channels = in.source_channels;
  if (!vertical) {
    detail::resample_horizontal(in, 0, detail::precompute_coeffs(in.width, width, kernel, backend), out);
    return out;
  }
  const detail::resample_coeffs cv = detail::precompute_coeffs(in.height, height, kernel, backend);
  if (!horizontal) {
    detail::resample_vertical(in, 0, cv, out);
    return out;
  }
  // Only the input rows some output row reads: [first row of output 0, last row of the last output).
  const index_t row0 = cv.first.front();
  const index_t row1 = cv.first.back() + cv.count.back();
  rgb_image tmp(width, row1 - row0);
  detail::resample_horizontal(in, row0, detail::precompute_coeffs(in.width, width, kernel, backend), tmp);
  detail::resample_vertical(tmp, row0, cv, out);
  return out;
}

/// The settings of a `preprocessor_config.json`, with BlipImageProcessor's defaults for absent fields.
struct image_processor_config {
  index_t height = 384;  // size {"height", "width"}, or one integer for a square
  index_t width = 384;
  bool do_resize = true;
  bool do_rescale = true;
  bool do_normalize = true;
  bool do_convert_rgb = true;
  double rescale_factor = 1.0 / 255.0;
  std::array<double, 3> image_mean{0.48145466, 0.4578275, 0.40821073};   // OPENAI_CLIP_MEAN
  std::array<double, 3> image_std{0.26862954, 0.26130258, 0.27577711};   // OPENAI_CLIP_STD
  resample_filter resample = resample_filter::bicubic;
  /// Not in the file: transformers picks it from what is installed. transformers 5's `BlipImageProcessor` resizes
  /// with torchvision whenever torchvision is installed (as it is beside torch), and the project's reference
  /// tensors were made so: torchvision is the default for BICUBIC / BILINEAR. "image_processor_type"
  /// "BlipImageProcessorPil" (or another filter) selects pil, Pillow's path as in transformers 4 and LAVIS.
  resize_backend backend = resize_backend::torchvision;
};

namespace detail {

inline constexpr index_t max_image_side = 1 << 15;

class image_config_fields {
 public:
  image_config_fields(const nlohmann::json& obj, const std::string& file) : obj_(obj), file_(file) {}
  const nlohmann::json* find(const std::string& key) const {
    auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void fail(const std::string& field, const std::string& what) const { throw config_error(file_, field, what); }
  bool boolean(const std::string& key, bool fallback) const {
    const nlohmann::json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(key, "expected true or false, found " + std::string(v->type_name()));
    return v->get<bool>();
  }
  index_t side(const nlohmann::json& v, const std::string& field) const {
    if (!v.is_number_integer()) fail(field, "expected a positive integer, found " + std::string(v.type_name()));
    // nlohmann stores non-negative integers as unsigned, negative ones as signed.
    const bool in_range = v.is_number_unsigned() && v.get<std::uint64_t>() >= 1 &&
                          v.get<std::uint64_t>() <= static_cast<std::uint64_t>(max_image_side);
    if (!in_range)
      fail(field, "value " + v.dump() + " is outside [1, " + std::to_string(max_image_side) + "]");
    return v.get<index_t>();
  }
  double number(const nlohmann::json& v, const std::string& field) const {
    if (!v.is_number()) fail(field, "expected a number, found " + std::string(v.type_name()));
    const double x = v.get<double>();
    if (!std::isfinite(x)) fail(field, "value " + v.dump() + " is not finite");
    return x;
  }
  /// One number for every channel, or a list of three.
  std::array<double, 3> per_channel(const std::string& key, const std::array<double, 3>& fallback, bool nonzero) const {
    const nlohmann::json* v = find(key);
    if (!v) return fallback;
    std::array<double, 3> out{};
    if (v->is_array()) {
      if (v->size() != 3) fail(key, "expected 3 values (one per RGB channel), found " + std::to_string(v->size()));
      for (std::size_t i = 0; i < 3; ++i) out[i] = number((*v)[i], key + "[" + std::to_string(i) + "]");
    } else {
      out.fill(number(*v, key));
    }
    if (nonzero)
      for (double x : out)
        if (x == 0.0) fail(key, "a standard deviation of 0 divides by zero");
    return out;
  }

 private:
  const nlohmann::json& obj_;
  const std::string& file_;
};

}  // namespace detail

/// Parses the text of a `preprocessor_config.json`; `file` names it in errors. Absent or null fields keep
/// BlipImageProcessor's defaults; a present field of the wrong type or range throws config_error naming it.
/// Refused as unsupported (config_error): size given as shortest_edge / longest_edge, resample NEAREST (0),
/// do_center_crop or do_pad true.
inline image_processor_config parse_image_processor_config(const std::string& text, const std::string& file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw config_error(file, "(root)", std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw config_error(file, "(root)", "is not a JSON object");
  const detail::image_config_fields f(j, file);
  image_processor_config c;
  if (const nlohmann::json* size = f.find("size")) {
    if (size->is_object()) {
      const auto h = size->find("height"), w = size->find("width");
      if (h == size->end() || w == size->end())
        f.fail("size", "expected {\"height\": H, \"width\": W} (BlipImageProcessor resizes to a fixed size), found " + size->dump());
      c.height = f.side(*h, "size.height");
      c.width = f.side(*w, "size.width");
    } else {
      c.height = c.width = f.side(*size, "size");
    }
  }
  c.do_resize = f.boolean("do_resize", c.do_resize);
  c.do_rescale = f.boolean("do_rescale", c.do_rescale);
  c.do_normalize = f.boolean("do_normalize", c.do_normalize);
  c.do_convert_rgb = f.boolean("do_convert_rgb", c.do_convert_rgb);
  if (f.boolean("do_center_crop", false)) f.fail("do_center_crop", "center cropping is not supported (BLIP-2 does not crop)");
  if (f.boolean("do_pad", false)) f.fail("do_pad", "padding is not supported (BLIP-2 does not pad)");
  if (const nlohmann::json* v = f.find("rescale_factor")) {
    c.rescale_factor = f.number(*v, "rescale_factor");
    if (c.rescale_factor == 0.0) f.fail("rescale_factor", "a rescale factor of 0 erases the image");
  }
  c.image_mean = f.per_channel("image_mean", c.image_mean, false);
  c.image_std = f.per_channel("image_std", c.image_std, true);
  if (const nlohmann::json* v = f.find("resample")) {
    if (!v->is_number_integer() || v->get<std::int64_t>() < 0 || v->get<std::int64_t>() > 5)
      f.fail("resample", "expected a PIL resampling code 0..5, found " + v->dump());
    c.resample = static_cast<resample_filter>(v->get<int>());
    if (c.resample == resample_filter::nearest)
      f.fail("resample", "NEAREST (0) is not supported; BLIP-2 uses BICUBIC (3)");
  }
  if (const nlohmann::json* v = f.find("image_processor_type")) {
    if (!v->is_string()) f.fail("image_processor_type", "expected a string, found " + std::string(v->type_name()));
    const std::string type = v->get<std::string>();
    if (type.size() >= 3 && type.compare(type.size() - 3, 3, "Pil") == 0) c.backend = resize_backend::pil;
  }
  if (c.resample != resample_filter::bicubic && c.resample != resample_filter::bilinear) c.backend = resize_backend::pil;
  return c;
}

/// Reads `<folder>/preprocessor_config.json`, or the file `path` names.
inline image_processor_config load_image_processor_config(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    // transformers 4 writes preprocessor_config.json; transformers 5's processors write processor_config.json
    // with the image processor's settings under "image_processor".
    file = (fs::path(path) / "preprocessor_config.json").string();
    if (!fs::exists(file, ec) && fs::exists(fs::path(path) / "processor_config.json", ec))
      file = (fs::path(path) / "processor_config.json").string();
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw load_error(file, "cannot open the image processor config");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (fs::path(file).filename() == "processor_config.json") {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw config_error(file, "(root)", std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object() || !j.contains("image_processor") || !j["image_processor"].is_object())
      throw config_error(file, "image_processor", "missing or not an object");
    return parse_image_processor_config(j["image_processor"].dump(), file);
  }
  return parse_image_processor_config(text, file);
}

/// transformers' BlipImageProcessor: RGB uint8 image -> float32 pixel_values (1, 3, height, width).
///
/// Exactness: the resize reproduces the chosen backend's uint8 output bit for bit, and rescale + normalise
/// reproduce its float32 arithmetic: for pil, numpy's `float32(float64(v) * rescale_factor)` then
/// `(x - float32(mean)) / float32(std)`; for torchvision, the fused `(float32(v) - mean * 255) / (std * 255)` with
/// `mean * 255` and `std * 255` rounded to float32. Every uint8 value maps through a 256-entry table.
class BlipImageProcessor {
 public:
  explicit BlipImageProcessor(const image_processor_config& config = {}) : config_(config) {
    if (config_.do_resize && (config_.width <= 0 || config_.height <= 0))
      throw invalid_argument("BlipImageProcessor: size " + std::to_string(config_.width) + " x " +
                             std::to_string(config_.height) + " is empty");
    (void)detail::kernel_for(config_.resample);  // refuses NEAREST early
    for (int c = 0; c < 3; ++c)
      for (int v = 0; v < 256; ++v) lut_[static_cast<std::size_t>(c)][static_cast<std::size_t>(v)] = value(c, v);
  }
  /// Reads `<folder>/preprocessor_config.json` (or the config file `path` names).
  static BlipImageProcessor from_pretrained(const std::string& path) {
    return BlipImageProcessor(load_image_processor_config(path));
  }
  const image_processor_config& config() const noexcept { return config_; }

  /// (height, width) of the pixel_values of `image`: the configured size, or the image's own without resize.
  std::array<index_t, 2> output_size(const rgb_image& image) const noexcept {
    return config_.do_resize ? std::array<index_t, 2>{config_.height, config_.width}
                             : std::array<index_t, 2>{image.height, image.width};
  }

  /// One image -> (1, 3, H, W).
  tensor<float> operator()(const rgb_image& image) const {
    const auto [h, w] = output_size(image);
    tensor<float> out({1, 3, h, w});
    preprocess_into(image, out.mut());
    return out;
  }

  /// A batch -> (B, 3, H, W). Without do_resize every image must have the same size (transformers stacks them).
  tensor<float> operator()(std::span<const rgb_image> images) const {
    if (images.empty()) throw invalid_argument("BlipImageProcessor: no images");
    const auto [h, w] = output_size(images[0]);
    tensor<float> out({static_cast<index_t>(images.size()), 3, h, w});
    for (std::size_t i = 0; i < images.size(); ++i) {
      if (output_size(images[i]) != std::array<index_t, 2>{h, w})
        throw invalid_argument("BlipImageProcessor: image " + std::to_string(i) + " is " +
                               std::to_string(images[i].width) + " x " + std::to_string(images[i].height) +
                               " but image 0 is " + std::to_string(w) + " x " + std::to_string(h) +
                               " and do_resize is false: they cannot share a batch");
      preprocess_into(images[i], out.mut()[static_cast<index_t>(i)]);
    }
    return out;
  }

  /// Writes the pixel_values of one image into `out`, (3, H, W) or (1, 3, H, W): e.g. `batch.mut()[i]`.
  void preprocess_into(const rgb_image& image, view<float> out) const {
    if (image.empty()) throw invalid_argument("BlipImageProcessor: the image is empty");
    if (!config_.do_convert_rgb && image.source_channels != 3)
      throw invalid_argument("BlipImageProcessor: do_convert_rgb is false but the image had " +
                             std::to_string(image.source_channels) +
                             " channels; transformers' normalisation needs RGB (3 channels)");
    const auto [h, w] = output_size(image);
    view<float> chw = out;
    if (chw.rank() == 4 && chw.dim(0) == 1) chw = chw[0];
    if (!(chw.shape() == shape{3, h, w}))
      throw shape_error("BlipImageProcessor: output view is " + out.shape().str() + ", expected [3, " +
                        std::to_string(h) + ", " + std::to_string(w) + "] or [1, 3, " + std::to_string(h) + ", " +
                        std::to_string(w) + "]");
    const rgb_image resized = config_.do_resize ? resize(image, w, h, config_.resample, config_.backend) : rgb_image{};
    const rgb_image& src = config_.do_resize ? resized : image;
    for (index_t c = 0; c < 3; ++c) {
      const std::array<float, 256>& lut = lut_[static_cast<std::size_t>(c)];
      for (index_t y = 0; y < h; ++y) {
        const std::uint8_t* s = src.row(y) + c;
        float* d = chw.row(c * h + y);
        for (index_t x = 0; x < w; ++x) d[x] = lut[s[3 * x]];
      }
    }
  }

 private:
  /// The float32 that transformers produces for uint8 value v in channel c.
  float value(int c, int v) const {
    const auto& k = config_;
    const std::size_t i = static_cast<std::size_t>(c);
    if (k.backend == resize_backend::pil) {
      // numpy: rescale in float64, cast to float32; normalise in float32.
      float x = k.do_rescale ? static_cast<float>(static_cast<double>(v) * k.rescale_factor) : static_cast<float>(v);
      if (k.do_normalize) x = (x - static_cast<float>(k.image_mean[i])) / static_cast<float>(k.image_std[i]);
      return x;
    }
    // torch: rescale folded into mean and std (float32 tensors times 1 / rescale_factor), then (x - m) / s.
    if (k.do_normalize) {
      float m = static_cast<float>(k.image_mean[i]), s = static_cast<float>(k.image_std[i]);
      if (k.do_rescale) {
        const float inv = static_cast<float>(1.0 / k.rescale_factor);
        m = m * inv;
        s = s * inv;
      }
      return (static_cast<float>(v) - m) / s;
    }
    if (k.do_rescale) return static_cast<float>(v) * static_cast<float>(k.rescale_factor);
    return static_cast<float>(v);
  }

  image_processor_config config_;
  std::array<std::array<float, 256>, 3> lut_{};
};

}  // namespace qformer
