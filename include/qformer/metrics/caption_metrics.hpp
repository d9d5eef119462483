#pragma once
/// \file
/// Caption metrics over a corpus, each equal to its reference Python implementation (tests/data/metrics, made by
/// tools/make_metrics_reference.py, checks them to 1e-6):
///
/// | metric      | equals                                                         | tokenisation                   |
/// |-------------|----------------------------------------------------------------|--------------------------------|
/// | corpus_bleu | sacrebleu 2.6 `corpus_bleu(preds, ref_streams)`, all defaults   | sacrebleu's 13a, case kept     |
/// | rouge_l     | rouge-score 0.1.2 `RougeScorer(["rougeL"], use_stemmer=False)` | rouge-score's default          |
/// |             | `.score_multi(refs, pred)`, F averaged over the corpus         |                                |
/// | cider_d     | pycocoevalcap 1.2 `Cider().compute_score(gts, res)` (CIDEr-D)   | tokenize_cider, then str.split |
///
/// Tokenisation, exactly:
///
/// - **BLEU** (`tokenize_13a`): sacrebleu's `BLEU()._preprocess_segment` with its defaults (tokenize="13a",
///   lowercase=False): strip trailing whitespace (Python's `str.rstrip()`: the Unicode whitespace of
///   `str.isspace`); remove `<skipped>` and `-\n`; turn `\n` into a space; if the text has `&`, unescape
///   `&quot;` `&amp;` `&lt;` `&gt;` in that order; pad with one space; then mteval-v13a's four substitutions: put
///   spaces around each of ``{|}~[\]^_` !"#$%&()*+:;<=>?@/`` and the space itself; split `.` and `,` off
///   unless both neighbours are ASCII digits (`([^0-9])([.,])` then `([.,])([^0-9])`); split `-` after an ASCII
///   digit; finally split on Unicode whitespace. Case is kept. N-grams are orders 1-4 over those tokens.
/// - **ROUGE-L** (`tokenize_rouge`): rouge-score's `tokenize.tokenize(text, stemmer=None)`: Python's `str.lower()`,
///   every character outside `[a-z0-9]` becomes a separator, tokens are the maximal `[a-z0-9]` runs. So only ASCII
///   letters and digits survive (non-ASCII letters separate words; the two code points whose lowercase is ASCII,
///   U+0130 `İ` -> `i` + U+0307 and U+212A KELVIN SIGN -> `k`, are followed as Python does). No stemmer.
/// - **CIDEr-D** (`tokenize_cider`, qformer's own; pycocoevalcap expects the COCO PTBTokenizer's output, which is
///   Java and not needed here): ASCII letters are lower-cased; every ASCII character other than `[a-z0-9]` and
///   every Unicode whitespace character separates tokens (so ASCII punctuation is dropped, as the COCO tokenizer
///   drops `. , ? ! : ; - ' "`, though `'s` is not kept as a token); other non-ASCII characters stay inside tokens
///   unchanged (no Unicode case folding or normalisation). The tokens, joined by spaces, are what pycocoevalcap
///   receives (its `precook` splits on whitespace). With `cider_options::pre_tokenize = false` the captions are
///   taken as already tokenised and only split on Unicode whitespace, as pycocoevalcap itself does.
///
/// All text is UTF-8; invalid UTF-8 throws qformer::invalid_argument naming the prediction or reference. Every
/// function takes the whole corpus: `references[i]` holds the one or more references of `predictions[i]`.
/// CIDEr-D's document frequencies come from the references of the whole corpus, so its per-prediction scores
/// depend on the corpus too. The JSONL reader and `evaluate` are in metrics/evaluate.hpp (they need nlohmann).

#include "../core/error.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace qformer::metrics {

/// A corpus's references: `references[i]` are the (one or more) reference captions of prediction `i`.
using reference_lists = std::vector<std::vector<std::string>>;

// ---------------------------------------------------------------------------------------------------------------
// UTF-8 and Python's whitespace

namespace detail {

/// Byte length of the valid UTF-8 sequence starting at `s[i]`, or 0 if it is not valid (strict: no overlong
/// forms, surrogates or code points past U+10FFFF). `cp` receives the code point.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i, char32_t& cp) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned b = p[i];
  if (b < 0x80) return cp = b, 1;
  std::size_t len;
  char32_t min;
  if (b >= 0xC2 && b <= 0xDF) len = 2, cp = b & 0x1F, min = 0x80;
  else if (b >= 0xE0 && b <= 0xEF) len = 3, cp = b & 0x0F, min = 0x800;
  else if (b >= 0xF0 && b <= 0xF4) len = 4, cp = b & 0x07, min = 0x10000;
  else return 0;
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    if ((p[i + k] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i + k] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

/// Byte offset of the first invalid UTF-8 sequence of `s`, or npos when `s` is valid UTF-8.
inline std::size_t find_invalid_utf8(std::string_view s) {
  char32_t cp;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence(s, i, cp);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

/// Throws invalid_argument naming `what` when `s` is not valid UTF-8.
inline void require_utf8(std::string_view s, const std::string& what) {
  const std::size_t at = find_invalid_utf8(s);
  if (at != std::string_view::npos)
    throw invalid_argument(what + " is not valid UTF-8 (bad byte at offset " + std::to_string(at) + ")");
}

/// Python's `str.isspace()` (what `str.split()` and `str.rstrip()` use): bidirectional class WS, B or S, or
/// general category Zs.
inline bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/// Calls `f(code_point, byte_offset, byte_length)` for each code point of valid UTF-8 `s`.
template <class F>
void for_each_code_point(std::string_view s, F&& f) {
  char32_t cp = 0;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t n = utf8_sequence(s, i, cp);
    if (n == 0) cp = 0xFFFD, n = 1;  // callers validate first; never loop forever on bad bytes
    f(cp, i, n);
    i += n;
  }
}

/// Python's `str.replace(from, to)`: every non-overlapping occurrence, left to right, in one pass.
inline std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  for (std::size_t at; (at = s.find(from, i)) != std::string_view::npos; i = at + from.size()) {
    out.append(s.substr(i, at - i));
    out.append(to);
  }
  out.append(s.substr(i));
  return out;
}

inline bool is_ascii_digit(char c) { return c >= '0' && c <= '9'; }

/// Checks the corpus shape shared by every metric: as many reference lists as predictions, none empty, all
/// UTF-8.
inline void check_corpus(const std::vector<std::string>& predictions, const reference_lists& references,
                         const char* metric) {
  const std::string m = metric;
  if (predictions.empty()) throw invalid_argument(m + ": the corpus has no predictions");
  if (references.size() != predictions.size())
    throw invalid_argument(m + ": " + std::to_string(predictions.size()) + " predictions but " +
                           std::to_string(references.size()) + " reference lists");
  for (std::size_t i = 0; i < predictions.size(); ++i) {
    require_utf8(predictions[i], m + ": prediction " + std::to_string(i));
    if (references[i].empty()) throw invalid_argument(m + ": prediction " + std::to_string(i) + " has no references");
    for (std::size_t k = 0; k < references[i].size(); ++k)
      require_utf8(references[i][k], m + ": reference " + std::to_string(k) + " of prediction " + std::to_string(i));
  }
}

/// N-gram counts in order of first appearance (orders 1..n, then position), as Python's dict / Counter keep
/// them: the order sums run in, so floating-point results follow the reference bit for bit where they can.
struct ngram_counts {
  std::vector<std::string> keys;  // the n-gram's tokens joined by single spaces (tokens hold no whitespace)
  std::vector<int> orders;        // 1..n
  std::vector<std::int64_t> counts;
  std::unordered_map<std::string, std::size_t> index;

  void add(std::string key, int order) {
    const auto [it, inserted] = index.try_emplace(std::move(key), keys.size());
    if (inserted) keys.push_back(it->first), orders.push_back(order), counts.push_back(1);
    else ++counts[it->second];
  }
  std::int64_t count(const std::string& key) const {
    const auto it = index.find(key);
    return it == index.end() ? 0 : counts[it->second];
  }
};

/// sacrebleu's `extract_all_word_ngrams` / pycocoevalcap's `precook`: every n-gram of orders 1..`max_order`.
inline ngram_counts count_ngrams(const std::vector<std::string>& tokens, int max_order) {
  ngram_counts out;
  for (int n = 1; n <= max_order; ++n) {
    for (std::size_t i = 0; i + static_cast<std::size_t>(n) <= tokens.size(); ++i) {
      std::string key = tokens[i];
      for (int k = 1; k < n; ++k) key += ' ', key += tokens[i + static_cast<std::size_t>(k)];
      out.add(std::move(key), n);
    }
  }
  return out;
}

}  // namespace detail

/// Python's `str.split()` with no argument: the maximal runs of non-whitespace (Unicode whitespace as
/// `str.isspace`). `text` must be valid UTF-8.
inline std::vector<std::string> split_whitespace(std::string_view text) {
  std::vector<std::string> out;
  std::size_t start = std::string_view::npos;
  detail::for_each_code_point(text, [&](char32_t c, std::size_t at, std::size_t) {
    if (detail::is_python_space(c)) {
      if (start != std::string_view::npos) out.emplace_back(text.substr(start, at - start));
      start = std::string_view::npos;
    } else if (start == std::string_view::npos) {
      start = at;
    }
  });
  if (start != std::string_view::npos) out.emplace_back(text.substr(start));
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Tokenisers

/// sacrebleu's preprocessing for BLEU with its defaults: `BLEU()._preprocess_segment(text)`, i.e.
/// `Tokenizer13a()(text.rstrip())` (see the file comment). Returns the tokens joined by single spaces.
/// `text` must be valid UTF-8.
inline std::string tokenize_13a(std::string_view text) {
  // str.rstrip(): drop trailing whitespace code points.
  std::size_t end = 0;
  detail::for_each_code_point(text, [&](char32_t c, std::size_t at, std::size_t len) {
    if (!detail::is_python_space(c)) end = at + len;
  });
  std::string line(text.substr(0, end));

  // The language-independent part of Tokenizer13a.
  line = detail::replace_all(line, "<skipped>", "");
  line = detail::replace_all(line, "-\n", "");
  line = detail::replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    line = detail::replace_all(line, "&quot;", "\"");
    line = detail::replace_all(line, "&amp;", "&");
    line = detail::replace_all(line, "&lt;", "<");
    line = detail::replace_all(line, "&gt;", ">");
  }
  line = " " + line + " ";

  // TokenizerRegexp's four substitutions. Each pattern is made of ASCII classes and `[^0-9]`, so working on UTF-8
  // bytes gives what Python's re gives on code points: an ASCII byte is never part of a multi-byte sequence, and
  // a pattern's ASCII element next to a multi-byte character only ever meets its first or last byte.
  // 1. ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> " \1 "
  auto in_class1 = [](unsigned char c) {
    return (c >= 0x7B && c <= 0x7E) || (c >= 0x5B && c <= 0x60) || (c >= 0x20 && c <= 0x26) ||
           (c >= 0x28 && c <= 0x2B) || (c >= 0x3A && c <= 0x40) || c == 0x2F;
  };
  std::string s;
  s.reserve(line.size() * 2);
  for (const char c : line) {
    if (in_class1(static_cast<unsigned char>(c))) s += ' ', s += c, s += ' ';
    else s += c;
  }
  // A two-character pattern `first second` -> replacement, as re.sub scans: leftmost match, then on after it.
  auto substitute = [](const std::string& in, auto first, auto second, auto emit) {
    std::string out;
    out.reserve(in.size() * 2);
    std::size_t i = 0;
    while (i < in.size()) {
      if (i + 1 < in.size() && first(in[i]) && second(in[i + 1])) {
        emit(out, in[i], in[i + 1]);
        i += 2;
      } else {
        out += in[i++];
      }
    }
    return out;
  };
  auto period_comma = [](char c) { return c == '.' || c == ','; };
  auto not_digit = [](char c) { return !detail::is_ascii_digit(c); };
  // 2. ([^0-9])([\.,]) -> "\1 \2 "
  s = substitute(s, not_digit, period_comma, [](std::string& o, char a, char b) { o += a, o += ' ', o += b, o += ' '; });
  // 3. ([\.,])([^0-9]) -> " \1 \2"
  s = substitute(s, period_comma, not_digit, [](std::string& o, char a, char b) { o += ' ', o += a, o += ' ', o += b; });
  // 4. ([0-9])(-) -> "\1 \2 "
  s = substitute(s, detail::is_ascii_digit, [](char c) { return c == '-'; },
                 [](std::string& o, char a, char b) { o += a, o += ' ', o += b, o += ' '; });

  // ' '.join(line.split())
  std::string out;
  for (const auto& t : split_whitespace(s)) {
    if (!out.empty()) out += ' ';
    out += t;
  }
  return out;
}

/// rouge-score's default tokenizer without stemmer, `tokenize.tokenize(text, None)` (see the file comment).
/// `text` must be valid UTF-8.
inline std::vector<std::string> tokenize_rouge(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) out.push_back(std::move(cur)), cur.clear();
  };
  detail::for_each_code_point(text, [&](char32_t c, std::size_t, std::size_t) {
    if (c >= 'A' && c <= 'Z') {
      cur += static_cast<char>(c + 32);
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      cur += static_cast<char>(c);
    } else if (c == 0x212A) {  // KELVIN SIGN: lower() gives ASCII "k"
      cur += 'k';
    } else if (c == 0x0130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE: lower() gives "i" + U+0307
      cur += 'i';
      flush();
    } else {
      flush();
    }
  });
  flush();
  return out;
}

/// The tokenisation applied before CIDEr-D (see the file comment): lower-cased ASCII letters and digits and
/// non-ASCII non-whitespace characters form tokens; ASCII punctuation and Unicode whitespace separate them.
/// `text` must be valid UTF-8.
inline std::vector<std::string> tokenize_cider(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) out.push_back(std::move(cur)), cur.clear();
  };
  detail::for_each_code_point(text, [&](char32_t c, std::size_t at, std::size_t len) {
    if (c < 0x80) {
      if (c >= 'A' && c <= 'Z') cur += static_cast<char>(c + 32);
      else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) cur += static_cast<char>(c);
      else flush();
    } else if (detail::is_python_space(c)) {
      flush();
    } else {
      cur.append(text.substr(at, len));
    }
  });
  flush();
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// BLEU

/// sacrebleu's sufficient statistics of one prediction: `[hyp_len, ref_len, correct x4, total x4]`.
struct bleu_segment {
  std::int64_t hyp_len = 0;  ///< tokens of the prediction
  std::int64_t ref_len = 0;  ///< the closest reference length (the shorter one on ties)
  std::array<std::int64_t, 4> correct{};  ///< clipped n-gram matches, n = 1..4
  std::array<std::int64_t, 4> total{};    ///< n-grams of the prediction, n = 1..4
};

/// Corpus BLEU-4 as sacrebleu's `BLEUScore` reports it.
struct bleu_result {
  double score = 0;                   ///< BLEU on sacrebleu's 0-100 scale
  std::array<double, 4> precisions{};  ///< n-gram precisions, 0-100, "exp"-smoothed where a count is 0
  std::array<std::int64_t, 4> counts{};  ///< clipped matches per order, summed over the corpus
  std::array<std::int64_t, 4> totals{};  ///< prediction n-grams per order, summed over the corpus
  double brevity_penalty = 0;         ///< exp(1 - ref_len / sys_len) when sys_len < ref_len, else 1 (0 if sys_len is 0)
  std::int64_t sys_len = 0;           ///< prediction tokens
  std::int64_t ref_len = 0;           ///< closest-reference tokens
  double ratio = 0;                   ///< sys_len / ref_len (0 when ref_len is 0)
  std::vector<bleu_segment> segments;  ///< per prediction, in corpus order
};

/// sacrebleu's `BLEU.compute_bleu` with smooth_method="exp", max order 4, effective_order=False, from summed
/// statistics. Fills every field of the result but `segments`.
inline bleu_result bleu_from_statistics(const std::array<std::int64_t, 4>& correct,
                                        const std::array<std::int64_t, 4>& total, std::int64_t sys_len,
                                        std::int64_t ref_len) {
  bleu_result r;
  r.counts = correct, r.totals = total, r.sys_len = sys_len, r.ref_len = ref_len;
  r.ratio = ref_len ? static_cast<double>(sys_len) / static_cast<double>(ref_len) : 0.0;
  r.brevity_penalty = 1.0;
  if (sys_len < ref_len)
    r.brevity_penalty =
        sys_len > 0 ? std::exp(1.0 - static_cast<double>(ref_len) / static_cast<double>(sys_len)) : 0.0;
  if (std::all_of(correct.begin(), correct.end(), [](std::int64_t c) { return c == 0; })) return r;  // score 0
  double smooth_mteval = 1.0;
  for (std::size_t n = 0; n < 4; ++n) {
    if (total[n] == 0) break;
    if (correct[n] == 0) {
      smooth_mteval *= 2;
      r.precisions[n] = 100.0 / (smooth_mteval * static_cast<double>(total[n]));
    } else {
      r.precisions[n] = 100.0 * static_cast<double>(correct[n]) / static_cast<double>(total[n]);
    }
  }
  double log_sum = 0;  // sacrebleu's my_log floors log(0) at -9999999999
  for (const double p : r.precisions) log_sum += p == 0.0 ? -9999999999.0 : std::log(p);
  r.score = r.brevity_penalty * std::exp(log_sum / 4);
  return r;
}

/// Corpus BLEU-4, equal to `sacrebleu.corpus_bleu(predictions, streams)` with every default (13a tokenizer,
/// smooth_method="exp", lowercase=False, force=False, use_effective_order=False), where stream k holds each
/// prediction's k-th reference or None: a prediction with fewer references is scored against those it has.
/// Per prediction: reference n-gram counts are the maximum over its references, matches are clipped to them,
/// and the reference length is the one closest to the prediction's (the shorter on ties).
/// Throws invalid_argument on an empty corpus, a prediction without references or invalid UTF-8.
inline bleu_result corpus_bleu(const std::vector<std::string>& predictions, const reference_lists& references) {
  detail::check_corpus(predictions, references, "BLEU");
  std::vector<bleu_segment> segments;
  segments.reserve(predictions.size());
  std::array<std::int64_t, 4> correct{}, total{};
  std::int64_t sys_len = 0, ref_len = 0;
  for (std::size_t i = 0; i < predictions.size(); ++i) {
    std::unordered_map<std::string, std::int64_t> ref_max;
    std::vector<std::int64_t> ref_lens;
    for (const auto& ref : references[i]) {
      const auto tokens = split_whitespace(tokenize_13a(ref));
      ref_lens.push_back(static_cast<std::int64_t>(tokens.size()));
      const auto grams = detail::count_ngrams(tokens, 4);
      for (std::size_t k = 0; k < grams.keys.size(); ++k) {
        auto& m = ref_max[grams.keys[k]];
        m = std::max(m, grams.counts[k]);
      }
    }
    const auto hyp_tokens = split_whitespace(tokenize_13a(predictions[i]));
    bleu_segment seg;
    seg.hyp_len = static_cast<std::int64_t>(hyp_tokens.size());
    std::int64_t closest_diff = -1;
    for (const std::int64_t len : ref_lens) {
      const std::int64_t diff = len > seg.hyp_len ? len - seg.hyp_len : seg.hyp_len - len;
      if (closest_diff == -1 || diff < closest_diff) closest_diff = diff, seg.ref_len = len;
      else if (diff == closest_diff && len < seg.ref_len) seg.ref_len = len;
    }
    const auto hyp = detail::count_ngrams(hyp_tokens, 4);
    for (std::size_t k = 0; k < hyp.keys.size(); ++k) {
      const auto n = static_cast<std::size_t>(hyp.orders[k] - 1);
      seg.total[n] += hyp.counts[k];
      if (const auto it = ref_max.find(hyp.keys[k]); it != ref_max.end())
        seg.correct[n] += std::min(hyp.counts[k], it->second);
    }
    sys_len += seg.hyp_len, ref_len += seg.ref_len;
    for (std::size_t n = 0; n < 4; ++n) correct[n] += seg.correct[n], total[n] += seg.total[n];
    segments.push_back(seg);
  }
  bleu_result r = bleu_from_statistics(correct, total, sys_len, ref_len);
  r.segments = std::move(segments);
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// ROUGE-L

/// One rouge-score `Score`: precision = LCS / prediction tokens, recall = LCS / reference tokens, F1.
struct rouge_score {
  double precision = 0, recall = 0, fmeasure = 0;
};

/// Corpus ROUGE-L: per prediction the score against its best reference, and the corpus means.
struct rouge_l_result {
  double fmeasure = 0;   ///< mean over predictions of the best reference's F (the usual "ROUGE-L")
  double precision = 0;  ///< mean precision of those same best references
  double recall = 0;     ///< mean recall of those same best references
  std::vector<rouge_score> per_prediction;  ///< `score_multi(references[i], predictions[i])["rougeL"]`
  std::vector<std::size_t> best_reference;  ///< which reference gave it (the first of equal F, as np.argmax)
};

/// Length of the longest common subsequence of two token lists: rouge-score's `_lcs_table(ref, can)[-1][-1]`,
/// the same dynamic programme kept to two rows.
inline std::size_t lcs_length(const std::vector<std::string>& ref, const std::vector<std::string>& can) {
  std::vector<std::size_t> prev(can.size() + 1, 0), row(can.size() + 1, 0);
  for (std::size_t i = 1; i <= ref.size(); ++i) {
    for (std::size_t j = 1; j <= can.size(); ++j)
      row[j] = ref[i - 1] == can[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], row[j - 1]);
    std::swap(prev, row);
  }
  return prev[can.size()];
}

/// rouge-score's `_score_lcs(target_tokens, prediction_tokens)`: 0 when either side has no tokens.
inline rouge_score rouge_l_tokens(const std::vector<std::string>& reference, const std::vector<std::string>& prediction) {
  rouge_score s;
  if (reference.empty() || prediction.empty()) return s;
  const auto lcs = static_cast<double>(lcs_length(reference, prediction));
  s.precision = lcs / static_cast<double>(prediction.size());
  s.recall = lcs / static_cast<double>(reference.size());
  s.fmeasure = s.precision + s.recall > 0 ? 2 * s.precision * s.recall / (s.precision + s.recall) : 0.0;
  return s;
}

/// `RougeScorer(["rougeL"], use_stemmer=False).score(reference, prediction)["rougeL"]` on UTF-8 text.
inline rouge_score rouge_l_single(std::string_view prediction, std::string_view reference) {
  detail::require_utf8(prediction, "ROUGE-L: the prediction");
  detail::require_utf8(reference, "ROUGE-L: the reference");
  return rouge_l_tokens(tokenize_rouge(reference), tokenize_rouge(prediction));
}

/// Corpus ROUGE-L: for each prediction rouge-score's `score_multi(references[i], predictions[i])` (the reference
/// with the highest F, the first on ties) with the default tokenizer and no stemmer; the corpus values are the
/// plain means of those scores. Throws invalid_argument on an empty corpus, a prediction without references or
/// invalid UTF-8.
inline rouge_l_result rouge_l(const std::vector<std::string>& predictions, const reference_lists& references) {
  detail::check_corpus(predictions, references, "ROUGE-L");
  rouge_l_result r;
  r.per_prediction.reserve(predictions.size());
  r.best_reference.reserve(predictions.size());
  for (std::size_t i = 0; i < predictions.size(); ++i) {
    const auto pred = tokenize_rouge(predictions[i]);
    rouge_score best;
    std::size_t best_k = 0;
    for (std::size_t k = 0; k < references[i].size(); ++k) {
      const rouge_score s = rouge_l_tokens(tokenize_rouge(references[i][k]), pred);
      if (k == 0 || s.fmeasure > best.fmeasure) best = s, best_k = k;
    }
    r.per_prediction.push_back(best);
    r.best_reference.push_back(best_k);
    r.precision += best.precision, r.recall += best.recall, r.fmeasure += best.fmeasure;
  }
  const auto n = static_cast<double>(predictions.size());
  r.precision /= n, r.recall /= n, r.fmeasure /= n;
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// CIDEr-D

/// Options of CIDEr-D; the defaults are pycocoevalcap's (and the COCO caption server's).
struct cider_options {
  int n = 4;             ///< n-gram orders 1..n
  double sigma = 6.0;    ///< width of the Gaussian length penalty
  bool pre_tokenize = true;  ///< apply tokenize_cider first; false: the text is already tokenised (split only)
};

/// Corpus CIDEr-D as pycocoevalcap reports it (not multiplied by 100).
struct cider_result {
  double score = 0;                   ///< mean of the per-prediction scores
  std::vector<double> per_prediction;  ///< pycocoevalcap's `scores` array, in corpus order
};

/// CIDEr-D, equal to pycocoevalcap 1.2's `Cider(n, sigma).compute_score(gts, res)` where gts[i] are the
/// references of prediction i and res[i] = [prediction i], each first tokenised with tokenize_cider and joined
/// by spaces (unless `options.pre_tokenize` is false). As pycocoevalcap (and the COCO server's "CIDEr", which is
/// this CIDEr-D): tf-idf vectors per n-gram order with document frequencies over the whole corpus's references
/// (idf = log(corpus size) - log(max(1, df))); per reference, the clipped cosine sum_g min(h_g, r_g) r_g /
/// (|h| |r|) times exp(-delta^2 / (2 sigma^2)); averaged over orders and references, times 10. As
/// pycocoevalcap, delta is the difference of the two captions' *bigram* counts (its `length` counts n-grams of
/// order 2), and a corpus of one prediction scores 0 (idf = 0). Throws invalid_argument on an empty corpus, a
/// prediction without references, invalid UTF-8 or n < 1.
inline cider_result cider_d(const std::vector<std::string>& predictions, const reference_lists& references,
                            const cider_options& options = {}) {
  detail::check_corpus(predictions, references, "CIDEr-D");
  if (options.n < 1) throw invalid_argument("CIDEr-D: n must be at least 1, got " + std::to_string(options.n));
  const int n = options.n;
  auto cook = [&](const std::string& text) {
    return detail::count_ngrams(options.pre_tokenize ? tokenize_cider(text) : split_whitespace(text), n);
  };
  std::vector<detail::ngram_counts> tests;
  std::vector<std::vector<detail::ngram_counts>> refs(predictions.size());
  tests.reserve(predictions.size());
  std::unordered_map<std::string, double> document_frequency;
  for (std::size_t i = 0; i < predictions.size(); ++i) {
    tests.push_back(cook(predictions[i]));
    std::unordered_set<std::string> seen;
    for (const auto& ref : references[i]) {
      refs[i].push_back(cook(ref));
      for (const auto& key : refs[i].back().keys)
        if (seen.insert(key).second) document_frequency[key] += 1.0;
    }
  }
  const double ref_len = std::log(static_cast<double>(predictions.size()));

  // counts2vec: per order, the tf-idf weight of each n-gram (in first-appearance order), the norms, and the
  // number of bigrams.
  struct tfidf {
    std::vector<std::vector<std::pair<const std::string*, double>>> vec;  // per order
    std::vector<std::unordered_map<std::string_view, double>> lookup;     // per order
    std::vector<double> norm;
    std::int64_t length = 0;
  };
  auto counts2vec = [&](const detail::ngram_counts& c) {
    tfidf v;
    v.vec.resize(static_cast<std::size_t>(n));
    v.lookup.resize(static_cast<std::size_t>(n));
    v.norm.assign(static_cast<std::size_t>(n), 0.0);
    for (std::size_t k = 0; k < c.keys.size(); ++k) {
      const auto it = document_frequency.find(c.keys[k]);
      const double df = std::log(std::max(1.0, it == document_frequency.end() ? 0.0 : it->second));
      const auto order = static_cast<std::size_t>(c.orders[k] - 1);
      const double w = static_cast<double>(c.counts[k]) * (ref_len - df);
      v.vec[order].emplace_back(&c.keys[k], w);
      v.lookup[order].emplace(c.keys[k], w);
      v.norm[order] += std::pow(w, 2);
      if (order == 1) v.length += c.counts[k];
    }
    for (auto& x : v.norm) x = std::sqrt(x);
    return v;
  };
  const double e = 2.718281828459045;  // np.e; Python's float ** is C pow
  cider_result r;
  r.per_prediction.reserve(predictions.size());
  for (std::size_t i = 0; i < predictions.size(); ++i) {
    const tfidf hyp = counts2vec(tests[i]);
    std::vector<double> score(static_cast<std::size_t>(n), 0.0);
    for (const auto& ref_counts : refs[i]) {
      const tfidf ref = counts2vec(ref_counts);
      const auto delta = static_cast<double>(hyp.length - ref.length);
      for (std::size_t o = 0; o < static_cast<std::size_t>(n); ++o) {
        double val = 0;
        for (const auto& [key, w] : hyp.vec[o]) {
          const auto it = ref.lookup[o].find(*key);
          const double rw = it == ref.lookup[o].end() ? 0.0 : it->second;
          val += std::min(w, rw) * rw;
        }
        if (hyp.norm[o] != 0 && ref.norm[o] != 0) val /= hyp.norm[o] * ref.norm[o];
        val *= std::pow(e, -(delta * delta) / (2 * std::pow(options.sigma, 2)));
        score[o] += val;
      }
    }
    double mean = 0;
    for (const double s : score) mean += s;
    mean /= static_cast<double>(n);
    mean /= static_cast<double>(refs[i].size());
    mean *= 10.0;
    r.per_prediction.push_back(mean);
  }
  for (const double s : r.per_prediction) r.score += s;
  r.score /= static_cast<double>(predictions.size());
  return r;
}

}  // namespace qformer::metrics
