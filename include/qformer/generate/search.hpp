#pragma once
/// \file
/// Decoding strategies over any `decoding_session` (a language model with its KV cache and masks):
/// greedy, sampling (temperature, top-k, top-p, seeded) and beam search with transformers' semantics
/// (length penalty, early stopping, EOS hypotheses only from the top num_beams candidates). Finished rows
/// are fed `pad_token_id`, as transformers does, so batched generation never reads a finished row's logits.

#include "../core/context.hpp"
#include "logits_processors.hpp"
#include "options.hpp"

#include <algorithm>
#include <concepts>
#include <random>
#include <span>
#include <vector>

namespace qformer {

/// A language model ready to decode: `step` feeds one token per row and returns the next logits (batch, V) in
/// ctx's arena; `select` rebuilds the rows (beam reorder / expansion).
template <class S>
concept decoding_session = requires(S& s, context<cpu>& ctx, std::span<const std::int64_t> tokens, std::span<const index_t> rows) {
  { s.batch() } -> std::convertible_to<index_t>;
  { s.step(ctx, tokens) } -> std::convertible_to<view<float>>;
  { s.select(ctx, rows) };
};

/// Generated tokens: (batch, length) row-major, rows shorter than `length` filled with pad_token_id.
struct generation_result {
  index_t batch = 0, length = 0;
  std::vector<std::int64_t> ids;
  std::vector<float> scores;  // beam search: each returned sequence's length-normalised score
  std::span<const std::int64_t> row(index_t b) const { return {ids.data() + b * length, static_cast<std::size_t>(length)}; }
};

namespace generation_detail {

inline bool is_eos(std::int64_t t, const generation_options& o) {
  return std::find(o.eos_token_ids.begin(), o.eos_token_ids.end(), t) != o.eos_token_ids.end();
}

/// First index of the largest score (torch.argmax's choice among ties).
inline std::int64_t argmax(std::span<const float> s) {
  return std::max_element(s.begin(), s.end()) - s.begin();
}

inline std::int64_t sample(std::span<float> s, std::mt19937_64& rng) {
  const float mx = *std::max_element(s.begin(), s.end());
  double total = 0;
  for (float& x : s) total += (x = float(std::exp(double(x) - mx)));
  double u = std::uniform_real_distribution<double>(0.0, total)(rng);
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] > 0 && (u -= s[i]) <= 0) return static_cast<std::int64_t>(i);
  }
  return argmax(s);
}

/// Copies logits (rows, V) into a host buffer so the arena can be released before the next step.
inline void take(view<const float> logits, std::vector<float>& out) {
  out.resize(static_cast<std::size_t>(logits.rows() * logits.cols()));
  for (index_t r = 0; r < logits.rows(); ++r) std::copy_n(logits.row(r), logits.cols(), out.data() + r * logits.cols());
}

}  // namespace generation_detail

/// Greedy or sampled decoding. first_logits (B, V): the model's prediction after the prompt. `history[b]` holds
/// the tokens the repetition penalty counts as seen (the prompt ids), may be empty.
template <decoding_session S>
generation_result generate_greedy_or_sample(context<cpu>& ctx, S& session, view<const float> first_logits,
                                            const std::vector<std::vector<std::int64_t>>& history, const generation_options& o) {
  o.validate();
  const index_t B = first_logits.rows(), V = first_logits.cols();
  std::vector<std::vector<std::int64_t>> seen = history;
  seen.resize(static_cast<std::size_t>(B));
  std::vector<std::vector<std::int64_t>> out(static_cast<std::size_t>(B));
  std::vector<bool> finished(static_cast<std::size_t>(B), false);
  std::mt19937_64 rng(o.seed);
  std::vector<float> scores;
  generation_detail::take(first_logits, scores);
  std::vector<std::int64_t> tokens(static_cast<std::size_t>(B));
  for (index_t step = 0; step < o.max_new_tokens; ++step) {
    for (index_t b = 0; b < B; ++b) {
      std::span<float> row(scores.data() + b * V, static_cast<std::size_t>(V));
      logits::repetition_penalty(row, seen[b], o.repetition_penalty);
      if (step < o.min_new_tokens) logits::suppress_eos(row, o.eos_token_ids);
      std::int64_t t;
      if (o.do_sample) {
        logits::temperature(row, o.temperature);
        logits::top_k(row, o.top_k);
        logits::top_p(row, o.top_p);
        t = generation_detail::sample(row, rng);
      } else {
        t = generation_detail::argmax(row);
      }
      if (finished[b]) t = o.pad_token_id;
      else out[b].push_back(t), seen[b].push_back(t);
      if (generation_detail::is_eos(t, o)) finished[b] = true;
      tokens[b] = t;
    }
    if (std::all_of(finished.begin(), finished.end(), [](bool f) { return f; }) || step + 1 == o.max_new_tokens) break;
    typename context<cpu>::scope scope(ctx);
    generation_detail::take(session.step(ctx, tokens), scores);
  }
  generation_result r;
  r.batch = B;
  for (const auto& row : out) r.length = std::max<index_t>(r.length, static_cast<index_t>(row.size()));
  r.ids.assign(static_cast<std::size_t>(B * r.length), o.pad_token_id);
  for (index_t b = 0; b < B; ++b) std::copy(out[b].begin(), out[b].end(), r.ids.begin() + b * r.length);
  return r;
}

/// Beam search. first_logits (B, V); the session holds B rows and is expanded to B * num_beams here.
template <decoding_session S>
generation_result generate_beam(context<cpu>& ctx, S& session, view<const float> first_logits,
                                const std::vector<std::vector<std::int64_t>>& history, const generation_options& o) {
  o.validate();
  const index_t B = first_logits.rows(), V = first_logits.cols(), K = o.num_beams;
  if (o.max_new_tokens == 0) return generation_result{B, 0, {}, std::vector<float>(static_cast<std::size_t>(B), 0.0f)};
  struct hypothesis {
    std::vector<std::int64_t> tokens;
    float score;
  };
  auto normalised = [&](float sum_logprobs, index_t length) {
    return sum_logprobs / std::pow(float(std::max<index_t>(length, 1)), o.length_penalty);
  };

  // Rows b*K + k. Every beam starts from the prompt; only beam 0 may expand at the first step.
  std::vector<index_t> rows(static_cast<std::size_t>(B * K));
  for (index_t i = 0; i < B * K; ++i) rows[i] = i / K;
  std::vector<float> scores;
  generation_detail::take(first_logits, scores);
  std::vector<float> expanded(static_cast<std::size_t>(B * K * V));
  for (index_t i = 0; i < B * K; ++i) std::copy_n(scores.data() + rows[i] * V, V, expanded.data() + i * V);
  scores.swap(expanded);
  session.select(ctx, rows);

  std::vector<float> beam_score(static_cast<std::size_t>(B * K), -1e9f);
  for (index_t b = 0; b < B; ++b) beam_score[b * K] = 0.0f;
  std::vector<std::vector<std::int64_t>> beam_tokens(static_cast<std::size_t>(B * K));
  std::vector<std::vector<std::int64_t>> seen(static_cast<std::size_t>(B * K));
  for (index_t i = 0; i < B * K; ++i)
    if (rows[i] < static_cast<index_t>(history.size())) seen[i] = history[rows[i]];
  std::vector<std::vector<hypothesis>> finished(static_cast<std::size_t>(B));
  std::vector<bool> done(static_cast<std::size_t>(B), false);

  auto add_hypothesis = [&](index_t b, std::vector<std::int64_t> tokens, float sum_logprobs, index_t length) {
    auto& hyps = finished[b];
    hyps.push_back({std::move(tokens), normalised(sum_logprobs, length)});
    std::stable_sort(hyps.begin(), hyps.end(), [](const hypothesis& x, const hypothesis& y) { return x.score > y.score; });
    if (static_cast<index_t>(hyps.size()) > K) hyps.pop_back();
  };

  std::vector<std::int64_t> next_tokens(static_cast<std::size_t>(B * K));
  std::vector<index_t> next_rows(static_cast<std::size_t>(B * K));
  std::vector<float> next_scores(static_cast<std::size_t>(B * K));
  std::vector<std::pair<float, std::int64_t>> candidates;
  for (index_t step = 0; step < o.max_new_tokens; ++step) {
    const index_t generated = step + 1;  // tokens per hypothesis after this step
    const bool last_step = generated == o.max_new_tokens;
    const std::vector<bool> was_done = done;
    for (index_t b = 0; b < B; ++b) {
      if (done[b]) {  // keep the rows alive with pad tokens, as transformers does
        for (index_t k = 0; k < K; ++k) next_tokens[b * K + k] = o.pad_token_id, next_rows[b * K + k] = b * K + k, next_scores[b * K + k] = 0;
        continue;
      }
      candidates.clear();
      for (index_t k = 0; k < K; ++k) {
        const index_t r = b * K + k;
        std::span<float> row(scores.data() + r * V, static_cast<std::size_t>(V));
        logits::log_softmax(row);
        logits::repetition_penalty(row, seen[r], o.repetition_penalty);
        if (step < o.min_new_tokens) logits::suppress_eos(row, o.eos_token_ids);
        for (index_t v = 0; v < V; ++v) candidates.emplace_back(row[v] + beam_score[r], k * V + v);
      }
      // transformers keeps max(2, 1 + number of EOS ids) * num_beams candidates so enough non-EOS ones remain.
      const index_t keep = std::max<index_t>(2, 1 + static_cast<index_t>(o.eos_token_ids.size())) * K;
      const std::size_t top = std::min<std::size_t>(candidates.size(), static_cast<std::size_t>(keep));
      std::partial_sort(candidates.begin(), candidates.begin() + top, candidates.end(),
                        [](const auto& x, const auto& y) { return x.first != y.first ? x.first > y.first : x.second < y.second; });
      index_t kept = 0;
      for (std::size_t rank = 0; rank < top && kept < K; ++rank) {
        const auto [score, index] = candidates[rank];
        const index_t from = b * K + index / V;
        const std::int64_t token = index % V;
        // A candidate that stops (EOS, or any at the length limit) becomes a hypothesis only from the top
        // num_beams ranks; it never continues.
        if (generation_detail::is_eos(token, o) || last_step) {
          if (static_cast<index_t>(rank) >= K) continue;
          std::vector<std::int64_t> tokens = beam_tokens[from];
          tokens.push_back(token);
          add_hypothesis(b, std::move(tokens), score, generated);
          continue;
        }
        next_tokens[b * K + kept] = token, next_rows[b * K + kept] = from, next_scores[b * K + kept] = score;
        ++kept;
      }
      for (; kept < K; ++kept)  // fewer continuations than beams (tiny vocabularies): dead beams
        next_tokens[b * K + kept] = o.pad_token_id, next_rows[b * K + kept] = b * K, next_scores[b * K + kept] = -1e9f;
      // Done: early stopping once K hypotheses exist; otherwise when no running beam can beat the worst kept one.
      if (static_cast<index_t>(finished[b].size()) >= K) {
        if (o.early_stopping) done[b] = true;
        else {
          const float best_running = *std::max_element(next_scores.begin() + b * K, next_scores.begin() + (b + 1) * K);
          done[b] = finished[b].back().score >= normalised(best_running, generated);
        }
      }
    }
    // Reorder the beams' histories and the model's rows.
    std::vector<std::vector<std::int64_t>> new_tokens(static_cast<std::size_t>(B * K)), new_seen(static_cast<std::size_t>(B * K));
    for (index_t i = 0; i < B * K; ++i) {
      new_tokens[i] = beam_tokens[next_rows[i]];
      new_seen[i] = seen[next_rows[i]];
      if (!was_done[i / K]) new_tokens[i].push_back(next_tokens[i]), new_seen[i].push_back(next_tokens[i]);
      beam_score[i] = next_scores[i];
    }
    beam_tokens.swap(new_tokens);
    seen.swap(new_seen);
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; }) || step + 1 == o.max_new_tokens) break;
    typename context<cpu>::scope scope(ctx);
    session.select(ctx, next_rows);
    generation_detail::take(session.step(ctx, next_tokens), scores);
  }
  generation_result r;
  r.batch = B;
  for (index_t b = 0; b < B; ++b) r.length = std::max<index_t>(r.length, static_cast<index_t>(finished[b].front().tokens.size()));
  // transformers fills beam outputs with `pad_token_id or eos_token_id[0]`: a pad id of 0 (T5's) is falsy there,
  // so such rows are filled with EOS. Reproduced for identical ids.
  const std::int64_t fill = (o.pad_token_id == 0 && !o.eos_token_ids.empty()) ? o.eos_token_ids.front() : o.pad_token_id;
  r.ids.assign(static_cast<std::size_t>(B * r.length), fill);
  for (index_t b = 0; b < B; ++b) {
    std::copy(finished[b].front().tokens.begin(), finished[b].front().tokens.end(), r.ids.begin() + b * r.length);
    r.scores.push_back(finished[b].front().score);
  }
  return r;
}

/// Dispatches on the options: beam search when num_beams > 1, else greedy or sampling.
template <decoding_session S>
generation_result generate(context<cpu>& ctx, S& session, view<const float> first_logits,
                           const std::vector<std::vector<std::int64_t>>& history, const generation_options& o) {
  return o.num_beams > 1 ? generate_beam(ctx, session, first_logits, history, o)
                         : generate_greedy_or_sample(ctx, session, first_logits, history, o);
}

}  // namespace qformer
