// Image decoding and BlipImageProcessor preprocessing against transformers 5.17 (tests/data/preprocess, made by
// tools/make_preprocess_reference.py), the preprocessor_config.json parser, and files that must be refused.
//
// Bounds reached (max |diff| of the float32 pixel_values):
// - PNG inputs, both backends (PIL and torchvision), every size and filter: 0. The resize reproduces the uint8
//   output bit for bit (same coefficients, same fixed-point sums, uint8 rounding after each pass), stb's PNG
//   decode equals PIL's convert("RGB"), and rescale / normalise repeat numpy's / torch's float32 operations.
// - JPEG inputs: stb's decoder is not libjpeg-turbo (IDCT, chroma upsampling, YCbCr rounding), so the decoded
//   pixels differ by a few levels; the bounds below are the measured ones, with a little room.

#include "test_util.hpp"

#include <qformer/io/image.hpp>

#include <nlohmann/json.hpp>

#include <fstream>

using namespace qformer;

namespace {

std::string pre(const std::string& name) { return test::fixture("preprocess/" + name); }

std::vector<std::uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

double max_abs_diff(view<const float> a, view<const float> b) {
  REQUIRE(a.shape() == b.shape());
  double d = 0;
  for (index_t r = 0; r < a.rows(); ++r)
    for (index_t c = 0; c < a.cols(); ++c) d = std::max(d, std::abs(double(a.row(r)[c]) - double(b.row(r)[c])));
  return d;
}

nlohmann::json reference_cases() {
  std::ifstream in(pre("reference.json"));
  REQUIRE(in);
  return nlohmann::json::parse(in)["tensors"];
}

image_processor_config config_of(const nlohmann::json& c) {
  image_processor_config k;
  k.height = c["size"][0].get<index_t>();
  k.width = c["size"][1].get<index_t>();
  k.resample = static_cast<resample_filter>(c["resample"].get<int>());
  k.do_resize = c["do_resize"].get<bool>();
  k.do_rescale = c["do_rescale"].get<bool>();
  k.do_normalize = c["do_normalize"].get<bool>();
  k.backend = c["backend"] == "torchvision" ? resize_backend::torchvision : resize_backend::pil;
  return k;
}

/// Expects `f()` to throw load_error whose message names `file` and contains `needle`.
template <class F>
void expect_load_error(F&& f, const std::string& file, const std::string& needle) {
  try {
    (void)f();
    FAIL("accepted: " << file << " (expected: " << needle << ")");
  } catch (const load_error& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(e.file() == file);
    CHECK(msg.find(needle) != std::string::npos);
  }
}

std::string be32(std::uint32_t v) {
  return {char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
}

/// A PNG signature and IHDR (8-bit RGB) claiming width x height, then IEND; stb does not check CRCs.
std::string png_header(std::uint32_t width, std::uint32_t height) {
  return std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + "IHDR" + be32(width) + be32(height) +
         std::string("\x08\x02\x00\x00\x00", 5) + be32(0) + be32(0) + "IEND" + be32(0);
}

/// A JPEG start and frame header (SOFn `marker`, `bits` per sample) claiming width x height, 3 components.
std::string jpeg_header(std::uint16_t width, std::uint16_t height, char marker = '\xc0', char bits = 8) {
  std::string s("\xff\xd8\xff", 3);
  s += {marker, 0, 0x11, bits};
  s += {char(height >> 8), char(height & 0xff), char(width >> 8), char(width & 0xff), 3};
  s += std::string("\x01\x22\x00\x02\x11\x01\x03\x11\x01", 9);
  return s;
}

/// Offset of the `nth` (0-based) segment with marker 0xFF `marker` in a JPEG, skipping entropy-coded data.
std::size_t jpeg_segment(const std::vector<std::uint8_t>& b, std::uint8_t marker, int nth = 0) {
  std::size_t i = 2;
  while (i + 3 < b.size()) {
    if (b[i] != 0xff || b[i + 1] == 0x00 || b[i + 1] == 0xff || (b[i + 1] >= 0xd0 && b[i + 1] <= 0xd7)) {
      i += b[i] == 0xff && b[i + 1] != 0xff ? 2 : 1;
      continue;
    }
    if (b[i + 1] == marker && nth-- == 0) return i;
    i += 2 + ((std::size_t(b[i + 2]) << 8) | b[i + 3]);
  }
  FAIL("no segment 0xff " << int(marker));
  return 0;
}

rgb_image decode_string(const std::string& bytes, const std::string& name, const decode_options& o = {}) {
  return decode_image(bytes.data(), bytes.size(), name, o);
}

}  // namespace

TEST_CASE("image preprocessing: every case of tests/data/preprocess equals transformers") {
  const safetensors_file ref(pre("reference.safetensors"));
  const nlohmann::json cases = reference_cases();
  REQUIRE(cases.size() >= 30);
  for (const auto& item : cases.items()) {
    const std::string name = item.key();  // (clang 14 cannot capture structured bindings in CAPTURE's lambda)
    const nlohmann::json& c = item.value();
    CAPTURE(name);
    const rgb_image image = load_image(pre(c["image"].get<std::string>()));
    const tensor<float> got = BlipImageProcessor(config_of(c))(image);
    const tensor<float> want = ref.load<float>(name);
    const double d = max_abs_diff(got.get(), want.get());
    CAPTURE(d);
    if (c["codec"] == "png") {
      CHECK(d == 0.0);  // bit-exact float32
    } else {
      // JPEG: decoder differences of a few levels. In levels for the raw pixels; after resize + rescale +
      // normalise in normalised units, where one level is 1 / (255 * std) <= 0.01501.
      const bool raw = !c["do_rescale"].get<bool>() && !c["do_normalize"].get<bool>();
      CHECK(d <= (raw ? 4.0 : 0.0451));  // measured: 3 levels raw, 2 levels (0.0300) after preprocessing
    }
  }
}

TEST_CASE("image preprocessing: the shared torchvision reference at 224 and 364, where the folder is present") {
  // /work/shared/reference/preprocess was made by transformers 5.17's BlipImageProcessor with torchvision: the
  // torchvision backend must match it exactly; the PIL backend differs by 1-2 levels (BlipImageProcessorPil).
  const std::filesystem::path dir = std::filesystem::path(QFORMER_TEST_DATA) / "../../../shared/reference/preprocess";
  if (!std::filesystem::exists(dir / "reference.safetensors")) {
    MESSAGE("skipped: no shared reference at " << dir.string());
    return;
  }
  const safetensors_file ref((dir / "reference.safetensors").string());
  for (const char* base : {"chelsea", "coffee", "astronaut", "gradient"}) {
    const rgb_image image = load_image((dir / (std::string(base) + ".png")).string());
    for (index_t size : {224, 364}) {
      const std::string name = std::string(base) + "_" + std::to_string(size);
      CAPTURE(name);
      image_processor_config k;
      k.height = k.width = size;
      k.backend = resize_backend::torchvision;
      CHECK(max_abs_diff(BlipImageProcessor(k)(image).get(), ref.load<float>(name).get()) == 0.0);
      k.backend = resize_backend::pil;
      CHECK(max_abs_diff(BlipImageProcessor(k)(image).get(), ref.load<float>(name).get()) <= 0.031);
    }
  }
}

TEST_CASE("image decoding: conversions to RGB follow PIL") {
  SUBCASE("gray is replicated, 16-bit gray is clipped at 255 (PIL mode I;16), alpha is dropped") {
    const rgb_image g = load_image(pre("gray.png"));
    const rgb_image g16 = load_image(pre("gray16.png"));
    const rgb_image ga = load_image(pre("gray_alpha.png"));
    CHECK(g.width == 40);
    CHECK(g.height == 30);
    CHECK(g.source_channels == 1);
    CHECK(ga.source_channels == 2);
    CHECK(load_image(pre("rgba.png")).source_channels == 4);
    CHECK(load_image(pre("chelsea.png")).source_channels == 3);
    bool clipped = false;
    for (std::size_t i = 0; i < g.pixels.size(); i += 3) {
      CHECK(g.pixels[i] == g.pixels[i + 1]);
      CHECK(g.pixels[i] == g.pixels[i + 2]);
      CHECK(ga.pixels[i] == g.pixels[i]);  // same gray, alpha gone (not composited)
      // gray16 = gray * 4 + x: clipped to 255 unless below it.
      const int x = int((i / 3) % 40), v16 = g.pixels[i] * 4 + x;
      CHECK(int(g16.pixels[i]) == std::min(v16, 255));
      clipped = clipped || v16 > 255;
    }
    CHECK(clipped);
  }
  SUBCASE("a 3 x 2 image decodes exactly") {
    const rgb_image t = load_image(pre("tiny_3x2.png"));
    REQUIRE(t.width == 3);
    REQUIRE(t.height == 2);
    const std::vector<std::uint8_t> want{255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 128, 64, 32};
    CHECK(t.pixels == want);
  }
  SUBCASE("from memory equals from file") {
    for (const char* f : {"chelsea.png", "palette.png", "progressive.jpg", "cmyk.jpg"}) {
      CAPTURE(f);
      const std::vector<std::uint8_t> bytes = read_bytes(pre(f));
      CHECK(decode_image(std::span<const std::uint8_t>(bytes)).pixels == load_image(pre(f)).pixels);
    }
  }
}

TEST_CASE("image decoding: bad files are refused with a load_error naming the file") {
  test::temp_dir dir;
  SUBCASE("header claims too many pixels: refused before decoding") {
    // Within stb's own limits, above the pixel limit: ours speaks.
    expect_load_error([&] { return decode_string(png_header(10000, 10000), "big.png"); }, "big.png", "max_pixels");
    expect_load_error([&] { return decode_string(jpeg_header(10000, 10000), "big.jpg"); }, "big.jpg", "max_pixels");
    // Beyond stb's own limits too (2^30 bytes for a PNG): still ours, read from the header before stb.
    expect_load_error([&] { return decode_string(png_header(200000, 200000), "huge.png"); }, "huge.png", "max_pixels");
    expect_load_error([&] { return decode_string(jpeg_header(65000, 65000), "huge.jpg"); }, "huge.jpg", "max_pixels");
    // A real image above a lowered limit.
    decode_options small;
    small.max_pixels = 1000;
    expect_load_error([&] { return load_image(pre("chelsea.png"), small); }, pre("chelsea.png"), "135300 pixels");
    small.max_pixels = 1200;
    CHECK(load_image(pre("gray.png"), small).width == 40);  // 40 x 30 = 1200 is allowed
  }
  SUBCASE("truncated files") {
    for (const char* f : {"chelsea.png", "interlaced.png", "rgb16.png", "baseline.jpg", "progressive.jpg", "cmyk.jpg"}) {
      const std::vector<std::uint8_t> bytes = read_bytes(pre(f));
      const bool png = std::string(f).ends_with(".png");
      // Every cut but inside PNG's final IEND chunk (after the pixels, which PIL does not read either).
      const std::size_t end = png ? bytes.size() - 12 : bytes.size();
      const std::size_t step = std::max<std::size_t>(1, end / 97);
      for (std::size_t cut = 0; cut < end; cut += step) {
        CAPTURE(f);
        CAPTURE(cut);
        const std::string path = dir.file(std::string("cut_") + f);
        test::write_bytes(path, std::string(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut)));
        expect_load_error([&] { return load_image(path); }, path, cut == 0 ? "empty file" : "stb_image: ");
      }
    }
  }
  SUBCASE("empty, text, other formats, a folder, a missing file") {
    const std::string empty = dir.file("empty.png"), text = dir.file("notes.jpg"), gif = dir.file("anim.gif");
    test::write_bytes(empty, "");
    test::write_bytes(text, "these are notes, not a JPEG\n");
    test::write_bytes(gif, std::string("GIF89a\x01\x00\x01\x00\x00\x00\x00;", 14));
    expect_load_error([&] { return load_image(empty); }, empty, "empty file");
    expect_load_error([&] { return load_image(text); }, text, "not a PNG or JPEG image");
    expect_load_error([&] { return load_image(gif); }, gif, "not a PNG or JPEG");
    expect_load_error([&] { return load_image(dir.path.string()); }, dir.path.string(), "is a directory");
    expect_load_error([&] { return load_image(dir.file("missing.png")); }, dir.file("missing.png"), "no such file");
    expect_load_error([&] { return decode_image(nullptr, 0); }, "<memory>", "empty file");
  }
  SUBCASE("JPEG kinds stb does not decode") {
    expect_load_error([&] { return decode_string(jpeg_header(8, 8, '\xc9'), "arith.jpg"); }, "arith.jpg",
                      "arithmetic-coded JPEG is not supported");
    expect_load_error([&] { return decode_string(jpeg_header(8, 8, '\xc1', 12), "deep.jpg"); }, "deep.jpg",
                      "12-bit JPEG is not supported");
    expect_load_error([&] { return decode_string(jpeg_header(8, 8, '\xc3'), "lossless.jpg"); }, "lossless.jpg",
                      "lossless JPEG is not supported");
  }
  SUBCASE("a Huffman table of more than 256 codes (overflows stb 2.27's tables) is refused before stb sees it") {
    std::string dht("\xff\xd8\xff\xc4\x01\x13\x00", 7);  // DHT, length 2 + 1 + 16 + 256: class 0, id 0
    dht += std::string(16, '\x10') + std::string(256, '\x00');  // 16 lengths x 16 codes = 256: allowed
    std::string bad = dht;
    bad[7] = '\x11';  // 17 + 15 x 16 = 257 codes
    expect_load_error([&] { return decode_string(bad + jpeg_header(8, 8).substr(2), "dht.jpg"); }, "dht.jpg",
                      "Huffman table of 257 codes");
    expect_load_error([&] { return decode_string(dht + jpeg_header(8, 8).substr(2), "ok_dht.jpg"); }, "ok_dht.jpg",
                      "stb_image: ");  // a valid table: stb goes on and finds no scan
  }
  SUBCASE("a scan using a table no earlier segment defines (stb 2.27 reads its uninitialised table) is refused") {
    const auto refused = [&](const std::string& file, std::size_t at, std::uint8_t value, const std::string& needle) {
      std::vector<std::uint8_t> bytes = read_bytes(pre(file));
      bytes[at] = value;
      expect_load_error([&] { return decode_image(std::span<const std::uint8_t>(bytes), "tables.jpg"); },
                        "tables.jpg", needle);
    };
    const std::vector<std::uint8_t> baseline = read_bytes(pre("baseline.jpg"));
    // SOS: FF DA, length, Ns, then (component id, DC table << 4 | AC table): baseline.jpg defines tables 0 and 1.
    const std::size_t scan = jpeg_segment(baseline, 0xda);
    REQUIRE(baseline[scan + 6] == 0x00);
    refused("baseline.jpg", scan + 6, 0x20, "component 1 uses DC Huffman table 2, which no earlier segment defines");
    refused("baseline.jpg", scan + 6, 0x03, "component 1 uses AC Huffman table 3");
    // SOF0: FF C0, length, P, Y, X, Nf, then (id, sampling, quantisation table): tables 0 and 1 are defined.
    const std::size_t frame = jpeg_segment(baseline, 0xc0);
    REQUIRE(baseline[frame + 12] == 0x00);
    refused("baseline.jpg", frame + 12, 0x02, "component 1 uses quantisation table 2");
    // A table that no segment defines any more: the DHT of DC table 1 turned into a comment segment.
    const std::size_t dc1_dht = jpeg_segment(baseline, 0xc4, 2);
    REQUIRE(baseline[dc1_dht + 4] == 0x01);
    refused("baseline.jpg", dc1_dht + 1, 0xfe, "component 2 uses DC Huffman table 1");
    // progressive.jpg's first scan (DC of 3 components) names AC table 0 before any AC table exists: a DC scan
    // does not use it, so the file decodes (the preprocessing cases check its pixels). Its first AC scan with
    // an AC table that is never defined is refused.
    const std::vector<std::uint8_t> progressive = read_bytes(pre("progressive.jpg"));
    const std::size_t dc_scan = jpeg_segment(progressive, 0xda);
    REQUIRE(progressive[dc_scan + 4] == 3);
    CHECK((progressive[dc_scan + 6] & 15) == 0);
    CHECK(decode_image(std::span<const std::uint8_t>(progressive), "progressive.jpg").width == 40);
    const std::size_t ac_scan = jpeg_segment(progressive, 0xda, 1);
    REQUIRE(progressive[ac_scan + 4] == 1);
    REQUIRE(progressive[ac_scan + 7] > 0);  // spectral selection starts after DC
    refused("progressive.jpg", ac_scan + 6, 0x03, "AC Huffman table 3");
  }
  SUBCASE("corrupt bytes inside a valid header") {
    std::vector<std::uint8_t> bytes = read_bytes(pre("baseline.jpg"));
    std::string png = png_header(4, 4);  // IHDR then IEND: no pixel data at all
    expect_load_error([&] { return decode_string(png, "nodata.png"); }, "nodata.png", "stb_image: ");
    for (std::size_t i = bytes.size() / 3; i < bytes.size(); ++i) bytes[i] = 0xff;  // markers everywhere
    expect_load_error([&] { return decode_image(std::span<const std::uint8_t>(bytes), "smashed.jpg"); },
                      "smashed.jpg", "stb_image: ");
  }
}

TEST_CASE("image preprocessing: preprocessor_config.json") {
  SUBCASE("transformers' own file") {
    const image_processor_config c = load_image_processor_config(test::fixture("preprocess"));
    CHECK(c.height == 224);
    CHECK(c.width == 224);
    CHECK(c.rescale_factor == 1.0 / 255.0);
    CHECK(c.image_mean[1] == 0.4578275);
    CHECK(c.image_std[2] == 0.27577711);
    CHECK(c.resample == resample_filter::bicubic);
    CHECK(c.backend == resize_backend::torchvision);  // transformers 5's BlipImageProcessor with torchvision installed
    CHECK(parse_image_processor_config(R"({"image_processor_type": "BlipImageProcessorPil"})", "p.json").backend ==
          resize_backend::pil);
    CHECK(parse_image_processor_config(R"({"resample": 1})", "p.json").backend == resize_backend::pil);  // LANCZOS
    CHECK(BlipImageProcessor::from_pretrained(test::fixture("preprocess")).config().width == 224);
  }
  SUBCASE("absent fields take BlipImageProcessor's defaults; a number size is square; Fast means torchvision") {
    const image_processor_config d = parse_image_processor_config("{}", "p.json");
    CHECK(d.height == 384);
    CHECK(d.width == 384);
    CHECK(d.do_resize);
    CHECK(d.do_rescale);
    CHECK(d.do_normalize);
    CHECK(d.do_convert_rgb);
    CHECK(d.image_mean[0] == 0.48145466);
    CHECK(d.image_std[0] == 0.26862954);
    const image_processor_config s = parse_image_processor_config(
        R"({"size": 364, "image_mean": 0.5, "image_std": null, "image_processor_type": "BlipImageProcessorFast"})", "p.json");
    CHECK(s.height == 364);
    CHECK(s.width == 364);
    CHECK(s.image_mean[2] == 0.5);
    CHECK(s.image_std[1] == 0.26130258);
    CHECK(s.backend == resize_backend::torchvision);
  }
  SUBCASE("malformed fields name the file and the field") {
    const std::vector<std::pair<std::string, std::string>> bad = {
        {R"({"size": "224"})", "size"},
        {R"({"size": {"shortest_edge": 224}})", "size"},
        {R"({"size": {"height": 0, "width": 224}})", "size.height"},
        {R"({"size": {"height": 224, "width": 1e9}})", "size.width"},
        {R"({"image_mean": [0.5, 0.5]})", "image_mean"},
        {R"({"image_mean": [0.5, "a", 0.5]})", "image_mean[1]"},
        {R"({"image_std": [1, 0, 1]})", "image_std"},
        {R"({"rescale_factor": "1/255"})", "rescale_factor"},
        {R"({"resample": 0})", "resample"},
        {R"({"resample": "bicubic"})", "resample"},
        {R"({"do_resize": "yes"})", "do_resize"},
        {R"({"do_center_crop": true})", "do_center_crop"},
        {R"({"image_processor_type": 7})", "image_processor_type"},
        {R"([1, 2])", "(root)"},
        {R"({"size": )", "(root)"},
    };
    for (const auto& entry : bad) {
      const std::string& text = entry.first;
      const std::string& field = entry.second;
      CAPTURE(text);
      try {
        (void)parse_image_processor_config(text, "cfg/preprocessor_config.json");
        FAIL("accepted");
      } catch (const config_error& e) {
        CHECK(e.file() == "cfg/preprocessor_config.json");
        CHECK(e.field() == field);
      }
    }
    CHECK_THROWS_AS(load_image_processor_config("/nonexistent/folder"), load_error);
  }
}

TEST_CASE("image preprocessing: batches, views and misuse") {
  const rgb_image a = load_image(pre("chelsea.png")), b = load_image(pre("gray_alpha.png"));
  image_processor_config k;
  k.height = 24;
  k.width = 20;
  const BlipImageProcessor p(k);
  SUBCASE("a batch is its images stacked, and preprocess_into writes into a batch view") {
    const std::vector<rgb_image> images{a, b};
    const tensor<float> batch = p(images);
    CHECK(batch.shape() == shape{2, 3, 24, 20});
    CHECK(max_abs_diff(batch.get()[1], p(b).get()[0]) == 0.0);
    tensor<float> out({3, 3, 24, 20});
    p.preprocess_into(a, out.mut()[2]);
    CHECK(max_abs_diff(out.get()[2], p(a).get()[0]) == 0.0);
    tensor<float> wrong({3, 20, 24});
    CHECK_THROWS_AS(p.preprocess_into(a, wrong.mut()), shape_error);
  }
  SUBCASE("resize is the identity at the same size; the rows a downscale needs are all read") {
    CHECK(resize(a, a.width, a.height).pixels == a.pixels);
    const rgb_image one = resize(a, 1, 1);
    CHECK(one.pixels.size() == 3);
    const rgb_image column = resize(a, 1, a.height);  // horizontal pass only
    const rgb_image row = resize(a, a.width, 1);      // vertical pass only
    CHECK(column.height == a.height);
    CHECK(row.width == a.width);
    CHECK_THROWS_AS(resize(a, 0, 5), invalid_argument);
    CHECK_THROWS_AS(resize(rgb_image{}, 5, 5), invalid_argument);
    CHECK_THROWS_AS(resize(a, 5, 5, resample_filter::nearest), invalid_argument);
    CHECK_THROWS_AS(resize(a, 5, 5, resample_filter::lanczos, resize_backend::torchvision), invalid_argument);
  }
  SUBCASE("without do_resize the image keeps its size, and a batch must agree") {
    image_processor_config n = k;
    n.do_resize = false;
    const BlipImageProcessor q(n);
    CHECK(q(b).shape() == shape{1, 3, 30, 40});
    CHECK_THROWS_AS(q(std::vector<rgb_image>{a, b}), invalid_argument);
  }
  SUBCASE("do_convert_rgb false refuses what was not RGB, as transformers' normalisation does") {
    image_processor_config n = k;
    n.do_convert_rgb = false;
    const BlipImageProcessor q(n);
    CHECK_THROWS_AS(q(b), invalid_argument);
    CHECK(q(a).shape() == shape{1, 3, 24, 20});
  }
}

TEST_CASE("image decoding: empty IDAT chunks (legal PNG) decode as without them") {
  // An empty IDAT before the data once made stb_image memcpy to a null pointer (fuzzing, UBSan); qformer drops
  // such chunks before decoding.
  std::ifstream in(pre("gray.png"), std::ios::binary);
  const std::string png((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t first_idat = png.find("IDAT") - 4;
  REQUIRE(first_idat < png.size());
  const std::string empty_idat("\0\0\0\0IDAT\x35\xaf\x06\x1e", 12);  // length 0, type, CRC of "IDAT"
  const std::string with_empty = png.substr(0, first_idat) + empty_idat + empty_idat + png.substr(first_idat);
  const rgb_image a = decode_string(png, "gray.png"), b = decode_string(with_empty, "gray-empty-idat.png");
  CHECK(a.width == b.width);
  CHECK(a.height == b.height);
  CHECK(a.pixels == b.pixels);
}
