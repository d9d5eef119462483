#pragma once
/// \file
/// The Unicode the tokenizers need: strict UTF-8 decoding (errors name the byte offset), per-code-point
/// properties as Hugging Face `tokenizers` sees them (unicode_tables.hpp, generated), lowercase, NFD / NFKD /
/// NFC / NFKC, and the grapheme cluster breaks the Precompiled normalizer uses.

#include "../core/error.hpp"
#include "unicode_tables.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qformer {

/// Text that is not valid UTF-8 (a caller's input or a string inside a tokenizer file). `offset()` is the
/// byte offset of the first bad byte.
class encoding_error : public invalid_argument {
 public:
  encoding_error(const std::string& what, std::size_t offset) : invalid_argument(what), offset_(offset) {}
  std::size_t offset() const noexcept { return offset_; }

 private:
  std::size_t offset_;
};

namespace unicode {

/// Decodes UTF-8 strictly (as Rust's `str`: no overlong forms, surrogates or code points past U+10FFFF).
/// `byte_offsets`, when given, receives each code point's starting byte offset. `what` names the text in errors.
inline std::u32string decode_utf8(std::string_view s, const std::string& what = "text",
                                  std::vector<std::uint32_t>* byte_offsets = nullptr) {
  std::u32string out;
  out.reserve(s.size());
  if (byte_offsets) byte_offsets->reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  auto fail = [&](std::size_t at, const char* why) {
    char hex[8];
    static const char digits[] = "0123456789abcdef";
    hex[0] = '0', hex[1] = 'x', hex[2] = digits[p[at] >> 4], hex[3] = digits[p[at] & 15], hex[4] = 0;
    throw encoding_error(what + " is not valid UTF-8: byte " + hex + " at offset " + std::to_string(at) + " (" +
                             why + ")",
                         at);
  };
  while (i < n) {
    const unsigned b = p[i];
    if (b < 0x80) {
      if (byte_offsets) byte_offsets->push_back(static_cast<std::uint32_t>(i));
      out.push_back(b);
      ++i;
      continue;
    }
    int len = 0;  // set below, or fail() throws
    char32_t cp = 0, min = 0;
    if (b >= 0xC2 && b <= 0xDF) len = 2, cp = b & 0x1F, min = 0x80;
    else if (b >= 0xE0 && b <= 0xEF) len = 3, cp = b & 0x0F, min = 0x800;
    else if (b >= 0xF0 && b <= 0xF4) len = 4, cp = b & 0x07, min = 0x10000;
    else fail(i, b >= 0x80 && b <= 0xBF ? "unexpected continuation byte" : "invalid lead byte");
    for (int k = 1; k < len; ++k) {
      if (i + k >= n) fail(i, "truncated sequence at the end");
      const unsigned c = p[i + k];
      if ((c & 0xC0) != 0x80) fail(i + k, "expected a continuation byte");
      cp = (cp << 6) | (c & 0x3F);
    }
    if (cp < min) fail(i, "overlong encoding");
    if (cp > 0x10FFFF) fail(i, "code point above U+10FFFF");
    if (cp >= 0xD800 && cp <= 0xDFFF) fail(i, "encoded surrogate");
    if (byte_offsets) byte_offsets->push_back(static_cast<std::uint32_t>(i));
    out.push_back(cp);
    i += static_cast<std::size_t>(len);
  }
  return out;
}

/// Appends the UTF-8 form of `c` (a valid scalar value) to `out`.
inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}
inline std::string to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}
/// Byte length of `c` in UTF-8.
inline std::size_t utf8_length(char32_t c) { return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4; }

/// Grapheme cluster break classes the Precompiled normalizer's segmentation needs (UAX #29).
enum class grapheme_break : std::uint8_t { other, cr, lf, control, extend, zwj, spacing_mark, prepend };

namespace detail {
inline std::uint32_t record(char32_t c) {
  if (c > 0x10FFFF) return 0;
  const std::uint32_t block = tables::stage1[c >> tables::block_shift];
  return tables::records[tables::stage2[(block << tables::block_shift) | (c & ((1u << tables::block_shift) - 1))]];
}
template <std::size_t N>
inline std::ptrdiff_t find_sorted(const std::uint32_t (&keys)[N], char32_t c) {
  const auto* it = std::lower_bound(keys, keys + N, static_cast<std::uint32_t>(c));
  return (it != keys + N && *it == c) ? it - keys : -1;
}
}  // namespace detail

/// onig's \p{L} (Unicode 16), as the GPT-2 pre-tokenizer regex sees it.
inline bool is_letter(char32_t c) { return detail::record(c) & 1u; }
/// onig's \p{N}.
inline bool is_number(char32_t c) { return detail::record(c) & 2u; }
/// White_Space: onig's \s and Rust's char::is_whitespace (they agree).
inline bool is_whitespace(char32_t c) { return detail::record(c) & 4u; }
/// onig's \w.
inline bool is_word(char32_t c) { return detail::record(c) & 8u; }
/// onig's \d (decimal digits).
inline bool is_digit(char32_t c) { return detail::record(c) & 0x800u; }
/// What BertNormalizer's clean_text deletes (control, format, private use; NUL and U+FFFD).
inline bool is_bert_control(char32_t c) { return detail::record(c) & 16u; }
/// What BertPreTokenizer isolates: ASCII punctuation and the (older) Unicode P* categories.
inline bool is_bert_punctuation(char32_t c) { return detail::record(c) & 32u; }
/// Mn (nonspacing marks), as StripAccents deletes them.
inline bool is_mark_nonspacing(char32_t c) { return detail::record(c) & 64u; }
inline bool is_extended_pictographic(char32_t c) { return detail::record(c) & 128u; }
/// Combining marks (M*) as the StripAccents normalizer deletes them (an older table than Mn's).
inline bool is_combining_mark(char32_t c) { return detail::record(c) & 0x1000u; }
/// Rust regex's \w (Alphabetic, marks, Nd, Pc, Join_Control): the Whitespace pre-tokenizer and single_word.
inline bool is_rust_word(char32_t c) { return detail::record(c) & 0x2000u; }
/// Rust's char::is_numeric (the Digits pre-tokenizer); its Unicode is newer than onig's \p{N}.
inline bool is_rust_numeric(char32_t c) { return detail::record(c) & 0x4000u; }
inline grapheme_break grapheme_break_class(char32_t c) {
  return static_cast<grapheme_break>((detail::record(c) >> 8) & 7u);
}
/// Canonical combining class.
inline unsigned combining_class(char32_t c) { return (detail::record(c) >> 16) & 0xFFu; }

/// Appends the lowercase of `c` (Rust's char::to_lowercase: one or, for U+0130, two code points).
inline void append_lowercase(std::u32string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return;
  }
  if (const auto i = detail::find_sorted(tables::lower_from, c); i >= 0) {
    out.push_back(tables::lower_to[i]);
    return;
  }
  if (const auto i = detail::find_sorted(tables::lower_multi_from, c); i >= 0) {
    out += tables::lower_multi_to[i];
    return;
  }
  out.push_back(c);
}
/// Single-code-point lowercase (the first code point of append_lowercase); for case-insensitive matching.
inline char32_t simple_lowercase(char32_t c) {
  std::u32string s;
  append_lowercase(s, c);
  return s[0];
}

inline constexpr char32_t hangul_s_base = 0xAC00, hangul_l_base = 0x1100, hangul_v_base = 0x1161,
                          hangul_t_base = 0x11A7;
inline constexpr unsigned hangul_l_count = 19, hangul_v_count = 21, hangul_t_count = 28,
                          hangul_n_count = hangul_v_count * hangul_t_count,
                          hangul_s_count = hangul_l_count * hangul_n_count;

/// Appends the full canonical (or, with `compat`, compatibility) decomposition of `c`; `c` itself if none.
inline void append_decomposition(std::u32string& out, char32_t c, bool compat) {
  if (c >= hangul_s_base && c < hangul_s_base + hangul_s_count) {
    const unsigned s = c - hangul_s_base;
    out.push_back(hangul_l_base + s / hangul_n_count);
    out.push_back(hangul_v_base + (s % hangul_n_count) / hangul_t_count);
    if (s % hangul_t_count) out.push_back(hangul_t_base + s % hangul_t_count);
    return;
  }
  if (c < 0xA0) {
    out.push_back(c);
    return;
  }
  const auto i = detail::find_sorted(tables::decomp_cp, c);
  if (i < 0) {
    out.push_back(c);
    return;
  }
  const unsigned off = compat ? tables::decomp_compat_off[i] : tables::decomp_canon_off[i];
  const unsigned len = compat ? tables::decomp_compat_len[i] : tables::decomp_canon_len[i];
  out.append(tables::decomp_pool + off, tables::decomp_pool + off + len);
}

/// The primary composite of (a, b), or 0 when there is none.
inline char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= hangul_l_base && a < hangul_l_base + hangul_l_count && b >= hangul_v_base &&
      b < hangul_v_base + hangul_v_count)
    return hangul_s_base + ((a - hangul_l_base) * hangul_v_count + (b - hangul_v_base)) * hangul_t_count;
  if (a >= hangul_s_base && a < hangul_s_base + hangul_s_count && (a - hangul_s_base) % hangul_t_count == 0 &&
      b > hangul_t_base && b < hangul_t_base + hangul_t_count)
    return a + (b - hangul_t_base);
  const std::uint64_t key = (static_cast<std::uint64_t>(a) << 21) | b;
  const auto* end = tables::comp_key + std::size(tables::comp_key);
  const auto* it = std::lower_bound(tables::comp_key, end, key);
  return (it != end && *it == key) ? tables::comp_value[it - tables::comp_key] : 0;
}

enum class normal_form { nfd, nfkd, nfc, nfkc };

/// Normalizes `text` to `form`. `origin` (same length as `text`, may be null) is carried along: each output
/// code point gets the origin of the input code point it came from (a composite, that of its starter).
inline void normalize(std::u32string& text, std::vector<std::uint32_t>* origin, normal_form form) {
  const bool compat = form == normal_form::nfkd || form == normal_form::nfkc;
  const bool compose = form == normal_form::nfc || form == normal_form::nfkc;
  std::u32string out;
  std::vector<std::uint32_t> out_origin;
  out.reserve(text.size());
  std::u32string buf;
  for (std::size_t i = 0; i < text.size(); ++i) {
    buf.clear();
    append_decomposition(buf, text[i], compat);
    for (char32_t d : buf) {
      // Canonical ordering: bubble a mark back past marks of a higher class (stable).
      std::size_t pos = out.size();
      out.push_back(d);
      if (origin) out_origin.push_back((*origin)[i]);
      const unsigned k = combining_class(d);
      if (k == 0) continue;
      while (pos > 0) {
        const unsigned kp = combining_class(out[pos - 1]);
        if (kp <= k || kp == 0) break;
        std::swap(out[pos - 1], out[pos]);
        if (origin) std::swap(out_origin[pos - 1], out_origin[pos]);
        --pos;
      }
    }
  }
  if (compose && !out.empty()) {
    // Canonical composition (UAX #15): a mark joins the last starter unless blocked.
    std::size_t starter = 0, w = 1;
    bool have_starter = combining_class(out[0]) == 0;
    int last_class = have_starter ? 0 : 256;
    for (std::size_t r = 1; r < out.size(); ++r) {
      const char32_t c = out[r];
      const int k = static_cast<int>(combining_class(c));
      const bool blocked = have_starter && w - 1 != starter && (last_class == 0 || last_class >= k);
      if (have_starter && !blocked) {
        if (const char32_t comp = compose_pair(out[starter], c)) {
          out[starter] = comp;
          continue;
        }
      }
      if (k == 0) {
        starter = w;
        have_starter = true;
        last_class = 0;
      } else {
        last_class = k;
      }
      out[w] = c;
      if (origin) out_origin[w] = out_origin[r];
      ++w;
    }
    out.resize(w);
    if (origin) out_origin.resize(w);
  }
  text = std::move(out);
  if (origin) *origin = std::move(out_origin);
}

/// Splits `text` into extended grapheme clusters by the rules that decide clusters of under six UTF-8 bytes
/// (GB3-GB5 CR LF / controls, GB9 / GB9a / GB9b extend, ZWJ, spacing marks, prepend, GB11 emoji ZWJ
/// sequences); Hangul, regional-indicator and Indic-conjunct rules only ever join clusters of six bytes or
/// more, which the Precompiled normalizer treats as separate code points anyway. Returns the cluster ends.
inline std::vector<std::size_t> grapheme_ends(std::u32string_view text) {
  std::vector<std::size_t> ends;
  using gb = grapheme_break;
  bool pict_zwj_chain = false;  // inside ExtPict Extend* (ZWJ)? -- for GB11
  bool prev_pict_extend = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (i == 0) {
      prev_pict_extend = is_extended_pictographic(text[0]);
      continue;
    }
    const gb a = grapheme_break_class(text[i - 1]), b = grapheme_break_class(text[i]);
    bool join;
    if (a == gb::cr && b == gb::lf) join = true;
    else if (a == gb::control || a == gb::cr || a == gb::lf) join = false;
    else if (b == gb::control || b == gb::cr || b == gb::lf) join = false;
    else if (b == gb::extend || b == gb::zwj || b == gb::spacing_mark) join = true;
    else if (a == gb::prepend) join = true;
    else if (a == gb::zwj && pict_zwj_chain && is_extended_pictographic(text[i])) join = true;
    else join = false;
    if (!join) ends.push_back(i);
    // GB11 state: an ExtPict followed by Extend* then ZWJ.
    pict_zwj_chain = prev_pict_extend && b == gb::zwj;
    if (is_extended_pictographic(text[i])) prev_pict_extend = true;
    else if (b != gb::extend) prev_pict_extend = false;
  }
  if (!text.empty()) ends.push_back(text.size());
  return ends;
}

}  // namespace unicode
}  // namespace qformer
