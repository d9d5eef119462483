#pragma once
/// \file
/// safetensors reading (memory-mapped, every offset, size, dtype and shape checked) and writing.
///
/// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [b, e]},
/// "__metadata__": {str: str}}, then the data section; offsets are relative to it. The tensors must tile the data
/// section exactly (no overlap, no gap), as the reference implementation requires. Data is not aligned.

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "mapped_file.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace qformer {

/// One tensor of a safetensors file: where its bytes are and what they are.
struct tensor_entry {
  std::string name;
  dtype type = dtype::f32;
  qformer::shape dims;
  std::size_t begin = 0, end = 0;  // byte offsets in the data section
};

namespace detail {

/// Converts `count` elements of type `from` at (possibly unaligned) `src` into `to` at `dst`.
/// Float types convert among themselves, integer types among themselves; anything else is refused.
inline void convert_elements(const std::byte* src, dtype from, void* dst, dtype to, std::size_t count,
                             const std::string& file, const std::string& name) {
  auto is_float = [](dtype t) { return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16 || t == dtype::f64; };
  auto is_int = [](dtype t) { return t == dtype::i64 || t == dtype::i32 || t == dtype::i16 || t == dtype::i8 || t == dtype::u8; };
  if (count == 0) return;  // an empty tensor: dst may be null, and memcpy must not see it
  if (from == to) {
    std::memcpy(dst, src, count * dtype_size(from));
    return;
  }
  auto load_float = [&](std::size_t i) -> double {
    switch (from) {
      case dtype::f32: { float v; std::memcpy(&v, src + 4 * i, 4); return v; }
      case dtype::f64: { double v; std::memcpy(&v, src + 8 * i, 8); return v; }
      case dtype::f16: { std::uint16_t b; std::memcpy(&b, src + 2 * i, 2); return static_cast<float>(Eigen::numext::bit_cast<fp16>(b)); }
      case dtype::bf16: { std::uint16_t b; std::memcpy(&b, src + 2 * i, 2); return static_cast<float>(Eigen::numext::bit_cast<bf16>(b)); }
      default: return 0;
    }
  };
  auto load_int = [&](std::size_t i) -> std::int64_t {
    switch (from) {
      case dtype::i64: { std::int64_t v; std::memcpy(&v, src + 8 * i, 8); return v; }
      case dtype::i32: { std::int32_t v; std::memcpy(&v, src + 4 * i, 4); return v; }
      case dtype::i16: { std::int16_t v; std::memcpy(&v, src + 2 * i, 2); return v; }
      case dtype::i8: return static_cast<std::int8_t>(src[i]);
      case dtype::u8: return static_cast<std::uint8_t>(src[i]);
      default: return 0;
    }
  };
  if (is_float(from) && (to == dtype::f32 || to == dtype::f16 || to == dtype::bf16)) {
    for (std::size_t i = 0; i < count; ++i) {
      const float v = static_cast<float>(load_float(i));
      if (to == dtype::f32) static_cast<float*>(dst)[i] = v;
      else if (to == dtype::f16) static_cast<fp16*>(dst)[i] = fp16(v);
      else static_cast<bf16*>(dst)[i] = bf16(v);
    }
    return;
  }
  if (is_int(from) && to == dtype::i64) {
    for (std::size_t i = 0; i < count; ++i) static_cast<std::int64_t*>(dst)[i] = load_int(i);
    return;
  }
  throw load_error(file, "tensor '" + name + "': cannot convert " + std::string(dtype_name(from)) + " to " +
                             std::string(dtype_name(to)));
}

}  // namespace detail

/// A memory-mapped, fully validated safetensors file.
class safetensors_file {
 public:
  /// Largest header accepted (the reference implementation's limit).
  static constexpr std::uint64_t max_header_bytes = 100u << 20;

  explicit safetensors_file(const std::string& path) : file_(path) { parse(); }
  /// Parses safetensors bytes already in memory (owned by the caller, who keeps them alive); `name` is used in
  /// messages in place of a path.
  safetensors_file(std::span<const std::byte> bytes, const std::string& name)
      : file_(mapped_file::borrow(name, bytes.data(), bytes.size())) { parse(); }

  const std::string& path() const noexcept { return file_.path(); }
  const std::vector<tensor_entry>& entries() const noexcept { return entries_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  const tensor_entry* find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &entries_[it->second];
  }
  const tensor_entry& at(const std::string& name) const {
    if (const tensor_entry* e = find(name)) return *e;
    throw load_error(path(), "tensor '" + name + "' not found");
  }
  /// The raw (unaligned) bytes of a tensor.
  const std::byte* bytes(const tensor_entry& e) const noexcept { return data_ + e.begin; }

  /// Copies tensor e into dst converted to `to` (dst holds e.dims.numel() elements of `to`).
  void read(const tensor_entry& e, dtype to, void* dst) const {
    detail::convert_elements(bytes(e), e.type, dst, to, static_cast<std::size_t>(e.dims.numel()), path(), e.name);
    file_.release(static_cast<std::size_t>(data_ - file_.data()) + e.begin, e.end - e.begin);
  }
  /// Reads a whole tensor into a new host tensor of T (float, fp16, bf16 or int64_t).
  template <class T>
  tensor<T> load(const std::string& name) const {
    const tensor_entry& e = at(name);
    tensor<T> t(e.dims);
    read(e, tag_of<T>(), t.data());
    return t;
  }

  template <class T>
  static constexpr dtype tag_of() {
    if constexpr (std::is_same_v<T, std::int64_t>) return dtype::i64;
    else return dtype_traits<T>::tag;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw load_error(path(), what); }

  void parse() {
    const std::size_t size = file_.size();
    if (size < 8) fail("file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(file_.data()[i]);
    if (n > size - 8)
      fail("header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) + " bytes)");
    if (n > max_header_bytes) fail("header length " + std::to_string(n) + " exceeds the 100 MiB limit");
    if (n < 2) fail("header of " + std::to_string(n) + " bytes cannot hold a JSON object");
    const char* text = reinterpret_cast<const char*>(file_.data() + 8);
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(text, text + n);
    } catch (const nlohmann::json::exception& ex) {
      fail(std::string("header is not valid JSON: ") + ex.what());
    }
    if (!header.is_object()) fail("header is not a JSON object");
    data_ = file_.data() + 8 + n;
    const std::size_t data_size = size - 8 - static_cast<std::size_t>(n);

    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (!it->is_object()) fail("__metadata__ is not an object");
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (!m->is_string()) fail("__metadata__ value '" + m.key() + "' is not a string");
          metadata_[m.key()] = m->get<std::string>();
        }
        continue;
      }
      entries_.push_back(parse_entry(it.key(), *it, data_size));
    }
    check_tiling(data_size);
    for (std::size_t i = 0; i < entries_.size(); ++i) by_name_.emplace(entries_[i].name, i);
  }

  tensor_entry parse_entry(const std::string& name, const nlohmann::json& j, std::size_t data_size) const {
    const std::string where = "tensor '" + name + "': ";
    if (!j.is_object()) fail(where + "entry is not an object");
    tensor_entry e;
    e.name = name;
    auto dt = j.find("dtype");
    if (dt == j.end() || !dt->is_string()) fail(where + "missing or non-string 'dtype'");
    const auto parsed = parse_dtype(dt->get<std::string>());
    if (!parsed) fail(where + "unknown dtype '" + dt->get<std::string>() + "'");
    e.type = *parsed;
    auto sh = j.find("shape");
    if (sh == j.end() || !sh->is_array()) fail(where + "missing or non-array 'shape'");
    if (sh->size() > static_cast<std::size_t>(max_rank))
      fail(where + "rank " + std::to_string(sh->size()) + " is above the supported 4");
    // Bytes bounded by the data section, so the element count cannot overflow once each step is checked.
    std::uint64_t count = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0) fail(where + "shape has a non-integer or negative entry");
      const std::uint64_t v = d.get<std::uint64_t>();
      if (v != 0 && count > (std::uint64_t{1} << 62) / v) fail(where + "shape " + sh->dump() + " overflows");
      count *= v;
      e.dims.push_back(static_cast<index_t>(v));
    }
    auto off = j.find("data_offsets");
    if (off == j.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail(where + "'data_offsets' must be two non-negative integers");
    const std::uint64_t b = (*off)[0].get<std::uint64_t>(), en = (*off)[1].get<std::uint64_t>();
    if (b > en) fail(where + "data_offsets [" + std::to_string(b) + ", " + std::to_string(en) + "] are reversed");
    if (en > data_size)
      fail(where + "data_offsets end " + std::to_string(en) + " is past the data section (" + std::to_string(data_size) + " bytes)");
    const std::uint64_t elem = dtype_size(e.type);
    if (count > (std::uint64_t{1} << 62) / elem || en - b != count * elem)
      fail(where + "shape " + sh->dump() + " of " + std::string(dtype_name(e.type)) + " needs " +
           std::to_string(count * elem) + " bytes but data_offsets span " + std::to_string(en - b));
    e.begin = static_cast<std::size_t>(b);
    e.end = static_cast<std::size_t>(en);
    return e;
  }

  /// Tensors must cover [0, data_size) exactly once, in some order.
  void check_tiling(std::size_t data_size) const {
    std::vector<const tensor_entry*> sorted;
    for (const auto& e : entries_) sorted.push_back(&e);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
    std::size_t pos = 0;
    for (const tensor_entry* e : sorted) {
      if (e->begin < pos) fail("tensor '" + e->name + "' overlaps the tensor before it (offset " + std::to_string(e->begin) + ")");
      if (e->begin > pos) fail("gap in the data section before tensor '" + e->name + "' (offset " + std::to_string(e->begin) + ")");
      pos = e->end;
    }
    if (pos != data_size)
      fail("data section is " + std::to_string(data_size) + " bytes but the tensors cover " + std::to_string(pos));
  }

  mapped_file file_;
  const std::byte* data_ = nullptr;
  std::vector<tensor_entry> entries_;
  std::unordered_map<std::string, std::size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

/// A tensor to write: name, element type, shape and contiguous host bytes.
struct tensor_record {
  std::string name;
  dtype type;
  qformer::shape dims;
  const void* data;
};

/// Writes a safetensors file (tensors laid out in the given order, header padded to 8 bytes).
inline void write_safetensors(const std::string& path, const std::vector<tensor_record>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::size_t offset = 0;
  for (const auto& t : tensors) {
    std::vector<index_t> dims;
    for (int i = 0; i < t.dims.rank(); ++i) dims.push_back(t.dims[i]);
    const std::size_t bytes = static_cast<std::size_t>(t.dims.numel()) * dtype_size(t.type);
    header[t.name] = {{"dtype", dtype_name(t.type)}, {"shape", dims}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw load_error(path, "cannot open for writing");
  const std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& t : tensors)
    out.write(static_cast<const char*>(t.data),
              static_cast<std::streamsize>(static_cast<std::size_t>(t.dims.numel()) * dtype_size(t.type)));
  if (!out) throw load_error(path, "write failed");
}

}  // namespace qformer
