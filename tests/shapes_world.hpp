#pragma once
// The shapes world of issue D in C++: a port of tools/shapes/shapes_world.py that renders the same pixels for
// the same shape parameters (tests/data/shapes/render_reference.json checks it) and draws scenes from the same
// distribution with its own seeded RNG (std::mt19937_64, whose output the standard fixes; the draws are not
// Python's).
//
// The world: 96 x 96 RGB, white background, one or two filled shapes, no anti-aliasing. Shape kinds circle /
// square / triangle in the s x s box [x0, x0 + s) x [y0, y0 + s), s in [24, 40]; colours red (220,30,30), green
// (30,160,60), blue (40,70,220), yellow (230,200,30). One shape anywhere fully inside; two shapes: the first fully
// inside x < 48, the second fully inside x >= 48, any height. Caption "a red circle" or, left then right,
// "a red circle and a blue square".
//
// Rasterisation: pixel (x, y) is painted when its centre (x + 0.5, y + 0.5) lies in the shape's exact geometry,
// boundary included. In doubled integer coordinates X = 2x + 1, Y = 2y + 1:
//   square:   2*x0 < X < 2*(x0 + s) and 2*y0 < Y < 2*(y0 + s)
//   circle:   (X - 2*x0 - s)^2 + (Y - 2*y0 - s)^2 <= s^2             (the inscribed disk)
//   triangle: 2*y0 < Y < 2*(y0 + s) and 2*|X - 2*x0 - s| <= Y - 2*y0  (apex mid-top, base on the bottom edge)

#include <qformer/io/image_processor.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace shapes {

inline constexpr int image_size = 96;
inline constexpr int half = image_size / 2;
inline constexpr int min_side = 24, max_side = 40;

enum class kind { circle, square, triangle };
enum class colour { red, green, blue, yellow };

inline constexpr std::array<const char*, 3> kind_names{"circle", "square", "triangle"};
inline constexpr std::array<const char*, 4> colour_names{"red", "green", "blue", "yellow"};
inline constexpr std::array<std::array<std::uint8_t, 3>, 4> colour_rgb{{{220, 30, 30}, {30, 160, 60}, {40, 70, 220}, {230, 200, 30}}};

struct shape {
  kind k = kind::circle;
  colour c = colour::red;
  int s = min_side;
  int x0 = 0, y0 = 0;
};

inline kind parse_kind(const std::string& name) {
  for (std::size_t i = 0; i < kind_names.size(); ++i)
    if (name == kind_names[i]) return static_cast<kind>(i);
  throw std::invalid_argument("unknown shape kind " + name);
}

inline colour parse_colour(const std::string& name) {
  for (std::size_t i = 0; i < colour_names.size(); ++i)
    if (name == colour_names[i]) return static_cast<colour>(i);
  throw std::invalid_argument("unknown colour " + name);
}

/// Whether the shape covers pixel (x, y): the rule above, in exact integer arithmetic.
inline bool covers(const shape& sh, int x, int y) noexcept {
  const long X = 2L * x + 1, Y = 2L * y + 1;
  const long s = sh.s, x0 = sh.x0, y0 = sh.y0;
  const bool in_rows = Y > 2 * y0 && Y < 2 * (y0 + s);
  switch (sh.k) {
    case kind::square: return in_rows && X > 2 * x0 && X < 2 * (x0 + s);
    case kind::circle: {
      const long dx = X - 2 * x0 - s, dy = Y - 2 * y0 - s;
      return dx * dx + dy * dy <= s * s;
    }
    case kind::triangle: return in_rows && 2 * std::labs(X - 2 * x0 - s) <= Y - 2 * y0;
  }
  return false;
}

/// The scene: white background, shapes painted in order.
inline qformer::rgb_image render(const std::vector<shape>& scene, int size = image_size) {
  qformer::rgb_image image(size, size);
  std::fill(image.pixels.begin(), image.pixels.end(), std::uint8_t{255});
  for (const shape& sh : scene) {
    const auto& rgb = colour_rgb[static_cast<std::size_t>(sh.c)];
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x)
        if (covers(sh, x, y)) std::copy(rgb.begin(), rgb.end(), image.row(y) + 3 * x);
  }
  return image;
}

inline std::string words(const shape& sh) {
  return std::string("a ") + colour_names[static_cast<std::size_t>(sh.c)] + " " + kind_names[static_cast<std::size_t>(sh.k)];
}

inline std::string caption(const std::vector<shape>& scene) {
  std::string out;
  for (std::size_t i = 0; i < scene.size(); ++i) out += (i ? " and " : "") + words(scene[i]);
  return out;
}

/// Seeded scenes from the world's distribution: one or two shapes with probability 1/2, kind and colour uniform,
/// s uniform in [24, 40], x0 / y0 uniform over their allowed ranges.
class scene_sampler {
 public:
  explicit scene_sampler(std::uint64_t seed) : rng_(seed) {}

  std::vector<shape> operator()() {
    if (uniform(2) == 0) return {draw(0, image_size)};
    return {draw(0, half), draw(half, image_size)};
  }

 private:
  /// Uniform in [0, n): rejection sampling on mt19937_64's fixed output, so every platform draws the same scenes.
  int uniform(int n) {
    const std::uint64_t range = static_cast<std::uint64_t>(n);
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    std::uint64_t v;
    do v = rng_();
    while (v >= limit);
    return static_cast<int>(v % range);
  }

  /// A shape whose box lies in columns [x_lo, x_hi) and anywhere vertically.
  shape draw(int x_lo, int x_hi) {
    shape sh;
    sh.k = static_cast<kind>(uniform(3));
    sh.c = static_cast<colour>(uniform(4));
    sh.s = min_side + uniform(max_side - min_side + 1);
    sh.x0 = x_lo + uniform(x_hi - x_lo - sh.s + 1);
    sh.y0 = uniform(image_size - sh.s + 1);
    return sh;
  }

  std::mt19937_64 rng_;
};

/// FNV-1a (64 bit) of the image's bytes (row-major RGB), the checksum of render_reference.json.
inline std::uint64_t fnv1a64(const qformer::rgb_image& image) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const std::uint8_t b : image.pixels) h = (h ^ b) * 0x100000001b3ULL;
  return h;
}

}  // namespace shapes
