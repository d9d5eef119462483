#pragma once
/// \file
/// Tokenizers read from a Hugging Face `tokenizer.json`, giving the ids the `tokenizers` library gives.
///
/// The pipeline is the library's: added tokens are cut out of the raw text first (leftmost-longest, honouring
/// single_word / lstrip / rstrip), the normalizer runs on each remaining piece, normalized added tokens are cut
/// out next, then the pre-tokenizer splits, the model (BPE, WordPiece, Unigram, WordLevel) turns each split into
/// ids, and the post-processor adds the special tokens (TemplateProcessing, BertProcessing, RobertaProcessing,
/// ByteLevel, Sequence), then truncation and padding as the file asks. `decode` maps ids back through the
/// file's decoder. Components: normalizers Sequence, BertNormalizer, Lowercase, Strip, StripAccents, NFC / NFD /
/// NFKC / NFKD, Nmt, Replace, Prepend, Precompiled (SentencePiece charsmaps, as T5 uses), ByteLevel;
/// pre-tokenizers ByteLevel, Whitespace, WhitespaceSplit, BertPreTokenizer, Metaspace, Punctuation, Digits,
/// Split, CharDelimiterSplit, Sequence; decoders ByteLevel, WordPiece, Metaspace, BPEDecoder, ByteFallback,
/// Fuse, Strip, Replace, CTC, Sequence. Regex patterns (Replace, Split) run on a small leftmost-first regex
/// engine (classes, \p{L} \p{N} \s \w \d, groups, alternation, greedy / lazy quantifiers, anchors,
/// lookahead); anything else in a file is refused with a config_error naming the file and the field.
///
/// Text is UTF-8; invalid input throws qformer::encoding_error (an invalid_argument) with the byte offset.

#include "../core/error.hpp"
#include "unicode.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace qformer {

namespace detail::tok {

using json = nlohmann::json;

// ------------------------------------------------------------------------------------------------------------
// JSON helpers: every error names the file and the dotted field path.

struct json_reader {
  std::string file;

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw config_error(file, field.empty() ? "(root)" : field, what);
  }
  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  static std::string index(const std::string& path, std::size_t i) { return path + "[" + std::to_string(i) + "]"; }

  const json& object(const json& v, const std::string& path) const {
    if (!v.is_object()) fail(path, std::string("expected an object, found ") + v.type_name());
    return v;
  }
  /// The member `key` of `obj`, or null when absent.
  static const json* find(const json& obj, const std::string& key) {
    auto it = obj.find(key);
    return (it == obj.end() || it->is_null()) ? nullptr : &*it;
  }
  const json& required(const json& obj, const std::string& key, const std::string& path) const {
    const json* v = find(obj, key);
    if (!v) fail(join(path, key), "is missing");
    return *v;
  }
  std::string string(const json& obj, const std::string& key, const std::string& path,
                     std::optional<std::string> fallback = std::nullopt) const {
    const json* v = find(obj, key);
    if (!v) {
      if (fallback) return *fallback;
      fail(join(path, key), "is missing");
    }
    if (!v->is_string()) fail(join(path, key), std::string("expected a string, found ") + v->type_name());
    return v->get<std::string>();
  }
  bool boolean(const json& obj, const std::string& key, const std::string& path, bool fallback) const {
    const json* v = find(obj, key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(join(path, key), std::string("expected true or false, found ") + v->type_name());
    return v->get<bool>();
  }
  std::int64_t integer(const json& v, const std::string& field, std::int64_t lo, std::int64_t hi) const {
    if (!v.is_number_integer()) fail(field, std::string("expected an integer, found ") + v.type_name());
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
      fail(field, "value " + v.dump() + " is above " + std::to_string(hi));
    const std::int64_t x = v.get<std::int64_t>();
    if (x < lo || x > hi)
      fail(field, "value " + std::to_string(x) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }
  std::int64_t integer(const json& obj, const std::string& key, const std::string& path, std::int64_t fallback,
                       std::int64_t lo, std::int64_t hi) const {
    const json* v = find(obj, key);
    return v ? integer(*v, join(path, key), lo, hi) : fallback;
  }
  const json& array(const json& obj, const std::string& key, const std::string& path) const {
    const json& v = required(obj, key, path);
    if (!v.is_array()) fail(join(path, key), std::string("expected an array, found ") + v.type_name());
    return v;
  }
  /// A string that must also be valid UTF-8 (nlohmann accepts escapes of lone surrogates).
  std::u32string text(const json& v, const std::string& field) const {
    if (!v.is_string()) fail(field, std::string("expected a string, found ") + v.type_name());
    try {
      return unicode::decode_utf8(v.get_ref<const std::string&>(), "the string");
    } catch (const encoding_error& e) {
      fail(field, e.what());
    }
  }
};

inline constexpr std::int64_t max_id = std::numeric_limits<std::int32_t>::max();
inline constexpr int max_nesting = 32;  // Sequence inside Sequence ... (recursion bound)

// ------------------------------------------------------------------------------------------------------------
// A piece of text on its way through the pipeline: code points and, for each, the byte offset in the input of
// the character it came from; `start` is the input offset the piece begins at (tokenizers' offsets_original).

struct piece {
  std::u32string text;
  std::vector<std::uint32_t> origin;
  std::uint32_t start = 0;

  piece sub(std::size_t b, std::size_t e) const {
    piece p;
    p.text = text.substr(b, e - b);
    p.origin.assign(origin.begin() + static_cast<std::ptrdiff_t>(b), origin.begin() + static_cast<std::ptrdiff_t>(e));
    p.start = b < origin.size() ? origin[b] : start;  // tokenizers: a slice starts at its first char's origin
    return p;
  }
};

/// Builds a piece char by char, keeping origins.
struct piece_builder {
  piece out;
  explicit piece_builder(const piece& from) {
    out.start = from.start;
    out.text.reserve(from.text.size());
    out.origin.reserve(from.text.size());
  }
  void push(char32_t c, std::uint32_t origin) {
    out.text.push_back(c);
    out.origin.push_back(origin);
  }
  void push(std::u32string_view s, std::uint32_t origin) {
    for (char32_t c : s) push(c, origin);
  }
};

// ------------------------------------------------------------------------------------------------------------
// A small regex engine (Pike VM, leftmost-first like onig) for the patterns tokenizer files carry.

struct char_class {
  struct item {
    char32_t lo = 0, hi = 0;
    std::uint32_t prop = 0;  // unicode flag bits (see unicode.hpp); 0 = the range [lo, hi]
    bool negated_prop = false;
  };
  std::vector<item> items;
  bool negate = false;
  bool icase = false;

  static bool has_prop(char32_t c, std::uint32_t prop) {
    switch (prop) {
      case 1: return unicode::is_letter(c);
      case 2: return unicode::is_number(c);
      case 4: return unicode::is_whitespace(c);
      case 8: return unicode::is_word(c);
      case 16: return unicode::is_digit(c);
      case 32: return unicode::is_bert_punctuation(c);
      default: return false;
    }
  }
  bool raw(char32_t c) const {
    for (const item& it : items) {
      if (it.prop ? has_prop(c, it.prop) != it.negated_prop : (c >= it.lo && c <= it.hi)) return true;
    }
    return false;
  }
  bool matches(char32_t c) const {
    bool m = raw(c);
    if (!m && icase) {
      const char32_t l = unicode::simple_lowercase(c);
      m = (l != c && raw(l)) || (c >= 'a' && c <= 'z' && raw(c - 32));
    }
    return m != negate;
  }
};

class regex {
 public:
  /// Compiles `pattern`; throws std::string (the reason) when it uses what the engine does not support.
  explicit regex(std::u32string_view pattern) : pat_(pattern) {
    node root = parse_alt(0, false);
    if (pos_ != pat_.size()) throw std::string("unbalanced ')'");
    main_ = compile_program(root);
  }

  /// Non-empty, non-overlapping matches, leftmost-first, as (begin, end) code point offsets.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::u32string_view text) const {
    std::vector<std::pair<std::size_t, std::size_t>> out;
    std::size_t from = 0;
    while (from <= text.size()) {
      const auto m = search(main_, text, from, false);
      if (!m) break;
      if (m->second == m->first) {  // empty match: skip one character
        from = m->first + 1;
        continue;
      }
      out.push_back(*m);
      from = m->second;
    }
    return out;
  }

 private:
  enum class op : std::uint8_t { chr, split, jmp, match, bol, eol, begin_text, end_text, word_boundary,
                                 not_word_boundary, look };
  struct inst {
    op code;
    std::uint32_t x = 0, y = 0;  // chr: class; split: targets; jmp: target; look: program, y = negate
  };
  struct node {
    enum kind_t { empty, cls, cat, alt, rep, assert_, look } kind = empty;
    std::uint32_t class_index = 0;
    op assertion = op::bol;
    std::vector<node> kids;
    int min = 0, max = 0;  // max -1 = unbounded
    bool greedy = true, negate = false;
  };
  using program = std::vector<inst>;

  static constexpr std::size_t max_program = 50000;
  static constexpr int max_depth = 64;

  std::u32string pat_;
  std::size_t pos_ = 0;
  std::vector<char_class> classes_;
  std::vector<program> subprograms_;
  program main_;

  // ---- parsing
  bool at_end() const { return pos_ >= pat_.size(); }
  char32_t peek() const { return pat_[pos_]; }

  node parse_alt(int depth, bool icase) {
    if (depth > max_depth) throw std::string("groups nested too deeply");
    node first = parse_cat(depth, icase);
    if (at_end() || peek() != U'|') return first;
    node n;
    n.kind = node::alt;
    n.kids.push_back(std::move(first));
    while (!at_end() && peek() == U'|') {
      ++pos_;
      n.kids.push_back(parse_cat(depth, icase));
    }
    return n;
  }

  node parse_cat(int depth, bool icase) {  // (?i) inside changes `icase` for the rest of the group
    node n;
    n.kind = node::cat;
    while (!at_end() && peek() != U'|' && peek() != U')') {
      node atom;
      if (!parse_atom(depth, icase, atom)) continue;  // a flag group like (?i)
      parse_quantifiers(atom);
      n.kids.push_back(std::move(atom));
    }
    return n;
  }

  void parse_quantifiers(node& atom) {
    for (int stacked = 0; !at_end(); ++stacked) {
      if (stacked > 4) throw std::string("too many quantifiers on one atom");  // bounds the nesting
      int lo, hi;
      const char32_t c = peek();
      if (c == U'*') lo = 0, hi = -1, ++pos_;
      else if (c == U'+') lo = 1, hi = -1, ++pos_;
      else if (c == U'?') lo = 0, hi = 1, ++pos_;
      else if (c == U'{') {
        const std::size_t save = pos_;
        if (!parse_braces(lo, hi)) {
          pos_ = save;
          return;  // a literal '{' follows; the caller's loop reads it
        }
      } else {
        return;
      }
      bool greedy = true;
      if (!at_end() && peek() == U'?') greedy = false, ++pos_;
      else if (!at_end() && peek() == U'+') ++pos_;  // possessive: treated as greedy (see the file comment)
      if (atom.kind == node::assert_ || atom.kind == node::look) throw std::string("quantified assertion");
      node r;
      r.kind = node::rep;
      r.min = lo, r.max = hi, r.greedy = greedy;
      r.kids.push_back(std::move(atom));
      atom = std::move(r);
    }
  }

  bool parse_braces(int& lo, int& hi) {
    ++pos_;  // '{'
    auto number = [&](int& out) {
      const std::size_t b = pos_;
      long v = 0;
      while (!at_end() && peek() >= U'0' && peek() <= U'9') {
        v = v * 10 + (peek() - U'0');
        if (v > 1000) throw std::string("repetition count above 1000");
        ++pos_;
      }
      out = static_cast<int>(v);
      return pos_ > b;
    };
    if (!number(lo)) return false;
    hi = lo;
    if (!at_end() && peek() == U',') {
      ++pos_;
      if (!number(hi)) hi = -1;
    }
    if (at_end() || peek() != U'}') return false;
    ++pos_;
    if (hi >= 0 && hi < lo) throw std::string("repetition {n,m} with m < n");
    return true;
  }

  std::uint32_t add_class(char_class c) {
    classes_.push_back(std::move(c));
    return static_cast<std::uint32_t>(classes_.size() - 1);
  }
  node class_node(char_class c, bool icase) {
    c.icase = icase;
    node n;
    n.kind = node::cls;
    n.class_index = add_class(std::move(c));
    return n;
  }

  // Reads the escape after '\\' into a class item (a single character or a property).
  void parse_escape_into(char_class& cc, bool in_class) {
    if (at_end()) throw std::string("trailing backslash");
    const char32_t c = pat_[pos_++];
    auto prop = [&](std::uint32_t bit, bool neg) { cc.items.push_back({0, 0, bit, neg}); };
    auto single = [&](char32_t x) { cc.items.push_back({x, x, 0, false}); };
    switch (c) {
      case U's': return prop(4, false);
      case U'S': return prop(4, true);
      case U'd': return prop(16, false);
      case U'D': return prop(16, true);
      case U'w': return prop(8, false);
      case U'W': return prop(8, true);
      case U'n': return single(U'\n');
      case U'r': return single(U'\r');
      case U't': return single(U'\t');
      case U'f': return single(U'\f');
      case U'v': return single(U'\v');
      case U'a': return single(7);
      case U'e': return single(27);
      case U'0': return single(0);
      case U'x':
      case U'u': {
        char32_t v = 0;
        int digits = 0;
        const bool braces = !at_end() && peek() == U'{';
        if (braces) ++pos_;
        const int want = braces ? 8 : (c == U'x' ? 2 : 4);
        while (!at_end() && digits < want) {
          const char32_t h = peek();
          int d;
          if (h >= U'0' && h <= U'9') d = static_cast<int>(h - U'0');
          else if (h >= U'a' && h <= U'f') d = static_cast<int>(h - U'a' + 10);
          else if (h >= U'A' && h <= U'F') d = static_cast<int>(h - U'A' + 10);
          else break;
          v = v * 16 + static_cast<char32_t>(d);
          ++digits, ++pos_;
        }
        if (braces) {
          if (at_end() || peek() != U'}') throw std::string("bad \\x{...} escape");
          ++pos_;
        }
        if (digits == 0 || v > 0x10FFFF) throw std::string("bad hexadecimal escape");
        return single(v);
      }
      case U'p':
      case U'P': {
        std::u32string name;
        if (!at_end() && peek() == U'{') {
          ++pos_;
          while (!at_end() && peek() != U'}') name.push_back(pat_[pos_++]);
          if (at_end()) throw std::string("unterminated \\p{...}");
          ++pos_;
        } else if (!at_end()) {
          name.push_back(pat_[pos_++]);
        }
        bool neg = c == U'P';
        if (!name.empty() && name[0] == U'^') neg = !neg, name.erase(0, 1);
        const std::string n = unicode::to_utf8(name);
        if (n == "L" || n == "Letter") return prop(1, neg);
        if (n == "N" || n == "Number") return prop(2, neg);
        if (n == "Nd") return prop(16, neg);
        if (n == "P" || n == "Punctuation") return prop(32, neg);
        throw std::string("unsupported property \\p{" + n + "}");
      }
      default:
        if ((c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z') || (c >= U'1' && c <= U'9'))
          throw std::string("unsupported escape \\") + static_cast<char>(c) + (in_class ? " in a class" : "");
        return single(c);
    }
  }

  char_class parse_class() {
    ++pos_;  // '['
    char_class cc;
    if (!at_end() && peek() == U'^') cc.negate = true, ++pos_;
    bool first = true;
    while (true) {
      if (at_end()) throw std::string("unterminated [...]");
      char32_t c = peek();
      if (c == U']' && !first) {
        ++pos_;
        break;
      }
      first = false;
      if (c == U'[') throw std::string("nested classes or POSIX [:...:] are not supported");
      char32_t lo;
      if (c == U'\\') {
        ++pos_;
        char_class one;
        parse_escape_into(one, true);
        if (one.items.size() != 1 || one.items[0].prop) {
          cc.items.insert(cc.items.end(), one.items.begin(), one.items.end());
          continue;
        }
        lo = one.items[0].lo;
      } else {
        lo = c;
        ++pos_;
      }
      if (pos_ + 1 < pat_.size() && peek() == U'-' && pat_[pos_ + 1] != U']') {
        ++pos_;
        char32_t hi;
        if (peek() == U'\\') {
          ++pos_;
          char_class one;
          parse_escape_into(one, true);
          if (one.items.size() != 1 || one.items[0].prop) throw std::string("bad range in a class");
          hi = one.items[0].lo;
        } else {
          hi = pat_[pos_++];
        }
        if (hi < lo) throw std::string("reversed range in a class");
        cc.items.push_back({lo, hi, 0, false});
      } else {
        cc.items.push_back({lo, lo, 0, false});
      }
    }
    return cc;
  }

  // Parses one atom into `out`; returns false when it consumed a flag-only group such as (?i).
  bool parse_atom(int depth, bool& icase, node& out) {
    const char32_t c = peek();
    if (c == U'(') {
      ++pos_;
      bool group_icase = icase;
      node::kind_t kind = node::cat;
      bool negate = false;
      if (!at_end() && peek() == U'?') {
        ++pos_;
        if (at_end()) throw std::string("unterminated group");
        const char32_t k = peek();
        if (k == U':') {
          ++pos_;
        } else if (k == U'=' || k == U'!') {
          ++pos_;
          kind = node::look;
          negate = k == U'!';
        } else if (k == U'<') {
          throw std::string("lookbehind and named groups are not supported");
        } else {
          // Flags: (?i) or (?i:...), also (?-i...)
          bool on = true, value = group_icase;
          while (!at_end() && peek() != U':' && peek() != U')') {
            const char32_t f = pat_[pos_++];
            if (f == U'-') on = false;
            else if (f == U'i') value = on;
            else throw std::string("unsupported group flag");
          }
          if (at_end()) throw std::string("unterminated group");
          if (peek() == U')') {
            ++pos_;
            icase = value;  // applies to the rest of the enclosing group
            return false;
          }
          ++pos_;  // ':'
          group_icase = value;
        }
      }
      node inner = parse_alt(depth + 1, group_icase);
      if (at_end() || peek() != U')') throw std::string("unterminated group");
      ++pos_;
      if (kind == node::look) {
        node n;
        n.kind = node::look;
        n.negate = negate;
        n.kids.push_back(std::move(inner));
        out = std::move(n);
      } else {
        out = std::move(inner);
      }
      return true;
    }
    if (c == U'[') {
      out = class_node(parse_class(), icase);
      return true;
    }
    if (c == U'.') {
      ++pos_;
      char_class cc;
      cc.negate = true;
      cc.items.push_back({U'\n', U'\n', 0, false});
      out = class_node(std::move(cc), false);
      return true;
    }
    if (c == U'^' || c == U'$') {
      ++pos_;
      out.kind = node::assert_;
      out.assertion = c == U'^' ? op::bol : op::eol;
      return true;
    }
    if (c == U'*' || c == U'+' || c == U'?') throw std::string("quantifier without an operand");
    if (c == U'\\') {
      ++pos_;
      if (!at_end()) {
        const char32_t e = peek();
        const op a = e == U'A' ? op::begin_text : (e == U'z' || e == U'Z') ? op::end_text
                     : e == U'b' ? op::word_boundary : e == U'B' ? op::not_word_boundary : op::match;
        if (a != op::match) {
          ++pos_;
          out.kind = node::assert_;
          out.assertion = a;
          return true;
        }
      }
      char_class cc;
      parse_escape_into(cc, false);
      out = class_node(std::move(cc), icase);
      return true;
    }
    ++pos_;
    char_class cc;
    cc.items.push_back({c, c, 0, false});
    out = class_node(std::move(cc), icase);
    return true;
  }

  // ---- compiling
  void emit(program& p, inst i) {
    if (p.size() >= max_program) throw std::string("pattern too large once repetitions are expanded");
    p.push_back(i);
  }
  void compile(program& p, const node& n) {
    switch (n.kind) {
      case node::empty: return;
      case node::cls: return emit(p, {op::chr, n.class_index, 0});
      case node::assert_: return emit(p, {n.assertion, 0, 0});
      case node::look: {
        program sub;
        compile(sub, n.kids[0]);
        emit(sub, {op::match});
        subprograms_.push_back(std::move(sub));
        return emit(p, {op::look, static_cast<std::uint32_t>(subprograms_.size() - 1), n.negate ? 1u : 0u});
      }
      case node::cat:
        for (const node& k : n.kids) compile(p, k);
        return;
      case node::alt: {
        std::vector<std::size_t> jumps;
        for (std::size_t i = 0; i < n.kids.size(); ++i) {
          if (i + 1 < n.kids.size()) {
            const std::size_t split = p.size();
            emit(p, {op::split});
            p[split].x = static_cast<std::uint32_t>(p.size());
            compile(p, n.kids[i]);
            jumps.push_back(p.size());
            emit(p, {op::jmp});
            p[split].y = static_cast<std::uint32_t>(p.size());
          } else {
            compile(p, n.kids[i]);
          }
        }
        for (std::size_t j : jumps) p[j].x = static_cast<std::uint32_t>(p.size());
        return;
      }
      case node::rep: {
        const node& body = n.kids[0];
        for (int i = 0; i < n.min; ++i) compile(p, body);
        if (n.max < 0) {
          const std::size_t split = p.size();
          emit(p, {op::split});
          compile(p, body);
          emit(p, {op::jmp, static_cast<std::uint32_t>(split)});
          const auto in = static_cast<std::uint32_t>(split + 1), out = static_cast<std::uint32_t>(p.size());
          p[split].x = n.greedy ? in : out;
          p[split].y = n.greedy ? out : in;
        } else {
          std::vector<std::size_t> splits;
          for (int i = n.min; i < n.max; ++i) {
            splits.push_back(p.size());
            emit(p, {op::split});
            p[splits.back()].x = static_cast<std::uint32_t>(p.size());
            compile(p, body);
          }
          const auto out = static_cast<std::uint32_t>(p.size());
          for (std::size_t s : splits) {
            const std::uint32_t in = p[s].x;
            p[s].x = n.greedy ? in : out;
            p[s].y = n.greedy ? out : in;
          }
        }
        return;
      }
    }
  }
  program compile_program(const node& root) {
    program p;
    compile(p, root);
    emit(p, {op::match});
    return p;
  }

  // ---- matching
  struct thread_list {
    std::vector<std::pair<std::uint32_t, std::size_t>> threads;  // (pc, match start)
    std::vector<std::uint32_t> seen;
    std::uint32_t gen = 0;
    void reset(std::size_t n) {
      threads.clear();
      if (seen.size() != n) seen.assign(n, 0), gen = 0;
      if (++gen == 0) std::fill(seen.begin(), seen.end(), 0), gen = 1;
    }
  };

  static bool is_word_at(std::u32string_view t, std::size_t i) { return i < t.size() && unicode::is_word(t[i]); }

  bool assertion_holds(op a, std::u32string_view t, std::size_t pos) const {
    switch (a) {
      case op::bol: return pos == 0 || t[pos - 1] == U'\n';
      case op::eol: return pos == t.size() || t[pos] == U'\n';
      case op::begin_text: return pos == 0;
      case op::end_text: return pos == t.size();
      case op::word_boundary: return (pos > 0 && is_word_at(t, pos - 1)) != is_word_at(t, pos);
      case op::not_word_boundary: return (pos > 0 && is_word_at(t, pos - 1)) == is_word_at(t, pos);
      default: return false;
    }
  }

  void add_thread(const program& p, thread_list& list, std::vector<std::uint32_t>& stack, std::uint32_t pc0,
                  std::size_t start, std::u32string_view t, std::size_t pos) const {
    stack.clear();
    stack.push_back(pc0);
    while (!stack.empty()) {
      const std::uint32_t pc = stack.back();
      stack.pop_back();
      if (list.seen[pc] == list.gen) continue;
      list.seen[pc] = list.gen;
      const inst& in = p[pc];
      switch (in.code) {
        case op::jmp: stack.push_back(in.x); break;
        case op::split:
          stack.push_back(in.y);
          stack.push_back(in.x);
          break;
        case op::chr:
        case op::match: list.threads.emplace_back(pc, start); break;
        case op::look:
          if (search(subprograms_[in.x], t, pos, true).has_value() != (in.y != 0)) stack.push_back(pc + 1);
          break;
        default:
          if (assertion_holds(in.code, t, pos)) stack.push_back(pc + 1);
          break;
      }
    }
  }

  /// Leftmost-first match starting at or after `from` (exactly at `from` when anchored).
  std::optional<std::pair<std::size_t, std::size_t>> search(const program& p, std::u32string_view t,
                                                            std::size_t from, bool anchored) const {
    thread_list cur, next;
    std::vector<std::uint32_t> stack;
    cur.reset(p.size());
    std::optional<std::pair<std::size_t, std::size_t>> best;
    for (std::size_t i = from;; ++i) {
      if (!best && (!anchored || i == from)) add_thread(p, cur, stack, 0, i, t, i);
      if (cur.threads.empty()) {
        if (best || anchored || i >= t.size()) break;
        cur.reset(p.size());
        continue;
      }
      next.reset(p.size());
      for (const auto& [pc, start] : cur.threads) {
        const inst& in = p[pc];
        if (in.code == op::match) {
          best = std::make_pair(start, i);
          break;  // lower-priority threads are cut
        }
        if (i < t.size() && classes_[in.x].matches(t[i])) add_thread(p, next, stack, pc + 1, start, t, i + 1);
      }
      std::swap(cur, next);
      if (i >= t.size()) {
        // Threads left at the end can only still reach MATCH through epsilon moves, already expanded.
        for (const auto& [pc, start] : cur.threads)
          if (p[pc].code == op::match) {
            best = std::make_pair(start, i + 1 > t.size() ? t.size() : i + 1);
            break;
          }
        break;
      }
    }
    return best;
  }
};

// ------------------------------------------------------------------------------------------------------------
// Splitting a piece by matches, with tokenizers' SplitDelimiterBehavior.

enum class split_behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

/// `matches` are sorted, non-overlapping (begin, end); the rest of the piece is the non-matched parts.
inline void split_piece(const piece& p, const std::vector<std::pair<std::size_t, std::size_t>>& matches,
                        split_behavior behavior, bool invert, std::vector<piece>& out) {
  struct span { std::size_t b, e; bool m; };
  std::vector<span> spans;
  std::size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev < b) spans.push_back({prev, b, false});
    spans.push_back({b, e, true});
    prev = e;
  }
  if (prev < p.text.size()) spans.push_back({prev, p.text.size(), false});
  if (invert)
    for (span& s : spans) s.m = !s.m;
  std::vector<span> res;
  switch (behavior) {
    case split_behavior::removed:
      for (const span& s : spans)
        if (!s.m) res.push_back(s);
      break;
    case split_behavior::isolated: res = spans; break;
    case split_behavior::merged_with_previous: {
      bool previous_match = false;
      for (const span& s : spans) {
        if (s.m && !previous_match && !res.empty()) res.back().e = s.e;
        else res.push_back(s);
        previous_match = s.m;
      }
      break;
    }
    case split_behavior::merged_with_next: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->m && !previous_match && !res.empty()) res.back().b = it->b;
        else res.push_back(*it);
        previous_match = it->m;
      }
      std::reverse(res.begin(), res.end());
      break;
    }
    case split_behavior::contiguous: {
      bool previous_match = false;
      for (const span& s : spans) {
        if (s.m == previous_match && !res.empty()) res.back().e = s.e;
        else res.push_back(s);
        previous_match = s.m;
      }
      break;
    }
  }
  for (const span& s : res)
    if (s.e > s.b) out.push_back(p.sub(s.b, s.e));
}

/// Each code point for which `pred` holds is its own match (Rust's `str::split` with a char predicate).
template <class Pred>
std::vector<std::pair<std::size_t, std::size_t>> char_matches(std::u32string_view t, Pred pred) {
  std::vector<std::pair<std::size_t, std::size_t>> m;
  for (std::size_t i = 0; i < t.size(); ++i)
    if (pred(t[i])) m.emplace_back(i, i + 1);
  return m;
}

/// Non-overlapping occurrences of a literal, left to right.
inline std::vector<std::pair<std::size_t, std::size_t>> literal_matches(std::u32string_view t, std::u32string_view lit) {
  std::vector<std::pair<std::size_t, std::size_t>> m;
  if (lit.empty()) return m;
  std::size_t i = 0;
  while ((i = t.find(lit, i)) != std::u32string_view::npos) {
    m.emplace_back(i, i + lit.size());
    i += lit.size();
  }
  return m;
}

/// A pattern: a literal string or a regex, as in Replace and Split.
struct pattern {
  std::u32string literal;
  std::shared_ptr<const regex> re;
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::u32string_view t) const {
    return re ? re->find_all(t) : literal_matches(t, literal);
  }
};

inline pattern parse_pattern(const json_reader& r, const json& obj, const std::string& path) {
  const json& v = r.required(obj, "pattern", path);
  const std::string field = json_reader::join(path, "pattern");
  r.object(v, field);
  pattern p;
  if (const json* s = json_reader::find(v, "String")) {
    p.literal = r.text(*s, field + ".String");
  } else if (const json* re = json_reader::find(v, "Regex")) {
    const std::u32string src = r.text(*re, field + ".Regex");
    try {
      p.re = std::make_shared<const regex>(src);
    } catch (const std::string& why) {
      r.fail(field + ".Regex", "regex " + re->dump() + " is not supported: " + why);
    }
  } else {
    r.fail(field, "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  return p;
}

inline split_behavior parse_behavior(const json_reader& r, const json& obj, const std::string& path,
                                     const std::string& fallback) {
  const std::string b = r.string(obj, "behavior", path, fallback);
  if (b == "Removed") return split_behavior::removed;
  if (b == "Isolated") return split_behavior::isolated;
  if (b == "MergedWithPrevious") return split_behavior::merged_with_previous;
  if (b == "MergedWithNext") return split_behavior::merged_with_next;
  if (b == "Contiguous") return split_behavior::contiguous;
  r.fail(json_reader::join(path, "behavior"), "unknown split behavior '" + b + "'");
}

// ------------------------------------------------------------------------------------------------------------
// SentencePiece's precompiled_charsmap: a double-array trie over UTF-8 bytes plus NUL-terminated replacements.

class precompiled_charsmap {
 public:
  precompiled_charsmap(const std::string& bytes, const json_reader& r, const std::string& field) {
    if (bytes.size() < 4) r.fail(field, "precompiled_charsmap is shorter than its 4-byte header");
    const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
    const std::uint32_t trie_size = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
    const std::size_t units = trie_size / 4;
    if (units > (bytes.size() - 4) / 4)
      r.fail(field, "precompiled_charsmap's trie (" + std::to_string(trie_size) + " bytes) runs past its end");
    array_.resize(units);
    for (std::size_t i = 0; i < units; ++i) {
      const unsigned char* q = b + 4 + 4 * i;
      array_[i] = q[0] | (q[1] << 8) | (q[2] << 16) | (static_cast<std::uint32_t>(q[3]) << 24);
    }
    normalized_ = bytes.substr(4 + 4 * units);
    try {
      unicode::decode_utf8(normalized_, "precompiled_charsmap's replacement strings");
    } catch (const encoding_error& e) {
      r.fail(field, e.what());
    }
  }

  /// The replacement for the shortest key that prefixes `chunk` (UTF-8), as spm_precompiled's transform().
  std::optional<std::string_view> transform(std::string_view chunk) const {
    if (array_.empty()) return std::nullopt;
    std::size_t node = 0;
    std::uint32_t unit = array_[0];
    node ^= offset(unit);
    for (const char ch : chunk) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == 0) break;
      node ^= c;
      if (node >= array_.size()) return std::nullopt;  // a malformed trie (the Rust crate would panic)
      unit = array_[node];
      if (label(unit) != c) return std::nullopt;
      node ^= offset(unit);
      if (has_leaf(unit)) {
        if (node >= array_.size()) return std::nullopt;
        return normalized_at(value(array_[node]));
      }
    }
    return std::nullopt;
  }

 private:
  static bool has_leaf(std::uint32_t u) { return (u >> 8) & 1u; }
  static std::size_t value(std::uint32_t u) { return u & ((1u << 31) - 1); }
  static std::uint32_t label(std::uint32_t u) { return u & ((1u << 31) | 0xFFu); }
  static std::size_t offset(std::uint32_t u) { return static_cast<std::size_t>(u >> 10) << ((u & (1u << 9)) >> 6); }

  std::optional<std::string_view> normalized_at(std::size_t index) const {
    if (index > normalized_.size()) return std::nullopt;
    if (index < normalized_.size() && (static_cast<unsigned char>(normalized_[index]) & 0xC0) == 0x80)
      return std::nullopt;  // not a character boundary (the Rust crate would panic)
    const std::size_t end = normalized_.find('\0', index);
    return std::string_view(normalized_).substr(index, end == std::string::npos ? std::string::npos : end - index);
  }

  std::vector<std::uint32_t> array_;
  std::string normalized_;
};

inline std::string base64_decode(const std::string& s, const json_reader& r, const std::string& field) {
  std::string out;
  out.reserve(s.size() / 4 * 3);
  std::uint32_t acc = 0;
  int bits = 0;
  std::size_t pad = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+') v = 62;
    else if (c == '/') v = 63;
    else if (c == '=') {
      ++pad;
      continue;
    } else {
      r.fail(field, "not valid base64: character " + std::to_string(static_cast<unsigned char>(c)) + " at offset " +
                        std::to_string(i));
    }
    if (pad) r.fail(field, "not valid base64: data after '=' padding");
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  if ((s.size() % 4) != 0 || pad > 2) r.fail(field, "not valid base64: length is not a multiple of 4");
  return out;
}

// ------------------------------------------------------------------------------------------------------------
// Normalizers.

inline bool is_chinese_char(char32_t c) {  // BertNormalizer's CJK ranges, as written in tokenizers
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

struct normalizer {
  enum class kind { sequence, bert, lowercase, strip, strip_accents, unicode_form, nmt, replace, prepend,
                    precompiled, byte_level };
  kind k = kind::sequence;
  bool clean_text = true, chinese = true, strip_accents = false, lowercase = true;  // bert
  bool left = true, right = true;                                                   // strip
  unicode::normal_form form = unicode::normal_form::nfc;
  pattern pat;
  std::u32string content;  // replace, prepend
  std::shared_ptr<const precompiled_charsmap> charsmap;
  std::vector<normalizer> children;

  void apply(piece& p) const {
    switch (k) {
      case kind::sequence:
        for (const normalizer& n : children) n.apply(p);
        return;
      case kind::bert: return apply_bert(p);
      case kind::lowercase: return map_chars(p, [](std::u32string& o, char32_t c) { unicode::append_lowercase(o, c); });
      case kind::strip: {
        std::size_t b = 0, e = p.text.size();
        if (left)
          while (b < e && unicode::is_whitespace(p.text[b])) ++b;
        if (right)
          while (e > b && unicode::is_whitespace(p.text[e - 1])) --e;
        piece q = p.sub(b, e);
        q.start = p.start;
        p = std::move(q);
        return;
      }
      case kind::strip_accents:
        return map_chars(p, [](std::u32string& o, char32_t c) {
          if (!unicode::is_combining_mark(c)) o.push_back(c);
        });
      case kind::unicode_form: return unicode::normalize(p.text, &p.origin, form);
      case kind::nmt:
        return map_chars(p, [](std::u32string& o, char32_t c) {
          if ((c >= 1 && c <= 8) || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || c == 0x8F || c == 0x9F)
            return;
          const bool space = c == 0x09 || c == 0x0A || c == 0x0C || c == 0x0D || c == 0x1680 ||
                             (c >= 0x200B && c <= 0x200F) || c == 0x2028 || c == 0x2029 || c == 0x2581 ||
                             c == 0xFEFF || c == 0xFFFD;
          o.push_back(space ? U' ' : c);
        });
      case kind::replace: {
        const auto matches = pat.find_all(p.text);
        if (matches.empty()) return;
        piece_builder b(p);
        std::size_t prev = 0;
        for (const auto& [mb, me] : matches) {
          for (std::size_t i = prev; i < mb; ++i) b.push(p.text[i], p.origin[i]);
          b.push(content, p.origin[mb]);
          prev = me;
        }
        for (std::size_t i = prev; i < p.text.size(); ++i) b.push(p.text[i], p.origin[i]);
        p = std::move(b.out);
        return;
      }
      case kind::prepend: {
        if (p.text.empty()) return;
        piece_builder b(p);
        b.push(content, p.origin[0]);
        for (std::size_t i = 0; i < p.text.size(); ++i) b.push(p.text[i], p.origin[i]);
        p = std::move(b.out);
        return;
      }
      case kind::precompiled: return apply_precompiled(p);
      case kind::byte_level: return apply_byte_level(p);
    }
  }

  template <class F>
  static void map_chars(piece& p, F f) {
    piece_builder b(p);
    std::u32string tmp;
    for (std::size_t i = 0; i < p.text.size(); ++i) {
      tmp.clear();
      f(tmp, p.text[i]);
      b.push(tmp, p.origin[i]);
    }
    p = std::move(b.out);
  }

  void apply_bert(piece& p) const {
    if (clean_text)
      map_chars(p, [](std::u32string& o, char32_t c) {
        if (unicode::is_bert_control(c)) return;  // includes NUL and U+FFFD
        o.push_back((c == U'\t' || c == U'\n' || c == U'\r' || unicode::is_whitespace(c)) ? U' ' : c);
      });
    if (chinese)
      map_chars(p, [](std::u32string& o, char32_t c) {
        if (is_chinese_char(c)) {
          o.push_back(U' ');
          o.push_back(c);
          o.push_back(U' ');
        } else {
          o.push_back(c);
        }
      });
    if (strip_accents) {
      unicode::normalize(p.text, &p.origin, unicode::normal_form::nfd);
      map_chars(p, [](std::u32string& o, char32_t c) {
        if (!unicode::is_mark_nonspacing(c)) o.push_back(c);
      });
    }
    if (lowercase) map_chars(p, [](std::u32string& o, char32_t c) { unicode::append_lowercase(o, c); });
  }

  void apply_precompiled(piece& p) const {
    // As tokenizers does: each grapheme cluster of under 6 UTF-8 bytes is looked up whole first, then each
    // code point on its own.
    piece_builder b(p);
    const auto ends = unicode::grapheme_ends(p.text);
    std::size_t begin = 0;
    std::string utf8;
    std::u32string repl;
    auto push_replacement = [&](std::string_view r, std::uint32_t origin) {
      repl = unicode::decode_utf8(r, "precompiled_charsmap replacement");
      b.push(repl, origin);
    };
    for (const std::size_t end : ends) {
      utf8.clear();
      for (std::size_t i = begin; i < end; ++i) unicode::append_utf8(utf8, p.text[i]);
      bool done = false;
      if (utf8.size() < 6) {
        if (const auto r = charsmap->transform(utf8)) {
          push_replacement(*r, p.origin[begin]);
          done = true;
        }
      }
      if (!done) {
        for (std::size_t i = begin; i < end; ++i) {
          utf8.clear();
          unicode::append_utf8(utf8, p.text[i]);
          if (const auto r = charsmap->transform(utf8)) push_replacement(*r, p.origin[i]);
          else b.push(p.text[i], p.origin[i]);
        }
      }
      begin = end;
    }
    p = std::move(b.out);
  }

  void apply_byte_level(piece& p) const;
};

/// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 onwards.
inline const std::array<char32_t, 256>& bytes_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

inline void normalizer::apply_byte_level(piece& p) const {
  const auto& map = bytes_to_unicode();
  piece_builder b(p);
  std::string utf8;
  for (std::size_t i = 0; i < p.text.size(); ++i) {
    utf8.clear();
    unicode::append_utf8(utf8, p.text[i]);
    for (const char ch : utf8) b.push(map[static_cast<unsigned char>(ch)], p.origin[i]);
  }
  p = std::move(b.out);
}

inline normalizer parse_normalizer(const json_reader& r, const json& v, const std::string& path, int depth) {
  if (depth > max_nesting) r.fail(path, "nested too deeply");
  r.object(v, path);
  const std::string type = r.string(v, "type", path);
  normalizer n;
  using K = normalizer::kind;
  if (type == "Sequence") {
    n.k = K::sequence;
    const json& list = r.array(v, "normalizers", path);
    for (std::size_t i = 0; i < list.size(); ++i)
      n.children.push_back(parse_normalizer(r, list[i], json_reader::index(json_reader::join(path, "normalizers"), i), depth + 1));
  } else if (type == "BertNormalizer") {
    n.k = K::bert;
    n.clean_text = r.boolean(v, "clean_text", path, true);
    n.chinese = r.boolean(v, "handle_chinese_chars", path, true);
    n.lowercase = r.boolean(v, "lowercase", path, true);
    n.strip_accents = r.boolean(v, "strip_accents", path, n.lowercase);  // null: follows lowercase
  } else if (type == "Lowercase") {
    n.k = K::lowercase;
  } else if (type == "Strip") {
    n.k = K::strip;
    n.left = r.boolean(v, "strip_left", path, true);
    n.right = r.boolean(v, "strip_right", path, true);
  } else if (type == "StripAccents") {
    n.k = K::strip_accents;
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    n.k = K::unicode_form;
    n.form = type == "NFC" ? unicode::normal_form::nfc : type == "NFD" ? unicode::normal_form::nfd
             : type == "NFKC" ? unicode::normal_form::nfkc : unicode::normal_form::nfkd;
  } else if (type == "Nmt") {
    n.k = K::nmt;
  } else if (type == "Replace") {
    n.k = K::replace;
    n.pat = parse_pattern(r, v, path);
    n.content = r.text(r.required(v, "content", path), json_reader::join(path, "content"));
  } else if (type == "Prepend") {
    n.k = K::prepend;
    n.content = r.text(r.required(v, "prepend", path), json_reader::join(path, "prepend"));
  } else if (type == "Precompiled") {
    n.k = K::precompiled;
    const std::string field = json_reader::join(path, "precompiled_charsmap");
    const std::string b64 = r.string(v, "precompiled_charsmap", path);
    n.charsmap = std::make_shared<const precompiled_charsmap>(base64_decode(b64, r, field), r, field);
  } else if (type == "ByteLevel") {
    n.k = K::byte_level;
  } else {
    r.fail(json_reader::join(path, "type"), "unknown normalizer type '" + type + "'");
  }
  return n;
}

// ------------------------------------------------------------------------------------------------------------
// Pre-tokenizers.

enum class prepend_scheme { always, first, never };

/// GPT-2's split regex, hand-compiled:
///   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
inline std::vector<std::pair<std::size_t, std::size_t>> gpt2_matches(std::u32string_view t) {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  const std::size_t n = t.size();
  auto cls = [](char32_t c) {  // 0 letter, 1 number, 2 space, 3 other
    return unicode::is_letter(c) ? 0 : unicode::is_number(c) ? 1 : unicode::is_whitespace(c) ? 2 : 3;
  };
  std::size_t i = 0;
  while (i < n) {
    const char32_t c = t[i];
    if (c == U'\'' && i + 1 < n) {
      const char32_t a = t[i + 1];
      const char32_t b = i + 2 < n ? t[i + 2] : 0;
      std::size_t len = 0;
      if (a == U's' || a == U't' || a == U'm' || a == U'd') len = 2;
      else if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) len = 3;
      if (len) {
        out.emplace_back(i, i + len);
        i += len;
        continue;
      }
    }
    const std::size_t body = (c == U' ' && i + 1 < n && cls(t[i + 1]) != 2) ? i + 1 : i;
    const int k = cls(t[body]);
    if (k != 2) {
      std::size_t j = body + 1;
      while (j < n && cls(t[j]) == k) ++j;
      out.emplace_back(i, j);
      i = j;
      continue;
    }
    // Whitespace run: \s+(?!\S) leaves the last space to the next token when a non-space follows.
    std::size_t j = i;
    while (j < n && cls(t[j]) == 2) ++j;
    if (j < n && j - i >= 2) j -= 1;
    out.emplace_back(i, j);
    i = j;
  }
  return out;
}

struct pre_tokenizer {
  enum class kind { sequence, byte_level, whitespace, whitespace_split, bert, metaspace, punctuation, digits,
                    split, char_delimiter };
  kind k = kind::sequence;
  bool add_prefix_space = false, use_regex = true;  // byte_level
  char32_t replacement = U'\u2581';                 // metaspace
  prepend_scheme scheme = prepend_scheme::always;
  bool split_ = true;
  split_behavior behavior = split_behavior::isolated;
  bool invert = false;
  bool individual_digits = false;
  char32_t delimiter = U' ';
  pattern pat;
  std::vector<pre_tokenizer> children;

  void apply(std::vector<piece>& pieces) const {
    if (k == kind::sequence) {
      for (const pre_tokenizer& c : children) c.apply(pieces);
      return;
    }
    std::vector<piece> out;
    out.reserve(pieces.size() * 2);
    for (piece& p : pieces) apply_one(p, out);
    pieces = std::move(out);
  }

  void apply_one(piece& p, std::vector<piece>& out) const {
    using SB = split_behavior;
    switch (k) {
      case kind::sequence: return;
      case kind::byte_level: {
        if (add_prefix_space && (p.text.empty() || p.text[0] != U' ')) {
          p.origin.insert(p.origin.begin(), p.origin.empty() ? p.start : p.origin[0]);
          p.text.insert(p.text.begin(), U' ');
        }
        std::vector<piece> parts;
        if (use_regex) split_piece(p, gpt2_matches(p.text), SB::isolated, false, parts);
        else if (!p.text.empty()) parts.push_back(p);
        normalizer bl;
        bl.k = normalizer::kind::byte_level;
        for (piece& q : parts) {
          bl.apply(q);
          out.push_back(std::move(q));
        }
        return;
      }
      case kind::whitespace: {
        // \w+|[^\w\s]+ in Rust's regex crate: runs of word characters, runs of other non-spaces.
        std::vector<std::pair<std::size_t, std::size_t>> m;
        const std::u32string& t = p.text;
        for (std::size_t i = 0; i < t.size();) {
          if (unicode::is_whitespace(t[i]) && !unicode::is_rust_word(t[i])) {
            ++i;
            continue;
          }
          const bool word = unicode::is_rust_word(t[i]);
          std::size_t j = i + 1;
          while (j < t.size() && (word ? unicode::is_rust_word(t[j])
                                       : !unicode::is_rust_word(t[j]) && !unicode::is_whitespace(t[j])))
            ++j;
          m.emplace_back(i, j);
          i = j;
        }
        return split_piece(p, m, SB::removed, true, out);
      }
      case kind::whitespace_split:
        return split_piece(p, char_matches(p.text, unicode::is_whitespace), SB::removed, false, out);
      case kind::bert: {
        std::vector<piece> words;
        split_piece(p, char_matches(p.text, unicode::is_whitespace), SB::removed, false, words);
        for (const piece& w : words)
          split_piece(w, char_matches(w.text, unicode::is_bert_punctuation), SB::isolated, false, out);
        return;
      }
      case kind::metaspace: {
        for (char32_t& c : p.text)
          if (c == U' ') c = replacement;
        const bool prepend = (scheme == prepend_scheme::always || (scheme == prepend_scheme::first && p.start == 0)) &&
                             (p.text.empty() || p.text[0] != replacement);
        if (prepend) {
          p.origin.insert(p.origin.begin(), p.origin.empty() ? p.start : p.origin[0]);
          p.text.insert(p.text.begin(), replacement);
        }
        if (split_) {
          const char32_t rep = replacement;
          return split_piece(p, char_matches(p.text, [rep](char32_t c) { return c == rep; }), SB::merged_with_next,
                             false, out);
        }
        if (!p.text.empty()) out.push_back(std::move(p));
        return;
      }
      case kind::punctuation:
        return split_piece(p, char_matches(p.text, unicode::is_bert_punctuation), behavior, false, out);
      case kind::digits:
        return split_piece(p, char_matches(p.text, unicode::is_rust_numeric),
                           individual_digits ? SB::isolated : SB::contiguous, false, out);
      case kind::split: return split_piece(p, pat.find_all(p.text), behavior, invert, out);
      case kind::char_delimiter: {
        const char32_t d = delimiter;
        return split_piece(p, char_matches(p.text, [d](char32_t c) { return c == d; }), SB::removed, false, out);
      }
    }
  }
};

inline prepend_scheme parse_prepend_scheme(const json_reader& r, const json& v, const std::string& path) {
  if (json_reader::find(v, "prepend_scheme")) {
    const std::string x = r.string(v, "prepend_scheme", path);
    if (x == "always") return prepend_scheme::always;
    if (x == "first") return prepend_scheme::first;
    if (x == "never") return prepend_scheme::never;
    r.fail(json_reader::join(path, "prepend_scheme"), "unknown prepend_scheme '" + x + "'");
  }
  // Files from before prepend_scheme carry add_prefix_space.
  return r.boolean(v, "add_prefix_space", path, true) ? prepend_scheme::always : prepend_scheme::never;
}

inline char32_t parse_single_char(const json_reader& r, const json& v, const std::string& key, const std::string& path,
                                  char32_t fallback) {
  const json* x = json_reader::find(v, key);
  if (!x) return fallback;
  const std::u32string s = r.text(*x, json_reader::join(path, key));
  if (s.size() != 1) r.fail(json_reader::join(path, key), "expected a single character");
  return s[0];
}

inline pre_tokenizer parse_pre_tokenizer(const json_reader& r, const json& v, const std::string& path, int depth) {
  if (depth > max_nesting) r.fail(path, "nested too deeply");
  r.object(v, path);
  const std::string type = r.string(v, "type", path);
  pre_tokenizer p;
  using K = pre_tokenizer::kind;
  if (type == "Sequence") {
    p.k = K::sequence;
    const json& list = r.array(v, "pretokenizers", path);
    for (std::size_t i = 0; i < list.size(); ++i)
      p.children.push_back(
          parse_pre_tokenizer(r, list[i], json_reader::index(json_reader::join(path, "pretokenizers"), i), depth + 1));
  } else if (type == "ByteLevel") {
    p.k = K::byte_level;
    p.add_prefix_space = r.boolean(v, "add_prefix_space", path, true);
    p.use_regex = r.boolean(v, "use_regex", path, true);
  } else if (type == "Whitespace") {
    p.k = K::whitespace;
  } else if (type == "WhitespaceSplit") {
    p.k = K::whitespace_split;
  } else if (type == "BertPreTokenizer") {
    p.k = K::bert;
  } else if (type == "Metaspace") {
    p.k = K::metaspace;
    p.replacement = parse_single_char(r, v, "replacement", path, U'\u2581');
    p.scheme = parse_prepend_scheme(r, v, path);
    p.split_ = r.boolean(v, "split", path, true);
  } else if (type == "Punctuation") {
    p.k = K::punctuation;
    p.behavior = parse_behavior(r, v, path, "Isolated");
  } else if (type == "Digits") {
    p.k = K::digits;
    p.individual_digits = r.boolean(v, "individual_digits", path, false);
  } else if (type == "Split") {
    p.k = K::split;
    p.pat = parse_pattern(r, v, path);
    p.behavior = parse_behavior(r, v, path, "Isolated");
    p.invert = r.boolean(v, "invert", path, false);
  } else if (type == "CharDelimiterSplit") {
    p.k = K::char_delimiter;
    p.delimiter = parse_single_char(r, v, "delimiter", path, U' ');
  } else {
    r.fail(json_reader::join(path, "type"), "unknown pre-tokenizer type '" + type + "'");
  }
  return p;
}

// ------------------------------------------------------------------------------------------------------------
// Models.

using vocab_map = std::unordered_map<std::string, std::int64_t>;

struct model {
  enum class kind { bpe, wordpiece, unigram, wordlevel };
  kind k = kind::bpe;
  vocab_map vocab;                                      // token -> id
  std::unordered_map<std::int64_t, std::string> id_to;  // id -> token (ids may be sparse)
  std::size_t max_token_chars = 0;                      // longest token, in code points
  // BPE
  std::unordered_map<std::uint64_t, std::pair<std::uint32_t, std::int64_t>> merges;  // (a, b) -> (rank, merged)
  std::optional<std::string> unk_token;
  std::optional<std::string> continuing_subword_prefix, end_of_word_suffix;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
  // WordPiece
  std::string wp_prefix = "##";
  std::size_t max_input_chars_per_word = 100;
  // Unigram
  std::vector<double> scores;
  std::optional<std::int64_t> unk_id;
  double min_score = 0;
  struct trie_node {
    std::map<unsigned char, std::uint32_t> next;
    std::int64_t id = -1;
  };
  std::vector<trie_node> trie;
  std::string file;  // for errors at encode time

  void index_ids() {
    id_to.clear();
    id_to.reserve(vocab.size());
    max_token_chars = 0;
    for (const auto& [t, id] : vocab) {
      id_to[id] = t;  // several tokens with one id: any of them, as a HashMap inversion gives
      std::size_t chars = 0;
      for (const char c : t) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
      max_token_chars = std::max(max_token_chars, chars);
    }
  }
  std::optional<std::int64_t> token_to_id(const std::string& t) const {
    auto it = vocab.find(t);
    if (it == vocab.end()) return std::nullopt;
    return it->second;
  }
  std::optional<std::string> id_to_token(std::int64_t id) const {
    auto it = id_to.find(id);
    if (it == id_to.end()) return std::nullopt;
    return it->second;
  }
  std::size_t size() const { return k == kind::unigram ? scores.size() : vocab.size(); }

  void tokenize(std::u32string_view text, std::vector<std::int64_t>& ids) const {
    if (text.empty()) return;
    switch (k) {
      case kind::bpe: return tokenize_bpe(text, ids);
      case kind::wordpiece: return tokenize_wordpiece(text, ids);
      case kind::unigram: return tokenize_unigram(unicode::to_utf8(text), ids);
      case kind::wordlevel: {
        if (const auto id = token_to_id(unicode::to_utf8(text))) return ids.push_back(*id);
        const auto unk = unk_token ? token_to_id(*unk_token) : std::nullopt;
        if (!unk) throw config_error(file, "model.unk_token", "the text needs the unknown token, which is not in the vocabulary");
        return ids.push_back(*unk);
      }
    }
  }

  static std::string byte_token(unsigned char b) {
    static const char* hex = "0123456789ABCDEF";
    return std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
  }

  void tokenize_bpe(std::u32string_view text, std::vector<std::int64_t>& ids) const {
    const std::string whole = unicode::to_utf8(text);
    if (ignore_merges)
      if (const auto id = token_to_id(whole)) return ids.push_back(*id);
    struct symbol {
      std::int64_t id;
      std::ptrdiff_t prev, next;
      std::size_t len;
    };
    std::vector<symbol> word;
    auto add = [&](std::int64_t id, std::size_t len) {
      const auto n = static_cast<std::ptrdiff_t>(word.size());
      if (!word.empty()) word.back().next = n;
      word.push_back({id, n - 1, -1, len});
    };
    std::optional<std::pair<std::int64_t, std::size_t>> unk;
    std::string s;
    for (std::size_t i = 0; i < text.size(); ++i) {
      s.clear();
      if (i > 0 && continuing_subword_prefix) s = *continuing_subword_prefix;
      std::string ch;
      unicode::append_utf8(ch, text[i]);
      s += ch;
      if (i + 1 == text.size() && end_of_word_suffix) s += *end_of_word_suffix;
      if (const auto id = token_to_id(s)) {
        if (unk) add(unk->first, unk->second), unk.reset();
        add(*id, ch.size());
        continue;
      }
      if (byte_fallback) {
        std::vector<std::int64_t> bytes;
        for (const char b : s) {
          const auto id = token_to_id(byte_token(static_cast<unsigned char>(b)));
          if (!id) break;
          bytes.push_back(*id);
        }
        if (bytes.size() == s.size()) {
          // As tokenizers does, a pending unknown is not flushed here (it lands after these bytes).
          for (const std::int64_t b : bytes) add(b, 1);
          continue;
        }
      }
      if (unk_token) {
        const auto uid = token_to_id(*unk_token);
        if (!uid) throw config_error(file, "model.unk_token", "unknown token '" + *unk_token + "' is not in the vocabulary");
        if (unk && fuse_unk) {
          unk->second += ch.size();
        } else {
          if (unk) add(unk->first, unk->second);
          unk = std::make_pair(*uid, ch.size());
        }
      }
    }
    if (unk) add(unk->first, unk->second);
    // Merge by rank with a priority queue of (rank, position), as tokenizers' Word::merge_all.
    struct cand {
      std::uint32_t rank;
      std::size_t pos;
      std::int64_t id;
      bool operator>(const cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<cand> heap;
    auto lookup = [&](std::int64_t a, std::int64_t b) -> const std::pair<std::uint32_t, std::int64_t>* {
      auto it = merges.find((static_cast<std::uint64_t>(a) << 32) | static_cast<std::uint64_t>(b));
      return it == merges.end() ? nullptr : &it->second;
    };
    auto push = [&](cand c) {
      heap.push_back(c);
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    };
    for (std::size_t i = 0; i + 1 < word.size(); ++i)
      if (const auto* m = lookup(word[i].id, word[i + 1].id)) push({m->first, i, m->second});
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      const cand top = heap.back();
      heap.pop_back();
      symbol& cur = word[top.pos];
      if (cur.len == 0 || cur.next == -1) continue;
      const auto next_pos = static_cast<std::size_t>(cur.next);
      const symbol right = word[next_pos];
      const auto* m = lookup(cur.id, right.id);
      if (!m || m->second != top.id) continue;
      cur.id = top.id;
      cur.len += right.len;
      cur.next = right.next;
      word[next_pos].len = 0;
      if (right.next > -1 && static_cast<std::size_t>(right.next) < word.size()) word[right.next].prev = static_cast<std::ptrdiff_t>(top.pos);
      if (cur.prev >= 0)
        if (const auto* pm = lookup(word[cur.prev].id, cur.id)) push({pm->first, static_cast<std::size_t>(cur.prev), pm->second});
      if (cur.next >= 0 && static_cast<std::size_t>(cur.next) < word.size())
        if (const auto* nm = lookup(cur.id, word[cur.next].id)) push({nm->first, top.pos, nm->second});
    }
    for (const symbol& sy : word)
      if (sy.len != 0) ids.push_back(sy.id);
  }

  void tokenize_wordpiece(std::u32string_view text, std::vector<std::int64_t>& ids) const {
    auto unk = [&]() {
      const auto id = unk_token ? token_to_id(*unk_token) : std::nullopt;
      if (!id) throw config_error(file, "model.unk_token", "the text needs the unknown token, which is not in the vocabulary");
      ids.push_back(*id);
    };
    if (text.size() > max_input_chars_per_word) return unk();
    const std::size_t first = ids.size();
    std::size_t start = 0;
    std::string sub;
    while (start < text.size()) {
      // Longer candidates than the longest token cannot match (keeps long words linear).
      std::size_t end = std::min(text.size(), start + max_token_chars);
      std::optional<std::int64_t> found;
      while (start < end) {
        sub = start > 0 ? wp_prefix : std::string();
        sub += unicode::to_utf8(text.substr(start, end - start));
        if ((found = token_to_id(sub))) break;
        --end;
      }
      if (!found) {
        ids.resize(first);
        return unk();
      }
      ids.push_back(*found);
      start = end;
    }
  }

  void build_trie() {
    trie.assign(1, trie_node{});
    for (const auto& [token, id] : vocab) {
      std::uint32_t node = 0;
      for (const char ch : token) {
        const auto c = static_cast<unsigned char>(ch);
        auto it = trie[node].next.find(c);
        if (it == trie[node].next.end()) {
          trie.push_back(trie_node{});
          const auto fresh = static_cast<std::uint32_t>(trie.size() - 1);
          trie[node].next.emplace(c, fresh);
          node = fresh;
        } else {
          node = it->second;
        }
      }
      trie[node].id = id;
    }
  }

  void tokenize_unigram(const std::string& s, std::vector<std::int64_t>& ids) const {
    // Viterbi as tokenizers' encode_optimized: best path per end byte; ties keep the first found.
    constexpr double unk_penalty = 10.0;
    const double unk_score = min_score - unk_penalty;
    const std::size_t n = s.size();
    struct best { std::int64_t id = 0; double score = 0; std::ptrdiff_t from = -1; };
    std::vector<best> ends(n + 1);
    std::size_t at = 0;
    while (at < n) {
      const double here = ends[at].score;
      const auto lead = static_cast<unsigned char>(s[at]);
      const std::size_t mblen = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
      bool single = false;
      std::uint32_t node = 0;
      for (std::size_t j = at; j < n; ++j) {
        auto it = trie[node].next.find(static_cast<unsigned char>(s[j]));
        if (it == trie[node].next.end()) break;
        node = it->second;
        if (trie[node].id < 0) continue;
        const std::size_t key_end = j + 1;
        const double cand = scores[trie[node].id] + here;
        best& t = ends[key_end];
        if (t.from < 0 || cand > t.score) t = {trie[node].id, cand, static_cast<std::ptrdiff_t>(at)};
        if (key_end - at == mblen) single = true;
      }
      if (!single) {
        if (!unk_id) throw config_error(file, "model.unk_id", "the text has a character outside the vocabulary and the model has no unk_id");
        best& t = ends[at + mblen];
        const double cand = unk_score + here;
        if (t.from < 0 || cand > t.score) t = {*unk_id, cand, static_cast<std::ptrdiff_t>(at)};
      }
      at += mblen;
    }
    // Walk back, fusing consecutive unknowns.
    std::vector<std::string> pieces;
    std::string fused;
    bool in_unk = false;
    for (std::size_t e = n; e > 0;) {
      const best& b = ends[e];
      const auto from = static_cast<std::size_t>(b.from);
      std::string tok = s.substr(from, e - from);
      if (unk_id && b.id == *unk_id) {
        fused.insert(0, tok);
        in_unk = true;
      } else {
        if (in_unk) pieces.push_back(std::move(fused)), fused.clear(), in_unk = false;
        pieces.push_back(std::move(tok));
      }
      e = from;
    }
    if (in_unk) pieces.push_back(std::move(fused));
    std::reverse(pieces.begin(), pieces.end());
    for (const std::string& p : pieces) {
      if (const auto id = token_to_id(p)) {
        ids.push_back(*id);
        continue;
      }
      if (byte_fallback) {
        std::vector<std::int64_t> bytes;
        for (const char b : p)
          if (const auto id = token_to_id(byte_token(static_cast<unsigned char>(b)))) bytes.push_back(*id);
        if (bytes.size() == p.size()) {
          ids.insert(ids.end(), bytes.begin(), bytes.end());
          continue;
        }
      }
      if (!unk_id) throw config_error(file, "model.unk_id", "the text needs the unknown token and the model has no unk_id");
      ids.push_back(*unk_id);
    }
  }
};

inline void read_vocab_object(const json_reader& r, const json& v, const std::string& field, model& m) {
  if (!v.is_object()) r.fail(field, std::string("expected an object {token: id}, found ") + v.type_name());
  m.vocab.reserve(v.size());
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string f = field + "[\"" + it.key() + "\"]";
    try {
      unicode::decode_utf8(it.key(), "the token");
    } catch (const encoding_error& e) {
      r.fail(f, e.what());
    }
    m.vocab[it.key()] = r.integer(it.value(), f, 0, max_id);
  }
  m.index_ids();
}

inline std::pair<std::string, std::string> split_merge(const json_reader& r, const json& m, const std::string& f) {
  if (m.is_string()) {
    const std::string& s = m.get_ref<const std::string&>();
    const std::size_t sp = s.find(' ');
    if (sp == std::string::npos) r.fail(f, "merge \"" + s + "\" is not two tokens separated by a space");
    return {s.substr(0, sp), s.substr(sp + 1)};
  }
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return {m[0].get<std::string>(), m[1].get<std::string>()};
  r.fail(f, "expected \"a b\" or [\"a\", \"b\"], found " + m.dump());
}

inline void add_merges(const json_reader& r, const std::vector<std::pair<std::string, std::string>>& list,
                       const std::vector<std::string>& fields, model& m) {
  const std::size_t prefix_len = m.continuing_subword_prefix ? m.continuing_subword_prefix->size() : 0;
  m.merges.reserve(list.size());
  for (std::size_t rank = 0; rank < list.size(); ++rank) {
    const auto& [a, b] = list[rank];
    const auto ia = m.token_to_id(a), ib = m.token_to_id(b);
    if (!ia) r.fail(fields[rank], "merge names token '" + a + "', which is not in the vocabulary");
    if (!ib) r.fail(fields[rank], "merge names token '" + b + "', which is not in the vocabulary");
    const std::string merged = a + (b.size() >= prefix_len && b.compare(0, prefix_len, m.continuing_subword_prefix.value_or("")) == 0 ? b.substr(prefix_len) : b);
    const auto im = m.token_to_id(merged);
    if (!im) r.fail(fields[rank], "merged token '" + merged + "' is not in the vocabulary");
    m.merges[(static_cast<std::uint64_t>(*ia) << 32) | static_cast<std::uint64_t>(*ib)] = {static_cast<std::uint32_t>(rank), *im};
  }
}

inline std::optional<std::string> optional_string(const json_reader& r, const json& v, const std::string& key,
                                                  const std::string& path) {
  if (!json_reader::find(v, key)) return std::nullopt;
  return r.string(v, key, path);
}

inline model parse_model(const json_reader& r, const json& v) {
  const std::string path = "model";
  r.object(v, path);
  model m;
  m.file = r.file;
  std::string type;
  if (json_reader::find(v, "type")) {
    type = r.string(v, "type", path);
  } else if (json_reader::find(v, "merges")) {
    type = "BPE";  // old files leave the type out
  } else if (const json* voc = json_reader::find(v, "vocab"); voc && voc->is_array()) {
    type = "Unigram";
  } else if (json_reader::find(v, "continuing_subword_prefix") || json_reader::find(v, "max_input_chars_per_word")) {
    type = "WordPiece";
  } else {
    r.fail("model.type", "is missing and the model's kind cannot be told from its fields");
  }
  if (type == "BPE") {
    m.k = model::kind::bpe;
    if (const json* d = json_reader::find(v, "dropout"))
      if (!d->is_number() || d->get<double>() != 0.0)
        r.fail("model.dropout", "BPE dropout is random; only null or 0 can give reproducible ids");
    m.unk_token = optional_string(r, v, "unk_token", path);
    m.continuing_subword_prefix = optional_string(r, v, "continuing_subword_prefix", path);
    m.end_of_word_suffix = optional_string(r, v, "end_of_word_suffix", path);
    m.fuse_unk = r.boolean(v, "fuse_unk", path, false);
    m.byte_fallback = r.boolean(v, "byte_fallback", path, false);
    m.ignore_merges = r.boolean(v, "ignore_merges", path, false);
    read_vocab_object(r, r.required(v, "vocab", path), "model.vocab", m);
    const json& merges = r.array(v, "merges", path);
    std::vector<std::pair<std::string, std::string>> list;
    std::vector<std::string> fields;
    list.reserve(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) {
      fields.push_back(json_reader::index("model.merges", i));
      list.push_back(split_merge(r, merges[i], fields.back()));
    }
    add_merges(r, list, fields, m);
  } else if (type == "WordPiece") {
    m.k = model::kind::wordpiece;
    m.unk_token = r.string(v, "unk_token", path, std::string("[UNK]"));
    m.wp_prefix = r.string(v, "continuing_subword_prefix", path, std::string("##"));
    m.max_input_chars_per_word = static_cast<std::size_t>(r.integer(v, "max_input_chars_per_word", path, 100, 0, max_id));
    read_vocab_object(r, r.required(v, "vocab", path), "model.vocab", m);
  } else if (type == "WordLevel") {
    m.k = model::kind::wordlevel;
    m.unk_token = optional_string(r, v, "unk_token", path);
    read_vocab_object(r, r.required(v, "vocab", path), "model.vocab", m);
  } else if (type == "Unigram") {
    m.k = model::kind::unigram;
    const json& voc = r.array(v, "vocab", path);
    m.byte_fallback = r.boolean(v, "byte_fallback", path, false);
    m.scores.reserve(voc.size());
    m.min_score = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < voc.size(); ++i) {
      const std::string f = json_reader::index("model.vocab", i);
      const json& e = voc[i];
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number())
        r.fail(f, "expected [token, score], found " + e.dump());
      const std::string tok = e[0].get<std::string>();
      try {
        unicode::decode_utf8(tok, "the token");
      } catch (const encoding_error& ex) {
        r.fail(f, ex.what());
      }
      const double score = e[1].get<double>();
      if (!std::isfinite(score)) r.fail(f, "score is not finite");
      m.vocab[tok] = static_cast<std::int64_t>(i);
      m.scores.push_back(score);
      m.min_score = std::min(m.min_score, score);
    }
    if (const json* u = json_reader::find(v, "unk_id")) {
      if (voc.empty()) r.fail("model.vocab", "is empty but unk_id is set");
      m.unk_id = r.integer(*u, "model.unk_id", 0, static_cast<std::int64_t>(voc.size()) - 1);
    }
    m.id_to.reserve(voc.size());
    for (std::size_t i = 0; i < voc.size(); ++i) m.id_to[static_cast<std::int64_t>(i)] = voc[i][0].get<std::string>();
    m.build_trie();
  } else {
    r.fail("model.type", "unknown model type '" + type + "'");
  }
  return m;
}

// ------------------------------------------------------------------------------------------------------------
// Post-processors.

struct post_processor {
  enum class kind { none, template_, bert, roberta, byte_level, sequence };
  kind k = kind::none;
  struct item {
    bool is_sequence = false;  // $A (or $B, which single sequences never reach)
    std::vector<std::int64_t> ids;
  };
  std::vector<item> single;
  std::vector<std::int64_t> cls, sep;
  std::vector<post_processor> children;

  void apply(std::vector<std::int64_t>& ids) const {
    switch (k) {
      case kind::none:
      case kind::byte_level: return;
      case kind::bert:
      case kind::roberta: {
        std::vector<std::int64_t> out(cls);
        out.insert(out.end(), ids.begin(), ids.end());
        out.insert(out.end(), sep.begin(), sep.end());
        ids = std::move(out);
        return;
      }
      case kind::template_: {
        std::vector<std::int64_t> out;
        for (const item& it : single) {
          if (it.is_sequence) out.insert(out.end(), ids.begin(), ids.end());
          else out.insert(out.end(), it.ids.begin(), it.ids.end());
        }
        ids = std::move(out);
        return;
      }
      case kind::sequence:
        for (const post_processor& c : children) c.apply(ids);
        return;
    }
  }
  std::size_t added() const {
    switch (k) {
      case kind::bert:
      case kind::roberta: return cls.size() + sep.size();
      case kind::template_: {
        std::size_t n = 0;
        for (const item& it : single) n += it.is_sequence ? 0 : it.ids.size();
        return n;
      }
      case kind::sequence: {
        std::size_t n = 0;
        for (const post_processor& c : children) n += c.added();
        return n;
      }
      default: return 0;
    }
  }
};

inline std::vector<std::int64_t> parse_token_pair(const json_reader& r, const json& v, const std::string& key,
                                                 const std::string& path) {
  const json& t = r.required(v, key, path);
  const std::string f = json_reader::join(path, key);
  if (!t.is_array() || t.size() != 2 || !t[0].is_string()) r.fail(f, "expected [token, id], found " + t.dump());
  return {r.integer(t[1], f + "[1]", 0, max_id)};
}

inline post_processor parse_post_processor(const json_reader& r, const json& v, const std::string& path, int depth) {
  if (depth > max_nesting) r.fail(path, "nested too deeply");
  r.object(v, path);
  const std::string type = r.string(v, "type", path);
  post_processor p;
  using K = post_processor::kind;
  if (type == "TemplateProcessing") {
    p.k = K::template_;
    std::map<std::string, std::vector<std::int64_t>> specials;
    if (const json* st = json_reader::find(v, "special_tokens")) {
      const std::string sf = json_reader::join(path, "special_tokens");
      r.object(*st, sf);
      for (auto it = st->begin(); it != st->end(); ++it) {
        const std::string f = sf + "[\"" + it.key() + "\"]";
        r.object(it.value(), f);
        const json& ids = r.array(it.value(), "ids", f);
        std::vector<std::int64_t> list;
        for (std::size_t i = 0; i < ids.size(); ++i) list.push_back(r.integer(ids[i], f + ".ids" + "[" + std::to_string(i) + "]", 0, max_id));
        specials[it.key()] = std::move(list);
      }
    }
    const json& single = r.array(v, "single", path);
    for (std::size_t i = 0; i < single.size(); ++i) {
      const std::string f = json_reader::index(json_reader::join(path, "single"), i);
      r.object(single[i], f);
      post_processor::item item;
      if (const json* s = json_reader::find(single[i], "Sequence")) {
        r.object(*s, f + ".Sequence");
        item.is_sequence = true;
      } else if (const json* t = json_reader::find(single[i], "SpecialToken")) {
        r.object(*t, f + ".SpecialToken");
        const std::string id = r.string(*t, "id", f + ".SpecialToken");
        auto it = specials.find(id);
        if (it == specials.end()) r.fail(f + ".SpecialToken.id", "special token '" + id + "' is not in special_tokens");
        item.ids = it->second;
      } else {
        r.fail(f, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
      p.single.push_back(std::move(item));
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    p.k = type == "BertProcessing" ? K::bert : K::roberta;
    p.cls = parse_token_pair(r, v, "cls", path);
    p.sep = parse_token_pair(r, v, "sep", path);
  } else if (type == "ByteLevel") {
    p.k = K::byte_level;
  } else if (type == "Sequence") {
    p.k = K::sequence;
    const json& list = r.array(v, "processors", path);
    for (std::size_t i = 0; i < list.size(); ++i)
      p.children.push_back(
          parse_post_processor(r, list[i], json_reader::index(json_reader::join(path, "processors"), i), depth + 1));
  } else {
    r.fail(json_reader::join(path, "type"), "unknown post-processor type '" + type + "'");
  }
  return p;
}

// ------------------------------------------------------------------------------------------------------------
// Decoders.

/// Appends `bytes` as UTF-8, each maximal invalid subsequence replaced by U+FFFD (Rust's from_utf8_lossy).
inline std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned b = p[i];
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) len = 2;
    else if (b >= 0xE0 && b <= 0xEF) len = 3, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
    else if (b >= 0xF0 && b <= 0xF4) len = 4, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
    std::size_t k = 1;
    if (len) {
      for (; k < len && i + k < n; ++k) {
        const unsigned c = p[i + k];
        if (c < (k == 1 ? lo : 0x80u) || c > (k == 1 ? hi : 0xBFu)) break;
      }
    }
    if (len && k == len) {
      out.append(bytes.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      i += len ? k : 1;
    }
  }
  return out;
}

inline void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  std::size_t i = 0, j;
  while ((j = s.find(from, i)) != std::string::npos) {
    out.append(s, i, j - i);
    out.append(to);
    i = j + from.size();
  }
  out.append(s, i, std::string::npos);
  s = std::move(out);
}

struct decoder {
  enum class kind { sequence, byte_level, wordpiece, metaspace, bpe, byte_fallback, fuse, strip, replace, ctc };
  kind k = kind::sequence;
  std::string prefix = "##";  // wordpiece
  bool cleanup = true;        // wordpiece, ctc
  char32_t replacement = U'\u2581';
  prepend_scheme scheme = prepend_scheme::always;
  std::string suffix = "</w>";  // bpe
  char32_t strip_content = U' ';
  std::size_t strip_start = 0, strip_stop = 0;
  pattern pat;
  std::string content;
  std::string pad_token = "<pad>", word_delimiter = "|";  // ctc
  std::vector<decoder> children;

  static std::string cleanup_text(std::string s) {
    replace_all(s, " .", ".");
    replace_all(s, " ?", "?");
    replace_all(s, " !", "!");
    replace_all(s, " ,", ",");
    replace_all(s, " ' ", "'");
    replace_all(s, " n't", "n't");
    replace_all(s, " 'm", "'m");
    replace_all(s, " do not", " don't");
    replace_all(s, " 's", "'s");
    replace_all(s, " 've", "'ve");
    replace_all(s, " 're", "'re");
    return s;
  }

  void chain(std::vector<std::string>& tokens) const {
    switch (k) {
      case kind::sequence:
        for (const decoder& d : children) d.chain(tokens);
        return;
      case kind::byte_level: {
        static const std::unordered_map<char32_t, unsigned char> to_byte = [] {
          std::unordered_map<char32_t, unsigned char> m;
          const auto& t = bytes_to_unicode();
          for (int b = 0; b < 256; ++b) m[t[b]] = static_cast<unsigned char>(b);
          return m;
        }();
        std::string bytes;
        for (const std::string& t : tokens) {
          const std::u32string u = unicode::decode_utf8(t, "token");
          std::string mine;
          bool ok = true;
          for (const char32_t c : u) {
            auto it = to_byte.find(c);
            if (it == to_byte.end()) {
              ok = false;
              break;
            }
            mine.push_back(static_cast<char>(it->second));
          }
          bytes += ok ? mine : t;
        }
        tokens.assign(1, utf8_lossy(bytes));
        return;
      }
      case kind::wordpiece:
        for (std::size_t i = 0; i < tokens.size(); ++i) {
          std::string& t = tokens[i];
          if (i != 0) {
            if (t.compare(0, prefix.size(), prefix) == 0) t.erase(0, prefix.size());
            else t.insert(0, " ");
          }
          if (cleanup) t = cleanup_text(std::move(t));
        }
        return;
      case kind::metaspace: {
        std::string rep;
        unicode::append_utf8(rep, replacement);
        for (std::size_t i = 0; i < tokens.size(); ++i)
          replace_all(tokens[i], rep, (i == 0 && scheme != prepend_scheme::never) ? "" : " ");
        return;
      }
      case kind::bpe:
        for (std::size_t i = 0; i < tokens.size(); ++i)
          replace_all(tokens[i], suffix, i + 1 == tokens.size() ? "" : " ");
        return;
      case kind::byte_fallback: {
        std::vector<std::string> out;
        std::string pending;
        std::size_t pending_count = 0;
        auto flush = [&] {
          if (!pending_count) return;
          bool valid = true;
          try {
            unicode::decode_utf8(pending);
          } catch (const encoding_error&) {
            valid = false;
          }
          if (valid) out.push_back(pending);
          else
            for (std::size_t i = 0; i < pending_count; ++i) out.emplace_back("\xEF\xBF\xBD");
          pending.clear();
          pending_count = 0;
        };
        for (std::string& t : tokens) {
          auto hexval = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
          };
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hexval(t[3]) >= 0 && hexval(t[4]) >= 0) {
            pending.push_back(static_cast<char>(hexval(t[3]) * 16 + hexval(t[4])));
            ++pending_count;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(out);
        return;
      }
      case kind::fuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        return;
      }
      case kind::strip:
        for (std::string& t : tokens) {
          std::u32string u = unicode::decode_utf8(t, "token");
          std::size_t b = 0, e = u.size();
          for (std::size_t i = 0; i < strip_start && b < e && u[b] == strip_content; ++i) ++b;
          for (std::size_t i = 0; i < strip_stop && e > b && u[e - 1] == strip_content; ++i) --e;
          t = unicode::to_utf8(std::u32string_view(u).substr(b, e - b));
        }
        return;
      case kind::replace:
        for (std::string& t : tokens) {
          const std::u32string u = unicode::decode_utf8(t, "token");
          const auto matches = pat.find_all(u);
          std::string out;
          std::size_t prev = 0;
          for (const auto& [b, e] : matches) {
            out += unicode::to_utf8(std::u32string_view(u).substr(prev, b - prev));
            out += content;
            prev = e;
          }
          out += unicode::to_utf8(std::u32string_view(u).substr(prev));
          t = std::move(out);
        }
        return;
      case kind::ctc: {
        std::vector<std::string> out;
        for (std::size_t i = 0; i < tokens.size(); ++i) {
          if (i > 0 && tokens[i] == tokens[i - 1]) continue;  // dedup
          if (tokens[i] == pad_token) continue;
          std::string t = tokens[i];
          replace_all(t, word_delimiter, " ");
          if (cleanup) t = cleanup_text(std::move(t));
          if (!t.empty()) out.push_back(std::move(t));
        }
        tokens = std::move(out);
        return;
      }
    }
  }
};

inline decoder parse_decoder(const json_reader& r, const json& v, const std::string& path, int depth) {
  if (depth > max_nesting) r.fail(path, "nested too deeply");
  r.object(v, path);
  const std::string type = r.string(v, "type", path);
  decoder d;
  using K = decoder::kind;
  if (type == "Sequence") {
    d.k = K::sequence;
    const json& list = r.array(v, "decoders", path);
    for (std::size_t i = 0; i < list.size(); ++i)
      d.children.push_back(parse_decoder(r, list[i], json_reader::index(json_reader::join(path, "decoders"), i), depth + 1));
  } else if (type == "ByteLevel") {
    d.k = K::byte_level;
  } else if (type == "WordPiece") {
    d.k = K::wordpiece;
    d.prefix = r.string(v, "prefix", path, std::string("##"));
    d.cleanup = r.boolean(v, "cleanup", path, true);
  } else if (type == "Metaspace") {
    d.k = K::metaspace;
    d.replacement = parse_single_char(r, v, "replacement", path, U'\u2581');
    d.scheme = parse_prepend_scheme(r, v, path);
  } else if (type == "BPEDecoder") {
    d.k = K::bpe;
    d.suffix = r.string(v, "suffix", path, std::string("</w>"));
  } else if (type == "ByteFallback") {
    d.k = K::byte_fallback;
  } else if (type == "Fuse") {
    d.k = K::fuse;
  } else if (type == "Strip") {
    d.k = K::strip;
    d.strip_content = parse_single_char(r, v, "content", path, U' ');
    d.strip_start = static_cast<std::size_t>(r.integer(v, "start", path, 0, 0, max_id));
    d.strip_stop = static_cast<std::size_t>(r.integer(v, "stop", path, 0, 0, max_id));
  } else if (type == "Replace") {
    d.k = K::replace;
    d.pat = parse_pattern(r, v, path);
    d.content = r.string(v, "content", path);
  } else if (type == "CTC") {
    d.k = K::ctc;
    d.pad_token = r.string(v, "pad_token", path, std::string("<pad>"));
    d.word_delimiter = r.string(v, "word_delimiter_token", path, std::string("|"));
    d.cleanup = r.boolean(v, "cleanup", path, true);
  } else {
    r.fail(json_reader::join(path, "type"), "unknown decoder type '" + type + "'");
  }
  return d;
}

// ------------------------------------------------------------------------------------------------------------
// Added tokens.

struct added_token {
  std::string content;
  std::string decoded;  // what decode / id_to_token give: the normalized content for normalized tokens
  std::u32string text;  // content, decoded
  std::int64_t id = 0;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

/// Leftmost-longest matcher over a set of code point strings (tokenizers uses Aho-Corasick, LeftmostLongest).
struct token_matcher {
  struct node {
    std::map<char32_t, std::uint32_t> next;
    std::int32_t token = -1;  // index into the pattern list (the first one added wins for equal strings)
  };
  std::vector<node> nodes{node{}};
  void add(std::u32string_view s, std::int32_t index) {
    if (s.empty()) return;
    std::uint32_t n = 0;
    for (const char32_t c : s) {
      auto it = nodes[n].next.find(c);
      if (it == nodes[n].next.end()) {
        nodes.push_back(node{});
        const auto fresh = static_cast<std::uint32_t>(nodes.size() - 1);
        nodes[n].next.emplace(c, fresh);
        n = fresh;
      } else {
        n = it->second;
      }
    }
    if (nodes[n].token < 0) nodes[n].token = index;
  }
  bool empty() const { return nodes[0].next.empty(); }
  /// The longest pattern starting at `i`: (length, pattern index), or length 0.
  std::pair<std::size_t, std::int32_t> longest_at(std::u32string_view t, std::size_t i) const {
    std::uint32_t n = 0;
    std::pair<std::size_t, std::int32_t> best{0, -1};
    for (std::size_t j = i; j < t.size(); ++j) {
      auto it = nodes[n].next.find(t[j]);
      if (it == nodes[n].next.end()) break;
      n = it->second;
      if (nodes[n].token >= 0) best = {j + 1 - i, nodes[n].token};
    }
    return best;
  }
};

// ------------------------------------------------------------------------------------------------------------
// The whole tokenizer.

struct padding_params {
  bool fixed = false;
  std::size_t length = 0, multiple = 0;
  bool left = false;
  std::int64_t pad_id = 0;
};
struct truncation_params {
  std::size_t max_length = 0;
  bool left = false;
};

struct state {
  std::string file;
  model mdl;
  std::optional<normalizer> norm;
  std::optional<pre_tokenizer> pre;
  std::optional<post_processor> post;
  std::optional<decoder> dec;
  std::optional<padding_params> padding;
  std::optional<truncation_params> truncation;
  std::vector<added_token> added;                        // in the library's order: specials first
  std::unordered_map<std::string, std::int64_t> added_by_content;
  std::unordered_map<std::int64_t, std::size_t> added_by_id;  // id -> index in `added`
  std::unordered_map<std::string, bool> special_contents;
  token_matcher raw_matcher, normalized_matcher;        // patterns index into `added`
  std::optional<std::int64_t> bos, eos, pad, unk;

  std::optional<std::int64_t> token_to_id(const std::string& t) const {
    if (auto it = added_by_content.find(t); it != added_by_content.end()) return it->second;
    return mdl.token_to_id(t);
  }
  std::optional<std::string> id_to_token(std::int64_t id) const {
    if (auto it = added_by_id.find(id); it != added_by_id.end()) return added[it->second].decoded;
    return mdl.id_to_token(id);
  }

  /// tokenizers' AddedVocabulary::add_tokens for one token read from the file.
  void add_token(added_token t) {
    if (t.content.empty()) return;
    for (const added_token& a : added)
      if (a.content == t.content && a.single_word == t.single_word && a.lstrip == t.lstrip && a.rstrip == t.rstrip &&
          a.normalized == t.normalized && a.special == t.special)
        return;
    std::int64_t id;
    if (const auto existing = token_to_id(t.content)) {
      id = *existing;
    } else {
      const auto vs = static_cast<std::int64_t>(mdl.size());
      std::int64_t top = -1;
      for (const auto& [c, i] : added_by_content) top = std::max(top, i);
      id = top < 0 ? vs : ((top >= vs || vs == 0) ? top + 1 : vs);
    }
    t.id = id;
    added_by_content[t.content] = id;
    // A later token with the same id replaces the earlier one.
    for (auto it = added.begin(); it != added.end(); ++it)
      if (it->id == id || it->content == t.content) {
        added.erase(it);
        break;
      }
    added.push_back(std::move(t));
  }

  void build_matchers() {
    // Special tokens first, then the others, each group in the order added; split by `normalized`.
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < added.size(); ++i)
      if (added[i].special) order.push_back(i);
    for (std::size_t i = 0; i < added.size(); ++i)
      if (!added[i].special) order.push_back(i);
    added_by_id.clear();
    special_contents.clear();
    for (std::size_t i = 0; i < added.size(); ++i) {
      added_by_id[added[i].id] = i;
      if (added[i].special) special_contents[added[i].content] = true;
    }
    for (const std::size_t i : order) {
      added_token& t = added[i];
      t.decoded = t.content;
      if (!t.normalized) {
        raw_matcher.add(t.text, static_cast<std::int32_t>(i));
      } else {
        piece p;
        p.text = t.text;
        p.origin.assign(p.text.size(), 0);
        if (norm) norm->apply(p);
        normalized_matcher.add(p.text, static_cast<std::int32_t>(i));
        t.decoded = unicode::to_utf8(p.text);  // as tokenizers 0.23 gives it back
      }
    }
  }

  /// Splits `p` around added tokens (AddedVocabulary::find_matches): pieces to continue with, or token ids.
  struct part {
    piece text;
    std::int64_t id = -1;  // >= 0: an added token
  };
  void extract(const piece& p, const token_matcher& m, std::vector<part>& out) const {
    const std::u32string& t = p.text;
    if (m.empty()) {
      out.push_back({p, -1});
      return;
    }
    std::size_t start_offset = 0, i = 0;
    while (i < t.size()) {
      const auto [len, index] = m.longest_at(t, i);
      if (len == 0) {
        ++i;
        continue;
      }
      const added_token& tok = added[static_cast<std::size_t>(index)];
      std::size_t start = i, stop = i + len;
      i = stop;
      if (tok.single_word) {
        const bool start_space = start == 0 || !unicode::is_rust_word(t[start - 1]);
        const bool stop_space = stop == t.size() || !unicode::is_rust_word(t[stop]);
        if (!start_space || !stop_space) continue;
      }
      if (tok.lstrip) {
        std::size_t s = start;
        while (s > 0 && unicode::is_whitespace(t[s - 1])) --s;
        start = std::max(s, start_offset);
      }
      if (tok.rstrip)
        while (stop < t.size() && unicode::is_whitespace(t[stop])) ++stop;
      i = stop;
      if (start_offset < start) out.push_back({p.sub(start_offset, start), -1});
      out.push_back({piece{}, tok.id});
      start_offset = stop;
    }
    if (start_offset < t.size()) out.push_back({p.sub(start_offset, t.size()), -1});
  }

  std::vector<std::int64_t> encode(std::string_view text, bool add_special_tokens) const {
    piece whole;
    whole.text = unicode::decode_utf8(text, "the text to encode", &whole.origin);
    whole.start = 0;
    std::vector<std::int64_t> ids;
    std::vector<part> first, second;
    if (!whole.text.empty()) extract(whole, raw_matcher, first);
    std::vector<piece> words;
    for (part& a : first) {
      if (a.id >= 0) {
        ids.push_back(a.id);
        continue;
      }
      if (norm) norm->apply(a.text);
      if (a.text.text.empty()) continue;
      second.clear();
      extract(a.text, normalized_matcher, second);
      for (part& b : second) {
        if (b.id >= 0) {
          ids.push_back(b.id);
          continue;
        }
        if (b.text.text.empty()) continue;
        words.clear();
        words.push_back(std::move(b.text));
        if (pre) pre->apply(words);
        for (const piece& w : words) mdl.tokenize(w.text, ids);
      }
    }
    if (truncation) {
      const std::size_t added_n = (add_special_tokens && post) ? post->added() : 0;
      const std::size_t keep = truncation->max_length > added_n ? truncation->max_length - added_n : 0;
      if (ids.size() > keep) {
        if (truncation->left) ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(keep));
        else ids.resize(keep);
      }
    }
    if (add_special_tokens && post) post->apply(ids);
    if (padding) {
      std::size_t target = padding->fixed ? padding->length : ids.size();
      if (padding->multiple > 0 && target % padding->multiple != 0) target += padding->multiple - target % padding->multiple;
      if (ids.size() < target) {
        const std::vector<std::int64_t> pads(target - ids.size(), padding->pad_id);
        ids.insert(padding->left ? ids.begin() : ids.end(), pads.begin(), pads.end());
      }
    }
    return ids;
  }

  std::string decode(std::span<const std::int64_t> ids, bool skip_special_tokens) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const std::int64_t id : ids) {
      if (auto it = added_by_id.find(id); it != added_by_id.end()) {
        if (skip_special_tokens && is_special(added[it->second].content)) continue;
        tokens.push_back(added[it->second].decoded);
        continue;
      }
      auto t = mdl.id_to_token(id);
      if (!t) continue;  // as tokenizers: ids outside the vocabulary are skipped
      if (skip_special_tokens && is_special(*t)) continue;
      tokens.push_back(std::move(*t));
    }
    if (!dec) {
      std::string out;
      for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
      return out;
    }
    dec->chain(tokens);
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
  }
  bool is_special(const std::string& content) const { return special_contents.count(content) != 0; }

  std::size_t vocab_size() const {
    std::size_t n = mdl.vocab.size();
    for (const added_token& a : added)
      if (!mdl.vocab.count(a.content)) ++n;
    return n;
  }

  void guess_special_ids() {
    auto first_of = [&](std::initializer_list<const char*> names) -> std::optional<std::int64_t> {
      for (const char* n : names)
        if (const auto id = token_to_id(n)) return id;
      return std::nullopt;
    };
    if (mdl.k == model::kind::unigram && mdl.unk_id) unk = mdl.unk_id;
    else if (mdl.unk_token) unk = token_to_id(*mdl.unk_token);
    if (!unk) unk = first_of({"<unk>", "[UNK]", "<|endoftext|>"});
    if (!pad) pad = first_of({"<pad>", "[PAD]"});
    if (!bos) bos = first_of({"<s>", "<|startoftext|>", "<|begin_of_text|>"});
    if (!eos) eos = first_of({"</s>", "<|endoftext|>", "<|end_of_text|>"});
  }
};

inline void parse_added_tokens(const json_reader& r, const json& root, state& s) {
  const json* list = json_reader::find(root, "added_tokens");
  if (!list) return;
  if (!list->is_array()) r.fail("added_tokens", std::string("expected an array, found ") + list->type_name());
  for (std::size_t i = 0; i < list->size(); ++i) {
    const std::string f = json_reader::index("added_tokens", i);
    const json& v = (*list)[i];
    r.object(v, f);
    added_token t;
    t.text = r.text(r.required(v, "content", f), f + ".content");
    t.content = unicode::to_utf8(t.text);
    if (const json* id = json_reader::find(v, "id")) r.integer(*id, f + ".id", 0, max_id);
    t.single_word = r.boolean(v, "single_word", f, false);
    t.lstrip = r.boolean(v, "lstrip", f, false);
    t.rstrip = r.boolean(v, "rstrip", f, false);
    t.normalized = r.boolean(v, "normalized", f, true);
    t.special = r.boolean(v, "special", f, false);
    s.add_token(std::move(t));
  }
}

inline void parse_truncation_padding(const json_reader& r, const json& root, state& s) {
  if (const json* t = json_reader::find(root, "truncation")) {
    r.object(*t, "truncation");
    truncation_params p;
    p.max_length = static_cast<std::size_t>(r.integer(*t, "max_length", "truncation", 512, 0, max_id));
    p.left = r.string(*t, "direction", "truncation", std::string("Right")) == "Left";
    s.truncation = p;
  }
  if (const json* t = json_reader::find(root, "padding")) {
    r.object(*t, "padding");
    padding_params p;
    if (const json* st = json_reader::find(*t, "strategy")) {
      if (st->is_object() && st->contains("Fixed")) {
        p.fixed = true;
        p.length = static_cast<std::size_t>(r.integer((*st)["Fixed"], "padding.strategy.Fixed", 0, 1 << 24));
      } else if (!(st->is_string() && st->get<std::string>() == "BatchLongest")) {
        r.fail("padding.strategy", "expected \"BatchLongest\" or {\"Fixed\": n}");
      }
    }
    p.left = r.string(*t, "direction", "padding", std::string("Right")) == "Left";
    p.multiple = static_cast<std::size_t>(r.integer(*t, "pad_to_multiple_of", "padding", 0, 0, 1 << 24));
    p.pad_id = r.integer(*t, "pad_id", "padding", 0, 0, max_id);
    s.padding = p;
  }
}

inline std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw load_error(path, std::string("cannot open ") + what);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw load_error(path, std::string("cannot read ") + what);
  return text;
}

inline json parse_json(const std::string& text, const std::string& file) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw load_error(file, std::string("not valid JSON: ") + e.what());
  }
}

/// Reads bos/eos/pad/unk from tokenizer_config.json or special_tokens_map.json beside the tokenizer, if any.
inline void read_special_token_names(const std::filesystem::path& folder, state& s) {
  for (const char* name : {"special_tokens_map.json", "tokenizer_config.json"}) {
    const std::filesystem::path p = folder / name;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) continue;
    const json j = parse_json(read_file(p.string(), name), p.string());
    if (!j.is_object()) throw config_error(p.string(), "(root)", "expected an object");
    auto get = [&](const char* key, std::optional<std::int64_t>& slot) {
      const json* v = json_reader::find(j, key);
      if (!v) return;
      std::string content;
      if (v->is_string()) content = v->get<std::string>();
      else if (v->is_object() && v->contains("content") && (*v)["content"].is_string()) content = (*v)["content"].get<std::string>();
      else throw config_error(p.string(), key, "expected a token string or {\"content\": ...}");
      if (const auto id = s.token_to_id(content)) slot = id;
    };
    get("bos_token", s.bos);
    get("eos_token", s.eos);
    get("pad_token", s.pad);
    get("unk_token", s.unk);
  }
}

}  // namespace detail::tok

/// A tokenizer as Hugging Face `tokenizers` runs it. Immutable after loading; copies share their state, and
/// encode / decode may run on several threads at once.
class tokenizer {
 public:
  /// Reads a `tokenizer.json`. Throws load_error (unreadable, not JSON) or config_error (a missing, mistyped
  /// or unsupported field, named with its path, e.g. "model.merges[12]").
  static tokenizer from_file(const std::string& path) {
    return from_json(detail::tok::read_file(path, "tokenizer file"), path);
  }

  /// Parses `tokenizer.json` text; `name` stands for the file in errors.
  static tokenizer from_json(const std::string& text, const std::string& name = "tokenizer.json") {
    using namespace detail::tok;
    const json root = parse_json(text, name);
    const json_reader r{name};
    r.object(root, "");
    if (const json* v = json_reader::find(root, "version"))
      if (!v->is_string() || v->get<std::string>() != "1.0") r.fail("version", "unknown tokenizer.json version " + v->dump());
    auto s = std::make_shared<state>();
    s->file = name;
    s->mdl = parse_model(r, r.required(root, "model", ""));
    if (const json* v = json_reader::find(root, "normalizer")) s->norm = parse_normalizer(r, *v, "normalizer", 0);
    if (const json* v = json_reader::find(root, "pre_tokenizer")) s->pre = parse_pre_tokenizer(r, *v, "pre_tokenizer", 0);
    if (const json* v = json_reader::find(root, "post_processor")) s->post = parse_post_processor(r, *v, "post_processor", 0);
    if (const json* v = json_reader::find(root, "decoder")) s->dec = parse_decoder(r, *v, "decoder", 0);
    parse_truncation_padding(r, root, *s);
    parse_added_tokens(r, root, *s);
    s->build_matchers();
    return tokenizer(std::move(s));
  }

  /// A Hub tokenizer folder: `tokenizer.json` when present; otherwise `vocab.json` + `merges.txt` (byte-level
  /// BPE, GPT-2 / OPT style) or `vocab.txt` (BERT WordPiece, lowercasing). bos / eos / pad / unk come from
  /// `special_tokens_map.json` / `tokenizer_config.json` when the folder has them.
  static tokenizer from_folder(const std::string& dir) {
    namespace fs = std::filesystem;
    const fs::path folder(dir);
    std::error_code ec;
    auto has = [&](const char* name) { return fs::is_regular_file(folder / name, ec); };
    std::optional<tokenizer> t;
    if (has("tokenizer.json")) t = from_file((folder / "tokenizer.json").string());
    else if (has("vocab.json") && has("merges.txt"))
      t = from_bpe_files((folder / "vocab.json").string(), (folder / "merges.txt").string());
    else if (has("vocab.txt")) t = from_wordpiece_vocab((folder / "vocab.txt").string());
    else throw load_error(dir, "no tokenizer.json, vocab.json + merges.txt or vocab.txt in this folder");
    auto s = std::make_shared<detail::tok::state>(*t->state_);
    detail::tok::read_special_token_names(folder, *s);
    s->guess_special_ids();
    return tokenizer(std::move(s), false);
  }

  /// Byte-level BPE from GPT-2 style files (ByteLevel pre-tokenizer without a prefix space, ByteLevel decoder,
  /// no post-processor). `<s>`, `</s>`, `<pad>`, `<unk>`, `<mask>` and `<|endoftext|>`, where the vocabulary
  /// has them, become special added tokens.
  static tokenizer from_bpe_files(const std::string& vocab_json, const std::string& merges_txt) {
    using namespace detail::tok;
    auto s = std::make_shared<state>();
    s->file = vocab_json;
    const json_reader r{vocab_json};
    s->mdl.k = model::kind::bpe;
    s->mdl.file = vocab_json;
    read_vocab_object(r, parse_json(read_file(vocab_json, "vocabulary"), vocab_json), "(root)", s->mdl);
    const std::string merges = read_file(merges_txt, "merges");
    std::vector<std::pair<std::string, std::string>> list;
    std::vector<std::string> fields;
    std::size_t line_no = 0, pos = 0;
    while (pos <= merges.size()) {
      std::size_t end = merges.find('\n', pos);
      if (end == std::string::npos) end = merges.size();
      std::string line = merges.substr(pos, end - pos);
      pos = end + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line.rfind("#version", 0) == 0) continue;
      const std::size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
        throw config_error(merges_txt, "line " + std::to_string(line_no), "expected two tokens separated by one space");
      list.emplace_back(line.substr(0, sp), line.substr(sp + 1));
      fields.push_back("line " + std::to_string(line_no));
    }
    add_merges(json_reader{merges_txt}, list, fields, s->mdl);
    pre_tokenizer pre;
    pre.k = pre_tokenizer::kind::byte_level;
    s->pre = pre;
    decoder dec;
    dec.k = decoder::kind::byte_level;
    s->dec = dec;
    for (const char* name : {"<s>", "</s>", "<pad>", "<unk>", "<mask>", "<|endoftext|>"})
      if (s->mdl.token_to_id(name)) {
        added_token t;
        t.content = name;
        t.text = unicode::decode_utf8(name);
        t.special = true;
        t.normalized = false;
        s->add_token(std::move(t));
      }
    s->build_matchers();
    return tokenizer(std::move(s));
  }

  /// BERT WordPiece from a `vocab.txt` (one token a line, the line number is the id): BertNormalizer
  /// (lowercasing as asked), BertPreTokenizer, `##` continuation, [UNK], WordPiece decoder, and
  /// BertProcessing ([CLS] ... [SEP]) when both tokens exist. [PAD] [UNK] [CLS] [SEP] [MASK] are special.
  static tokenizer from_wordpiece_vocab(const std::string& vocab_txt, bool lowercase = true) {
    using namespace detail::tok;
    auto s = std::make_shared<state>();
    s->file = vocab_txt;
    const std::string text = read_file(vocab_txt, "vocabulary");
    s->mdl.k = model::kind::wordpiece;
    s->mdl.file = vocab_txt;
    s->mdl.unk_token = "[UNK]";
    std::size_t pos = 0;
    std::int64_t id = 0;
    while (pos < text.size()) {
      std::size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(pos, end - pos);
      pos = end + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      try {
        unicode::decode_utf8(line, "the token");
      } catch (const encoding_error& e) {
        throw config_error(vocab_txt, "line " + std::to_string(id + 1), e.what());
      }
      s->mdl.vocab[line] = id++;
    }
    s->mdl.index_ids();
    normalizer n;
    n.k = normalizer::kind::bert;
    n.lowercase = lowercase;
    n.strip_accents = lowercase;
    s->norm = n;
    pre_tokenizer p;
    p.k = pre_tokenizer::kind::bert;
    s->pre = p;
    decoder d;
    d.k = decoder::kind::wordpiece;
    s->dec = d;
    const auto cls = s->mdl.token_to_id("[CLS]"), sep = s->mdl.token_to_id("[SEP]");
    if (cls && sep) {
      post_processor pp;
      pp.k = post_processor::kind::bert;
      pp.cls = {*cls};
      pp.sep = {*sep};
      s->post = pp;
    }
    for (const char* name : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})
      if (s->mdl.token_to_id(name)) {
        added_token t;
        t.content = name;
        t.text = unicode::decode_utf8(name);
        t.special = true;
        t.normalized = false;
        s->add_token(std::move(t));
      }
    s->build_matchers();
    return tokenizer(std::move(s));
  }

  /// Token ids of `text` (UTF-8; invalid bytes throw encoding_error with their offset). With
  /// `add_special_tokens` the post-processor's tokens are added, as `tokenizers`' encode(text, True).
  std::vector<std::int64_t> encode(std::string_view text, bool add_special_tokens = true) const {
    return state_->encode(text, add_special_tokens);
  }

  /// Text of `ids` through the file's decoder (tokens joined by spaces when it has none). Special tokens are
  /// left out with `skip_special_tokens`; ids no token has are skipped, as `tokenizers` does.
  std::string decode(std::span<const std::int64_t> ids, bool skip_special_tokens = true) const {
    return state_->decode(ids, skip_special_tokens);
  }
  std::string decode(const std::vector<std::int64_t>& ids, bool skip_special_tokens = true) const {
    return decode(std::span<const std::int64_t>(ids), skip_special_tokens);
  }

  /// The id of a token (added tokens first, then the model's vocabulary).
  std::optional<std::int64_t> token_to_id(std::string_view token) const { return state_->token_to_id(std::string(token)); }
  std::optional<std::string> id_to_token(std::int64_t id) const { return state_->id_to_token(id); }
  /// Distinct tokens, added ones included (tokenizers' get_vocab_size(true)).
  std::size_t vocab_size() const { return state_->vocab_size(); }

  /// Special token ids when known: from special_tokens_map.json / tokenizer_config.json (from_folder), else
  /// the model's unknown token and the conventional names (<s> </s> <pad> <unk>, [PAD] [UNK], ...).
  std::optional<std::int64_t> bos_token_id() const { return state_->bos; }
  std::optional<std::int64_t> eos_token_id() const { return state_->eos; }
  std::optional<std::int64_t> pad_token_id() const { return state_->pad; }
  std::optional<std::int64_t> unk_token_id() const { return state_->unk; }
  /// Whether `id` is a special added token.
  bool is_special(std::int64_t id) const {
    const auto it = state_->added_by_id.find(id);
    return it != state_->added_by_id.end() && state_->added[it->second].special;
  }
  /// The file the tokenizer was read from.
  const std::string& source() const { return state_->file; }

 private:
  explicit tokenizer(std::shared_ptr<detail::tok::state> s, bool guess = true) {
    if (guess) s->guess_special_ids();
    state_ = std::move(s);
  }
  std::shared_ptr<const detail::tok::state> state_;
};

}  // namespace qformer
