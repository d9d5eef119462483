#pragma once
/// \file
/// `qformer eval`'s inputs and output: the predictions / references JSONL files read into a corpus, the three
/// caption metrics of caption_metrics.hpp over it, and the result as JSON.
///
/// Predictions: one JSON object a line, `{"id": ..., "caption": "..."}`. References: `{"id": ..., "captions":
/// ["...", ...]}` with at least one caption. Ids are strings or integers (`7` and `"7"` are different ids); each
/// appears once per file, and the two files hold the same ids, in any order. Other fields are ignored; blank lines
/// are skipped. The corpus follows the predictions file's order. Every problem throws: load_error (file cannot be
/// read, a line is not valid UTF-8 or not a JSON object, no predictions) or config_error (a field is missing or
/// mistyped, an id repeats or has no partner in the other file), with the file and line in the message.

#include "caption_metrics.hpp"

#include <nlohmann/json.hpp>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

namespace qformer::metrics {

/// A corpus read from the two JSONL files.
struct caption_corpus {
  std::vector<nlohmann::json> ids;       ///< in the predictions file's order, as written (string or integer)
  std::vector<std::string> predictions;  ///< predictions[i] is the caption of ids[i]
  reference_lists references;            ///< references[i] are the reference captions of ids[i]
};

/// All three metrics over one corpus.
struct evaluation {
  std::vector<nlohmann::json> ids;  ///< the corpus's ids, in order (empty when evaluated from vectors)
  bleu_result bleu;
  rouge_l_result rouge_l;
  cider_result cider_d;
};

namespace detail {

/// One non-blank line of a JSONL file, parsed: its 1-based line number and the object.
struct jsonl_line {
  std::size_t number;
  nlohmann::json value;
};

/// Reads a JSONL file of JSON objects; load_error names the file and line of whatever is wrong.
inline std::vector<jsonl_line> read_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw load_error(path, "cannot open the file");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw load_error(path, "cannot read the file");
  std::vector<jsonl_line> out;
  std::size_t number = 0;
  for (std::size_t start = 0; start < text.size();) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + start, end - start);
    start = end + 1;
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = "line " + std::to_string(number);
    if (const std::size_t bad = find_invalid_utf8(line); bad != std::string_view::npos)
      throw load_error(path, where + ": not valid UTF-8 (bad byte at column " + std::to_string(bad + 1) + ")");
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw load_error(path, where + ": not valid JSON: " + e.what());
    }
    if (!value.is_object()) throw load_error(path, where + ": expected a JSON object, got " + value.type_name());
    out.push_back({number, std::move(value)});
  }
  return out;
}

/// The id of one line: a string or an integer (config_error otherwise).
inline const nlohmann::json& read_id(const nlohmann::json& obj, const std::string& path, std::size_t line) {
  const auto it = obj.find("id");
  if (it == obj.end()) throw config_error(path, "id", "line " + std::to_string(line) + ": missing");
  if (!it->is_string() && !it->is_number_integer())
    throw config_error(path, "id", "line " + std::to_string(line) + ": must be a string or an integer, got " +
                                       std::string(it->type_name()) + " " + it->dump());
  return *it;
}

/// A string field, checked once more for valid UTF-8 (nlohmann's parser already refuses raw invalid bytes and
/// lone surrogate escapes; the check keeps the guarantee whatever the parser version).
inline std::string read_text(const nlohmann::json& v, const std::string& path, const std::string& field,
                             std::size_t line) {
  const std::string where = "line " + std::to_string(line);
  if (!v.is_string()) throw config_error(path, field, where + ": must be a string, got " + std::string(v.type_name()));
  const auto& s = v.get_ref<const std::string&>();
  if (const std::size_t bad = find_invalid_utf8(s); bad != std::string::npos)
    throw config_error(path, field, where + ": not valid UTF-8 (bad byte at offset " + std::to_string(bad) + ")");
  return s;
}

/// "the string id \"7\"" / "the integer id 7", for messages.
inline std::string describe_id(const nlohmann::json& id) {
  return std::string(id.is_string() ? "the string id " : "the integer id ") + id.dump();
}

/// The same id with the other type, if it parses as one (to hint at `7` vs `"7"` in messages).
inline std::string other_type_key(const nlohmann::json& id) {
  if (id.is_string()) {
    const auto& s = id.get_ref<const std::string&>();
    const auto parsed = nlohmann::json::parse(s, nullptr, false);
    return !parsed.is_discarded() && parsed.is_number_integer() && parsed.dump() == s ? s : std::string();
  }
  return nlohmann::json(id.dump()).dump();
}

}  // namespace detail

/// Reads `qformer eval`'s predictions and references files (see the file comment) into a corpus in the
/// predictions file's order.
inline caption_corpus load_caption_corpus(const std::string& predictions_path, const std::string& references_path) {
  const auto pred_lines = detail::read_jsonl(predictions_path);
  const auto ref_lines = detail::read_jsonl(references_path);
  if (pred_lines.empty()) throw load_error(predictions_path, "no predictions (the file has no JSON lines)");

  // references by id (the id's JSON text, so 7 and "7" differ)
  struct ref_entry {
    std::size_t line;
    nlohmann::json id;
    std::vector<std::string> captions;
    bool used = false;
  };
  std::map<std::string, ref_entry> refs;
  for (const auto& [line, obj] : ref_lines) {
    const auto& id = detail::read_id(obj, references_path, line);
    const std::string where = "line " + std::to_string(line);
    const auto it = obj.find("captions");
    if (it == obj.end()) throw config_error(references_path, "captions", where + ": missing");
    if (!it->is_array())
      throw config_error(references_path, "captions",
                         where + ": must be an array of strings, got " + std::string(it->type_name()));
    if (it->empty()) throw config_error(references_path, "captions", where + ": is empty (at least one caption)");
    ref_entry e{line, id, {}};
    for (std::size_t k = 0; k < it->size(); ++k)
      e.captions.push_back(detail::read_text((*it)[k], references_path, "captions[" + std::to_string(k) + "]", line));
    const auto [pos, inserted] = refs.emplace(id.dump(), std::move(e));
    if (!inserted)
      throw config_error(references_path, "id", where + ": " + detail::describe_id(id) + " repeats line " +
                                                    std::to_string(pos->second.line));
  }

  caption_corpus corpus;
  std::map<std::string, std::size_t> pred_seen;
  for (const auto& [line, obj] : pred_lines) {
    const auto& id = detail::read_id(obj, predictions_path, line);
    const std::string where = "line " + std::to_string(line);
    const auto it = obj.find("caption");
    if (it == obj.end()) throw config_error(predictions_path, "caption", where + ": missing");
    std::string caption = detail::read_text(*it, predictions_path, "caption", line);
    const std::string key = id.dump();
    if (const auto [pos, inserted] = pred_seen.emplace(key, line); !inserted)
      throw config_error(predictions_path, "id", where + ": " + detail::describe_id(id) + " repeats line " +
                                                     std::to_string(pos->second));
    const auto ref = refs.find(key);
    if (ref == refs.end()) {
      std::string hint;
      if (const std::string other = detail::other_type_key(id); !other.empty() && refs.count(other))
        hint = " (it has " + detail::describe_id(refs.at(other).id) + ")";
      throw config_error(references_path, "id",
                         "no references for " + detail::describe_id(id) + " of " + predictions_path + " " + where + hint);
    }
    ref->second.used = true;
    corpus.ids.push_back(id);
    corpus.predictions.push_back(std::move(caption));
    corpus.references.push_back(ref->second.captions);
  }
  for (const auto& [key, e] : refs) {
    if (e.used) continue;
    std::string hint;
    if (const std::string other = detail::other_type_key(e.id); !other.empty() && pred_seen.count(other))
      hint = " (it has " + detail::describe_id(nlohmann::json::parse(other)) + ")";
    throw config_error(predictions_path, "id", "no prediction for " + detail::describe_id(e.id) + " of " +
                                                   references_path + " line " + std::to_string(e.line) + hint);
  }
  return corpus;
}

/// BLEU-4, ROUGE-L and CIDEr-D over a corpus (see caption_metrics.hpp for each metric's definition).
inline evaluation evaluate(const std::vector<std::string>& predictions, const reference_lists& references) {
  evaluation e;
  e.bleu = corpus_bleu(predictions, references);
  e.rouge_l = rouge_l(predictions, references);
  e.cider_d = cider_d(predictions, references);
  return e;
}

/// BLEU-4, ROUGE-L and CIDEr-D over a corpus read with load_caption_corpus.
inline evaluation evaluate(const caption_corpus& corpus) {
  evaluation e = evaluate(corpus.predictions, corpus.references);
  e.ids = corpus.ids;
  return e;
}

/// `qformer eval --predictions P.jsonl --references R.jsonl`: reads both files and evaluates the corpus.
inline evaluation evaluate(const std::string& predictions_path, const std::string& references_path) {
  return evaluate(load_caption_corpus(predictions_path, references_path));
}

/// The evaluation as JSON:
/// `{"count", "bleu": {"score", "precisions", "counts", "totals", "brevity_penalty", "ratio", "sys_len", "ref_len",
///   "tokenize": "13a", "smooth": "exp"}, "rouge_l": {"fmeasure", "precision", "recall", "stemmer": false},
///   "cider_d": {"score", "n", "sigma"}}`; with `per_caption`, also `"per_caption": [{"id", "rouge_l", "cider_d",
/// "bleu_stats": [hyp_len, ref_len, correct x4, total x4]}]` in corpus order (sentence BLEU is not reported:
/// corpus BLEU is not an average of sentence scores).
inline nlohmann::json to_json(const evaluation& e, bool per_caption = false) {
  using nlohmann::json;
  const auto& b = e.bleu;
  json out;
  out["count"] = b.segments.size();
  out["bleu"] = {{"score", b.score},     {"precisions", b.precisions}, {"counts", b.counts},
                 {"totals", b.totals},   {"brevity_penalty", b.brevity_penalty},
                 {"ratio", b.ratio},     {"sys_len", b.sys_len},       {"ref_len", b.ref_len},
                 {"tokenize", "13a"},    {"smooth", "exp"}};
  out["rouge_l"] = {{"fmeasure", e.rouge_l.fmeasure}, {"precision", e.rouge_l.precision},
                    {"recall", e.rouge_l.recall},     {"stemmer", false}};
  out["cider_d"] = {{"score", e.cider_d.score}, {"n", 4}, {"sigma", 6.0}};
  if (per_caption) {
    json rows = json::array();
    for (std::size_t i = 0; i < b.segments.size(); ++i) {
      const auto& s = b.segments[i];
      json stats = json::array({s.hyp_len, s.ref_len});
      for (const auto c : s.correct) stats.push_back(c);
      for (const auto t : s.total) stats.push_back(t);
      json row;
      row["id"] = i < e.ids.size() ? e.ids[i] : json(i);
      row["rouge_l"] = e.rouge_l.per_prediction[i].fmeasure;
      row["cider_d"] = e.cider_d.per_prediction[i];
      row["bleu_stats"] = std::move(stats);
      rows.push_back(std::move(row));
    }
    out["per_caption"] = std::move(rows);
  }
  return out;
}

}  // namespace qformer::metrics
