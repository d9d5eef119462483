#pragma once
/// \file
/// Decoding PNG and JPEG files into `rgb_image`, converted to RGB as transformers 5.17's BlipImageProcessor
/// converts a PIL image (`image.convert("RGB")`), plus everything in <qformer/io/image_processor.hpp>.
///
/// Include it explicitly (the umbrella <qformer/qformer.hpp> does not): it compiles stb_image (~2 s per
/// translation unit). stb's symbols are `static` here, so every translation unit that includes this header gets
/// its own private copy and nothing clashes at link time. A program that already compiles stb_image itself
/// defines QFORMER_STB_IMAGE_EXTERNAL before including this header, and this header then only declares stb.
///
/// Conversion to RGB, as PIL's `convert("RGB")`:
/// - gray, 1/2/4/8-bit: replicated into R, G and B; palette: looked up;
/// - alpha (gray + alpha, RGBA, palette or colour-key transparency): dropped, not composited on any background;
/// - 16-bit RGB / RGBA / gray + alpha: the high byte of each sample;
/// - 16-bit gray: PIL opens it as mode I;16 and converts by clipping, so values above 255 become 255 (not v / 257);
/// - CMYK JPEG (Adobe): R = C * K / 255 on the stored (inverted) values, as PIL's CMYK -> RGB.
/// PNG decoding is then bit-exact to PIL (stb does not check chunk CRCs, which PIL does: a PNG with a bad CRC
/// decodes here and fails in PIL). JPEG is not: stb's IDCT, chroma upsampling and YCbCr conversion differ
/// from libjpeg-turbo's (which PIL uses) by up to 3 levels on some pixels (tests/test_image.cpp measures it). Neither PIL nor this header applies EXIF
/// orientation (transformers' `load_image(path)` does; `processor(Image.open(path))` does not).
///
/// Refused with qformer::load_error naming the file (never a crash): empty files, files that are neither PNG nor
/// JPEG (GIF, BMP, WebP, ...), truncated or corrupt data (with stb's reason), headers claiming more than
/// `decode_options::max_pixels` pixels (checked on the header, before any pixel memory is allocated), 12-bit,
/// arithmetic-coded, lossless and hierarchical JPEGs (stb decodes none of them), folders and unreadable paths.
/// Before stb sees a JPEG its tables are checked (`detail::jpeg_problem`): Debian's stb 2.27 overflows its
/// tables on a Huffman table of more than 256 codes, and reads never-initialised memory (then past the end of an
/// array) when a scan uses a Huffman or quantisation table no segment defines. Mutation fuzzing of the test
/// images under ASan and UBSan found no other memory error; stb still
/// performs out-of-range shifts on some corrupt JPEG bit streams once their bits run out (undefined behaviour in
/// stb 2.27, harmless on x86-64 and AArch64; UBSan's shift check is off for stb's functions, see below).

#include "image_processor.hpp"

#if !__has_include(<stb_image.h>)
#error "qformer/io/image.hpp needs stb_image.h on the include path: apt-get install libstb-dev (link qformer::qformer, whose qformer::stb_image target adds /usr/include/stb)"
#endif

#if !defined(QFORMER_STB_IMAGE_EXTERNAL) && !defined(QFORMER_STB_IMAGE_COMPILED)
#define QFORMER_STB_IMAGE_COMPILED
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
// Zeroed allocations: on corrupt files stb can read memory it allocated and never wrote (the samples of a
// component that no scan covers, the coefficients of a progressive JPEG cut short); zeroes make that output
// deterministic instead of whatever the heap held.
#define STBI_MALLOC(size) calloc(1, size)
#define STBI_REALLOC(pointer, size) realloc(pointer, size)
#define STBI_FREE(pointer) free(pointer)
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#if defined(__clang__)
#pragma GCC diagnostic ignored "-Wunknown-warning-option"
#endif
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wuseless-cast"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#endif
#if defined(__clang__)
// stb 2.27's JPEG bit reader lets its bit count go negative on some corrupt entropy-coded data and then shifts by
// 32 or more (stbi__grow_buffer_unsafe; fixed upstream in 2.28, not in Debian 12's libstb-dev). The result only
// feeds bits that are past the end of the data; x86-64 and AArch64 mask the count. UBSan's shift check is turned
// off for stb's own functions so that the sanitizer runs keep checking everything else (ASan still covers stb).
#pragma clang attribute push(__attribute__((no_sanitize("shift"))), apply_to = function)
#endif
#include <stb_image.h>
#if defined(__clang__)
#pragma clang attribute pop
#endif
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#undef STB_IMAGE_IMPLEMENTATION
#else
#include <stb_image.h>
#endif

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace qformer {

/// Limits checked before anything large is allocated.
struct decode_options {
  /// Images whose header claims more than width x height = max_pixels are refused before decoding. The default
  /// is PIL's `Image.MAX_IMAGE_PIXELS` (89,478,485, about 9459 x 9459), beyond which PIL warns of a
  /// decompression bomb; BLIP-2 resizes to 224 or 364 anyway.
  std::int64_t max_pixels = 89'478'485;
  /// load_image refuses larger files before reading them (stb reads at most 2 GiB - 1 from memory anyway).
  std::int64_t max_file_bytes = std::int64_t(1) << 30;
};

namespace detail {

struct stbi_deleter {
  void operator()(void* p) const noexcept { stbi_image_free(p); }
};

inline std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return std::string("stb_image: ") + (r ? r : "unknown failure");
}

enum class image_kind { unknown, png, jpeg };

inline image_kind sniff(const std::uint8_t* p, std::size_t n) noexcept {
  static constexpr std::uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n >= 8 && std::memcmp(p, png_magic, 8) == 0) return image_kind::png;
  if (n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) return image_kind::jpeg;
  return image_kind::unknown;
}

inline std::uint32_t be32(const std::uint8_t* p) noexcept {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
}

/// Checks a JPEG's marker segments for what stb_image 2.27 cannot take, walking every segment stb could process
/// (resynchronising on 0xFF as stb does, skipping entropy-coded data up to the next marker that is not a stuffed
/// byte or a restart). Returns what is wrong, or nothing:
/// - kinds of JPEG stb does not decode (its own message for them is lost: its format probe ends in "unknown image
///   type");
/// - Huffman tables of more than 256 codes, which overflow stb's tables (a heap overflow fixed only in later stb
///   versions);
/// - a scan that decodes with a Huffman table, or a component whose quantisation table, no earlier segment
///   defines: stb would read its never-initialised table (found by fuzzing: with garbage in it, stb's Huffman
///   decoder reads past the end of `maxcode`). libjpeg refuses these files too, except that it falls back to the
///   standard Huffman tables of the JPEG specification (motion-JPEG frames carry none); stb has no such fallback.
/// Where this walk and stb's could part (a marker inside entropy-coded data that stb stops short of), stb stops
/// with an error before it decodes any later scan, so a table counted as defined here is defined for stb too.
inline std::string jpeg_problem(const std::uint8_t* p, std::size_t n) {
  const auto at = [&](std::size_t i) -> std::size_t { return i < n ? p[i] : 0; };  // stb reads 0 past the end
  bool huffman_defined[2][4] = {};  // [0: DC, 1: AC][table id]
  bool quantisation_defined[4] = {};
  struct frame_component {
    std::size_t id, quantisation_table;
  };
  std::vector<frame_component> components;  // of the first frame header (stb refuses any later one)
  bool frame_seen = false, progressive = false;
  std::size_t i = 2;
  while (i < n) {
    while (i < n && p[i] != 0xff) ++i;
    while (i < n && p[i] == 0xff) ++i;
    if (i >= n) break;
    const std::uint8_t m = p[i++];
    if (m == 0xd9) break;                                     // end of image: stb reads no further
    if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd8)) continue;  // no length
    const std::size_t len = (at(i) << 8) | at(i + 1);
    if (len < 2) break;                                       // stb refuses it
    if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {  // a frame header
      if (m == 0xc3 || m == 0xc7 || m == 0xcb || m == 0xcf) return "lossless JPEG is not supported";
      if (m >= 0xc9) return "arithmetic-coded JPEG is not supported";
      if (m == 0xc5 || m == 0xc6) return "hierarchical JPEG is not supported";
      if (at(i + 2) != 8) return std::to_string(at(i + 2)) + "-bit JPEG is not supported";
      if (!frame_seen) {  // P, Y, X, Nf, then Nf x (C, H << 4 | V, Tq)
        frame_seen = true;
        progressive = m == 0xc2;
        for (std::size_t c = 0, count = at(i + 7); c < count; ++c)
          components.push_back({at(i + 8 + 3 * c), at(i + 10 + 3 * c)});
      }
    }
    if (m == 0xc4) {  // DHT: as stb reads it, table after table while the segment's length lasts
      std::ptrdiff_t left = static_cast<std::ptrdiff_t>(len) - 2;
      std::size_t j = i + 2;
      while (left > 0) {
        const std::size_t table_class = at(j) >> 4, id = at(j) & 15;
        std::size_t codes = 0;
        for (std::size_t k = 1; k <= 16; ++k) codes += at(j + k);
        if (codes > 256) return "corrupt JPEG: a Huffman table of " + std::to_string(codes) + " codes (at most 256)";
        if (table_class <= 1 && id <= 3) huffman_defined[table_class][id] = true;  // stb refuses any other
        left -= static_cast<std::ptrdiff_t>(17 + codes);
        j += 17 + codes;
      }
    }
    if (m == 0xdb) {  // DQT: 64 entries of 8 or 16 bits per table
      std::ptrdiff_t left = static_cast<std::ptrdiff_t>(len) - 2;
      std::size_t j = i + 2;
      while (left > 0) {
        const std::size_t precision = at(j) >> 4, id = at(j) & 15;
        if (precision > 1) break;                             // stb refuses it
        if (id <= 3) quantisation_defined[id] = true;
        const std::size_t bytes = precision == 0 ? 65 : 129;
        left -= static_cast<std::ptrdiff_t>(bytes);
        j += bytes;
      }
    }
    if (m == 0xda && frame_seen) {  // SOS: Ns, Ns x (C, Td << 4 | Ta), Ss, Se, Ah << 4 | Al
      const std::size_t scan_components = at(i + 2);
      const std::size_t spectral_start = at(i + 3 + 2 * scan_components);
      const std::size_t approximation_high = at(i + 5 + 2 * scan_components) >> 4;
      // The tables stb decodes this scan with: sequential scans use both; a progressive DC scan only the DC
      // table, and its refinement scans none; a progressive AC scan only the AC table.
      const bool uses_dc = !progressive || (spectral_start == 0 && approximation_high == 0);
      const bool uses_ac = !progressive || spectral_start > 0;
      for (std::size_t c = 0; c < scan_components; ++c) {
        const std::size_t id = at(i + 3 + 2 * c), dc = at(i + 4 + 2 * c) >> 4, ac = at(i + 4 + 2 * c) & 15;
        const auto component = std::find_if(components.begin(), components.end(),
                                            [&](const frame_component& f) { return f.id == id; });
        if (component == components.end() || dc > 3 || ac > 3 || component->quantisation_table > 3)
          continue;  // stb refuses the scan itself
        const std::string which = "corrupt JPEG: the scan of component " + std::to_string(id) + " uses ";
        if (!quantisation_defined[component->quantisation_table])
          return which + "quantisation table " + std::to_string(component->quantisation_table) +
                 ", which no earlier segment defines";
        if (uses_dc && !huffman_defined[0][dc])
          return which + "DC Huffman table " + std::to_string(dc) + ", which no earlier segment defines";
        if (uses_ac && !huffman_defined[1][ac])
          return which + "AC Huffman table " + std::to_string(ac) + ", which no earlier segment defines";
      }
    }
    i += len;
    if (m == 0xda) {  // entropy-coded data up to the next real marker
      while (i + 1 < n) {
        if (p[i] != 0xff) {
          ++i;
        } else if (p[i + 1] == 0x00 || (p[i + 1] >= 0xd0 && p[i + 1] <= 0xd7)) {
          i += 2;
        } else if (p[i + 1] == 0xff) {
          ++i;
        } else {
          break;
        }
      }
    }
  }
  return {};
}

/// The PNG without its zero-length IDAT chunks, or empty when it has none. Legal but rare, an empty IDAT before
/// any data makes stb_image pass a null buffer to memcpy (undefined behaviour found by fuzzing); dropping it
/// changes nothing else (stb does not check CRCs, and the image data is the concatenation of the IDATs).
inline std::vector<stbi_uc> without_empty_idat(const stbi_uc* p, std::size_t n) {
  std::vector<std::pair<std::size_t, std::size_t>> drop;  // [begin, end) of each empty IDAT chunk
  std::size_t pos = 8;
  while (pos + 12 <= n) {
    const std::uint64_t length = be32(p + pos);
    if (length == 0 && std::memcmp(p + pos + 4, "IDAT", 4) == 0) drop.emplace_back(pos, pos + 12);
    if (length > n - pos - 12) break;  // truncated: stb reports it
    pos += 12 + static_cast<std::size_t>(length);
  }
  if (drop.empty()) return {};
  std::vector<stbi_uc> out;
  out.reserve(n);
  std::size_t from = 0;
  for (const auto& [begin, end] : drop) {
    out.insert(out.end(), p + from, p + begin);
    from = end;
  }
  out.insert(out.end(), p + from, p + n);
  return out;
}

}  // namespace detail

/// Decodes a PNG or JPEG held in memory; `name` stands for the file in error messages.
/// Returns (height, width, 3) RGB converted as the file comment says.
inline rgb_image decode_image(const void* data, std::size_t size, const std::string& name = "<memory>",
                              const decode_options& options = {}) {
  if (size == 0 || data == nullptr) throw load_error(name, "empty file: not an image");
  if (size > static_cast<std::size_t>(INT_MAX))
    throw load_error(name, "file of " + std::to_string(size) + " bytes is too large to decode (more than 2 GiB)");
  const auto* bytes = static_cast<const stbi_uc*>(data);
  int len = static_cast<int>(size);
  const detail::image_kind kind = detail::sniff(bytes, size);
  if (kind == detail::image_kind::unknown) throw load_error(name, "not a PNG or JPEG image");
  std::vector<stbi_uc> cleaned;
  if (kind == detail::image_kind::png && !(cleaned = detail::without_empty_idat(bytes, size)).empty()) {
    bytes = cleaned.data();
    len = static_cast<int>(cleaned.size());
  }
  const auto refuse_size = [&](std::uint64_t w, std::uint64_t h) {  // each < 2^32: the product fits
    if (options.max_pixels < 0 || w * h > static_cast<std::uint64_t>(options.max_pixels))
      throw load_error(name, "image header claims " + std::to_string(w) + " x " + std::to_string(h) + " = " +
                                 std::to_string(w * h) + " pixels, more than the limit of " +
                                 std::to_string(options.max_pixels) + " (decode_options::max_pixels)");
  };
  // PNG: IHDR is the first chunk; its size is checked here too, since stb refuses sizes above 2^30 bytes
  // with only "unknown image type".
  if (kind == detail::image_kind::png && size >= 24 && std::memcmp(bytes + 12, "IHDR", 4) == 0)
    refuse_size(detail::be32(bytes + 16), detail::be32(bytes + 20));
  if (kind == detail::image_kind::jpeg) {
    const std::string problem = detail::jpeg_problem(bytes, size);
    if (!problem.empty() && problem.ends_with("not supported"))
      throw load_error(name, problem + " (stb_image decodes 8-bit baseline and progressive Huffman-coded JPEGs)");
    if (!problem.empty()) throw load_error(name, problem);
  }
  int w = 0, h = 0, channels = 0;
  // The header only: no pixel memory yet.
  if (!stbi_info_from_memory(bytes, len, &w, &h, &channels))
    throw load_error(name, std::string("corrupt, truncated or unsupported ") +
                               (kind == detail::image_kind::png ? "PNG" : "JPEG") + " header (" + detail::stb_reason() +
                               ")");
  if (w <= 0 || h <= 0) throw load_error(name, "image header claims an empty image");
  refuse_size(static_cast<std::uint64_t>(w), static_cast<std::uint64_t>(h));
  const std::int64_t pixels = std::int64_t(w) * std::int64_t(h);
  rgb_image out;
  out.source_channels = channels;
  int dw = 0, dh = 0, dc = 0;
  if (channels == 1 && stbi_is_16_bit_from_memory(bytes, len)) {
    // 16-bit gray: PIL mode I;16, whose conversion to RGB clips each sample to 255.
    std::unique_ptr<stbi_us, detail::stbi_deleter> g(stbi_load_16_from_memory(bytes, len, &dw, &dh, &dc, 1));
    if (!g) throw load_error(name, "cannot decode (" + detail::stb_reason() + ")");
    if (dw != w || dh != h) throw load_error(name, "decoded size differs from the header's");
    out.width = w;
    out.height = h;
    out.pixels.resize(static_cast<std::size_t>(pixels) * 3);
    for (std::int64_t i = 0; i < pixels; ++i) {
      const std::uint8_t v = g.get()[i] > 255 ? std::uint8_t(255) : static_cast<std::uint8_t>(g.get()[i]);
      out.pixels[static_cast<std::size_t>(3 * i)] = out.pixels[static_cast<std::size_t>(3 * i + 1)] =
          out.pixels[static_cast<std::size_t>(3 * i + 2)] = v;
    }
    return out;
  }
  // Everything else: stb converts to 3 channels exactly as PIL's convert("RGB") (replicate gray, drop alpha,
  // high byte of 16-bit samples, palette lookup, Adobe CMYK -> RGB).
  std::unique_ptr<stbi_uc, detail::stbi_deleter> rgb(stbi_load_from_memory(bytes, len, &dw, &dh, &dc, 3));
  if (!rgb) throw load_error(name, "cannot decode (" + detail::stb_reason() + ")");
  if (dw != w || dh != h) throw load_error(name, "decoded size differs from the header's");
  out.width = w;
  out.height = h;
  out.pixels.assign(rgb.get(), rgb.get() + pixels * 3);
  return out;
}

/// Decodes a PNG or JPEG held in memory.
inline rgb_image decode_image(std::span<const std::uint8_t> bytes, const std::string& name = "<memory>",
                              const decode_options& options = {}) {
  return decode_image(bytes.data(), bytes.size(), name, options);
}

/// Reads and decodes a PNG or JPEG file. Errors (load_error) name `path`.
inline rgb_image load_image(const std::string& path, const decode_options& options = {}) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw load_error(path, "cannot open: no such file");
  if (fs::is_directory(st)) throw load_error(path, "is a directory, not an image file");
  if (!fs::is_regular_file(st)) throw load_error(path, "is not a regular file");
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec) throw load_error(path, "cannot read its size: " + ec.message());
  if (size > static_cast<std::uintmax_t>(options.max_file_bytes))
    throw load_error(path, "file of " + std::to_string(size) + " bytes is larger than the limit of " +
                               std::to_string(options.max_file_bytes) + " (decode_options::max_file_bytes)");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw load_error(path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (static_cast<std::uintmax_t>(in.gcount()) != size) throw load_error(path, "read fewer bytes than the file holds");
  return decode_image(bytes.data(), bytes.size(), path, options);
}

}  // namespace qformer
