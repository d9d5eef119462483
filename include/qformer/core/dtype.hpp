#pragma once
/// \file
/// Element types: the runtime tag `dtype` (what a file stores) and `dtype_traits<T>` (what a layer computes with).
/// Storage type and compute type may differ: bf16 and fp16 are stored as such and computed in float.

#include <Eigen/Core>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace qformer {

using index_t = std::int64_t;

/// Runtime element type, as safetensors names them.
enum class dtype : std::uint8_t { f64, f32, f16, bf16, i64, i32, i16, i8, u8, boolean };

constexpr std::size_t dtype_size(dtype t) noexcept {
  switch (t) {
    case dtype::f64: case dtype::i64: return 8;
    case dtype::f32: case dtype::i32: return 4;
    case dtype::f16: case dtype::bf16: case dtype::i16: return 2;
    case dtype::i8: case dtype::u8: case dtype::boolean: return 1;
  }
  return 0;
}

/// The safetensors spelling ("F32", "BF16", ...).
constexpr std::string_view dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::f64: return "F64";
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::i64: return "I64";
    case dtype::i32: return "I32";
    case dtype::i16: return "I16";
    case dtype::i8: return "I8";
    case dtype::u8: return "U8";
    case dtype::boolean: return "BOOL";
  }
  return "?";
}

/// Parses a safetensors dtype string; nullopt for any other spelling (F8 variants included: not supported).
constexpr std::optional<dtype> parse_dtype(std::string_view s) noexcept {
  for (dtype t : {dtype::f64, dtype::f32, dtype::f16, dtype::bf16, dtype::i64, dtype::i32, dtype::i16, dtype::i8,
                  dtype::u8, dtype::boolean})
    if (dtype_name(t) == s) return t;
  return std::nullopt;
}

using bf16 = Eigen::bfloat16;
using fp16 = Eigen::half;

/// What a layer needs to know about its element type T. Specialised for float, fp16 and bf16.
template <class T>
struct dtype_traits;

template <>
struct dtype_traits<float> {
  using compute_type = float;
  static constexpr dtype tag = dtype::f32;
  static constexpr const char* name = "f32";
  static float to_compute(float x) noexcept { return x; }
  static float from_compute(float x) noexcept { return x; }
};

template <>
struct dtype_traits<fp16> {
  using compute_type = float;
  static constexpr dtype tag = dtype::f16;
  static constexpr const char* name = "f16";
  static float to_compute(fp16 x) noexcept { return static_cast<float>(x); }
  static fp16 from_compute(float x) noexcept { return fp16(x); }  // round to nearest even
};

template <>
struct dtype_traits<bf16> {
  using compute_type = float;
  static constexpr dtype tag = dtype::bf16;
  static constexpr const char* name = "bf16";
  static float to_compute(bf16 x) noexcept { return static_cast<float>(x); }
  static bf16 from_compute(float x) noexcept { return bf16(x); }  // round to nearest even
};

/// A floating element type that layers can be instantiated with.
template <class T>
concept element_type = requires(T x, float f) {
  typename dtype_traits<T>::compute_type;
  { dtype_traits<T>::to_compute(x) } -> std::same_as<float>;
  { dtype_traits<T>::from_compute(f) } -> std::same_as<T>;
};

template <class T>
inline float to_float(T x) noexcept { return dtype_traits<std::remove_const_t<T>>::to_compute(x); }
template <class T>
inline T from_float(float x) noexcept { return dtype_traits<T>::from_compute(x); }

}  // namespace qformer
