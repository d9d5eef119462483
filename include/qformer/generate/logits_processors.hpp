#pragma once
/// \file
/// Logits processors and warpers, each one function over a row of scores (V), as transformers applies them:
/// repetition penalty, min-new-tokens EOS suppression, then (sampling only) temperature, top-k, top-p.

#include "options.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

namespace qformer::logits {

inline constexpr float minus_infinity = -std::numeric_limits<float>::infinity();

/// RepetitionPenaltyLogitsProcessor: each distinct token seen so far gets score / p if positive, score * p if not.
inline void repetition_penalty(std::span<float> scores, std::span<const std::int64_t> seen, float penalty) {
  if (penalty == 1.0f) return;
  for (std::int64_t t : seen) {
    if (t < 0 || t >= static_cast<std::int64_t>(scores.size())) continue;
    float& s = scores[static_cast<std::size_t>(t)];
    s = s < 0 ? s * penalty : s / penalty;
  }
}

/// MinNewTokensLengthLogitsProcessor: EOS impossible before min_new_tokens tokens.
inline void suppress_eos(std::span<float> scores, std::span<const std::int64_t> eos_ids) {
  for (std::int64_t e : eos_ids)
    if (e >= 0 && e < static_cast<std::int64_t>(scores.size())) scores[static_cast<std::size_t>(e)] = minus_infinity;
}

/// In-place log-softmax of one row (beam search scores log-probabilities).
inline void log_softmax(std::span<float> scores) {
  const float mx = *std::max_element(scores.begin(), scores.end());
  double sum = 0;
  for (float s : scores) sum += std::exp(double(s) - mx);
  const float log_sum = mx + float(std::log(sum));
  for (float& s : scores) s -= log_sum;
}

/// TemperatureLogitsWarper.
inline void temperature(std::span<float> scores, float t) {
  if (t == 1.0f) return;
  for (float& s : scores) s /= t;
}

/// TopKLogitsWarper: everything below the k-th largest score becomes -inf.
inline void top_k(std::span<float> scores, index_t k) {
  if (k <= 0 || k >= static_cast<index_t>(scores.size())) return;
  std::vector<float> sorted(scores.begin(), scores.end());
  std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<float>());
  const float kth = sorted[static_cast<std::size_t>(k - 1)];
  for (float& s : scores)
    if (s < kth) s = minus_infinity;
}

/// TopPLogitsWarper: keep the smallest set of most likely tokens whose probability reaches p (at least one).
inline void top_p(std::span<float> scores, float p) {
  if (p >= 1.0f) return;
  std::vector<std::size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
  const float mx = scores[order[0]];
  double total = 0;
  for (float s : scores) total += std::exp(double(s) - mx);
  // transformers sorts ascending and removes tokens whose cumulative probability is <= 1 - p.
  double cumulative_from_top = 0;
  std::size_t keep = 0;
  for (; keep < order.size(); ++keep) {
    cumulative_from_top += std::exp(double(scores[order[keep]]) - mx) / total;
    if (cumulative_from_top >= p) {
      ++keep;
      break;
    }
  }
  for (std::size_t i = std::max<std::size_t>(keep, 1); i < order.size(); ++i) scores[order[i]] = minus_infinity;
}

}  // namespace qformer::logits
