#!/usr/bin/env python3
"""Makes the caption-metric fixtures in tests/data/metrics/ with the reference Python implementations, so the C++
metrics (include/qformer/metrics/) can be checked value for value.

    /tmp/refvenv/bin/pip install sacrebleu==2.6.0 rouge-score==0.1.2 pycocoevalcap==1.2   # once
    /tmp/refvenv/bin/python tools/make_metrics_reference.py

Writes:
  predictions.jsonl  {"id", "caption"} per line (ids are strings or integers), the corpus of `qformer eval`
  references.jsonl   {"id", "captions": [...]} per line, 1 to 5 captions, in another order than the predictions
  expected.json      what the libraries report on that corpus, in the predictions file's order:
    "bleu"      sacrebleu.corpus_bleu(predictions, padded reference streams) with its defaults (13a, exp smoothing,
                mixed case): score, precisions, counts, totals, bp, sys_len, ref_len, ratio; "segments" holds
                sacrebleu's per-prediction statistics [hyp_len, ref_len, correct x4, total x4]
    "rouge_l"   RougeScorer(["rougeL"], use_stemmer=False).score_multi(refs, pred) per prediction ([p, r, f] of
                the reference with the highest F, first on ties, and its index) and their sequential means
    "cider_d"   pycocoevalcap.cider.Cider().compute_score(gts, res) on the captions pre-tokenised by
                cider_tokenize() below: corpus score and per-prediction scores
    "small"     small corpora for the edges of each formula (no match, short hypotheses, one image ...), each with
                its predictions, references and the same three results
  tokens.json        every distinct caption with its three tokenisations: "bleu" (sacrebleu's 13a preprocessing:
                rstrip + Tokenizer13a), "rouge" (rouge_score's default tokenizer), "cider" (cider_tokenize)

Everything is deterministic (random.Random(20240917)). Python never runs in the build or CI.
"""

import json
import os
import random

import sacrebleu
from sacrebleu.metrics.bleu import BLEU
from rouge_score import rouge_scorer, tokenizers
from pycocoevalcap.cider.cider import Cider

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "metrics")

SEED = 20240917


# ---------------------------------------------------------------------------------------------------------------
# Tokenisation before CIDEr-D. pycocoevalcap expects the output of the COCO PTBTokenizer (Stanford CoreNLP, Java),
# which the C++ library does not need: qformer::metrics::tokenize_cider is this function, and both sides receive
# its tokens. ASCII letters are lower-cased; every ASCII character other than [a-z0-9] and every Unicode
# whitespace character (Python's str.isspace) separates tokens; other non-ASCII characters stay inside tokens.

def cider_tokenize(text):
    tokens, cur = [], []
    for ch in text:
        o = ord(ch)
        if o < 128:
            if "A" <= ch <= "Z":
                cur.append(chr(o + 32))
            elif "a" <= ch <= "z" or "0" <= ch <= "9":
                cur.append(ch)
            elif cur:
                tokens.append("".join(cur))
                cur = []
        elif ch.isspace():
            if cur:
                tokens.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        tokens.append("".join(cur))
    return tokens


# ---------------------------------------------------------------------------------------------------------------
# The corpus

SUBJECTS = ["a man", "a woman", "two dogs", "a cat", "the boy", "a group of people", "an old car", "three birds",
            "a little girl", "a train", "the red bus", "a skateboarder", "two men", "a baby elephant", "a plate",
            "A Man", "THE DOG", "someone"]
VERBS = ["is riding", "sitting on", "standing next to", "walking along", "eating", "holding", "looking at",
         "jumping over", "parked near", "flying above", "lying on", "playing with", "running across", "is on"]
OBJECTS = ["a horse", "the beach", "a wooden bench", "a busy street", "a pizza", "a frisbee", "the fence",
           "a snowy hill", "the water", "a table", "a kitchen counter", "the grass", "a red umbrella", "the ball",
           "a building", "the sidewalk", "a large field"]
TAILS = ["", "", "", " at night", " in the rain", " on a sunny day", " with a dog", " near the city", ", smiling",
         " while talking on the phone", " in front of a house", " together"]
PUNCT_ENDS = ["", "", ".", ".", " .", "!", "?", "...", " !", ";", ":"]
NUMBERS = ["2", "3.5", "1,000", "10-year-old", "5-4", "1990s", "42", "0.75", "3,5", "100%", "$20", "24/7",
           "1st", "2-3", "-7", "9.", "1.2.3"]
UNICODE_BITS = ["café", "naïve", "crème brûlée", "東京", "日本語のテキスト", "🐶", "🐱🐭", "Ünïcödé", "İstanbul",
                "\u212a", "Привет", "e\u0301", "ß", "ＡＢＣ", "１２３", "½", "—", "“quoted”", "’s", "\u00a0",
                "\u3000", "\u2009", "\u0085", "\u200b", "\u00ad"]
EXTRA_PUNCT = [",", "-", "--", "(", ")", "\"", "'", "&", "&amp;", "&quot;", "&lt;", "&gt;", "<skipped>", "/", "@",
               "#", "[", "]", "{", "}", "~", "`", "^", "_", "|", "\\", "*", "+", "=", "<", ">", "$", "%"]


def base_sentence(rng):
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
    return s


def decorate(rng, s):
    """Adds the hard parts at random: numbers, punctuation, unicode, whitespace, case."""
    words = s.split(" ")
    r = rng.random()
    if r < 0.15:
        words.insert(rng.randrange(len(words) + 1), rng.choice(NUMBERS))
    elif r < 0.25:
        words.insert(rng.randrange(len(words) + 1), rng.choice(UNICODE_BITS))
    elif r < 0.33:
        i = rng.randrange(len(words))
        words[i] = words[i] + rng.choice(EXTRA_PUNCT)
    elif r < 0.38:
        i = rng.randrange(len(words))
        words[i] = rng.choice(EXTRA_PUNCT) + words[i]
    sep = " "
    if rng.random() < 0.05:
        sep = rng.choice(["  ", "\t", " \u00a0", "\u3000"])
    s = sep.join(words) + rng.choice(PUNCT_ENDS)
    if rng.random() < 0.08:
        s = rng.choice([" ", "  ", "\t", "\n"]) + s
    if rng.random() < 0.08:
        s = s + rng.choice([" ", "  ", "\t", "\n", "\u00a0", "\u3000", " \n "])
    if rng.random() < 0.05:
        s = s.upper()
    if rng.random() < 0.03:
        s = s.replace(" ", "-\n", 1)
    return s


def perturb(rng, s):
    """A prediction made from a reference: words dropped, swapped, repeated or replaced."""
    words = s.split()
    if not words:
        return s
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if op < 0.25 and len(words) > 1:
            del words[rng.randrange(len(words))]
        elif op < 0.45 and len(words) > 1:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op < 0.65:
            i = rng.randrange(len(words))
            words.insert(i, words[i])
        elif op < 0.85:
            words[rng.randrange(len(words))] = rng.choice(OBJECTS).split()[-1]
        else:
            words.append(rng.choice(OBJECTS).split()[-1])
    return " ".join(words)


HANDWRITTEN = [
    # (prediction, references)
    ("a man riding a horse on the beach", ["a man riding a horse on the beach"]),
    ("a man riding a horse on the beach", ["A man rides a horse along the beach.", "a person on a horse",
                                           "a man riding a horse on the beach", "horse and rider", "beach"]),
    ("", ["a dog running in the grass", "a brown dog runs"]),
    ("   ", ["a cat on a sofa"]),
    (".", ["a cat on a sofa ."]),
    ("a", ["a", "a a"]),
    ("a a a a a a a a", ["a dog and a cat", "a a"]),
    ("the the the the the the the", ["the cat is on the mat", "there is a cat on the mat"]),
    ("dog", ["dog"]),
    ("a dog", ["a dog", ""]),
    ("1,000 people in 1990s, 3.5 km/h... 5-4 win", ["1,000 people at 3.5 km/h", "a 5-4 win in the 1990s."]),
    ("it costs $19.99 (about 20%) & more", ["it costs $19.99 &amp; more", "about 20 % of the price"]),
    ("&quot;quoted&quot; &lt;b&gt; &amp;amp; tag", ["\"quoted\" <b> &amp; tag", "quoted tag"]),
    ("a <skipped> sentence with-\nhyphen", ["a sentence with hyphen", "a sentence withhyphen"]),
    ("line one\nline two", ["line one line two"]),
    ("tab\tseparated\twords", ["tab separated words"]),
    ("U.S.A. e.g. i.e. Mr. Smith's dog", ["the u.s.a. dog of mr. smith", "Mr Smith's dog, e.g. a pug"]),
    ("don't can't it's the dog's bone", ["do not", "the dog 's bone", "it's the dog's bone"]),
    ("café crème brûlée naïve", ["a café with crème brûlée", "cafe creme brulee naive"]),
    ("東京 の 夜景", ["東京 の 夜景", "東京の夜景"]),
    ("a dog 🐶 and a cat 🐱", ["a dog and a cat", "🐶 and 🐱"]),
    ("İstanbul \u212aelvin KELVIN", ["istanbul kelvin", "i̇stanbul k"]),
    ("ＡＢＣ １２３ abc 123", ["abc 123", "ＡＢＣ １２３"]),
    ("no\u00a0break\u3000ideographic\u2009thin space", ["no break ideographic thin space"]),
    ("zero\u200bwidth soft\u00adhyphen", ["zero width soft hyphen", "zerowidth softhyphen"]),
    ("trailing spaces   ", ["trailing spaces", "trailing spaces \u00a0"]),
    ("MiXeD CaSe Caption", ["mixed case caption", "MiXeD CaSe Caption"]),
    ("a man, a plan, a canal: panama!", ["a man a plan a canal panama", "A man, a plan, a canal -- Panama."]),
    ("3.14159 is pi, 2.718 is e.", ["pi is 3.14159", "e is 2.718."]),
    ("x-ray 10-20 x - y a-b-c 5-", ["x ray 10 - 20", "a-b-c x-y"]),
    ("{curly} [square] (round) <angle>", ["curly square round angle", "{curly} [square]"]),
    ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen",
     ["one two three four five", "one two three four five six seven eight nine ten eleven twelve thirteen "
      "fourteen fifteen sixteen seventeen eighteen nineteen twenty"]),
    ("a red bus", ["a red bus parked on the side of a busy street in the middle of the city at night"]),
    ("Привет мир", ["привет мир", "hello world"]),
    ("e\u0301 and é", ["é and é", "e and e"]),
]


def make_corpus(rng, count):
    items = [(p, list(r)) for p, r in HANDWRITTEN]
    while len(items) < count:
        n_refs = rng.randint(1, 5)
        refs = [decorate(rng, base_sentence(rng)) for _ in range(n_refs)]
        kind = rng.random()
        if kind < 0.10:
            pred = rng.choice(refs)  # exact match
        elif kind < 0.55:
            pred = decorate(rng, perturb(rng, rng.choice(refs)))
        elif kind < 0.80:
            pred = decorate(rng, base_sentence(rng))
        elif kind < 0.88:
            pred = rng.choice(["", " ", "a", "the", ".", "a a", "dog", "\u3000", "?", "a man"])
        elif kind < 0.94:
            w = rng.choice(rng.choice(refs).split() or ["a"])
            pred = " ".join([w] * rng.randint(2, 9))
        else:
            pred = " ".join(decorate(rng, base_sentence(rng)) for _ in range(rng.randint(2, 3)))
        items.append((pred, refs))
    return items


# ---------------------------------------------------------------------------------------------------------------
# The reference implementations

def bleu_of(preds, refs):
    max_refs = max(len(r) for r in refs)
    # sacrebleu takes reference streams; a prediction with fewer references has None in the later streams,
    # which sacrebleu drops (metrics/base.py: _cache_references).
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(max_refs)]
    bleu = sacrebleu.corpus_bleu(preds, streams)
    metric = BLEU()
    segments = metric._extract_corpus_statistics(preds, streams)
    # The public API agrees with the statistics it is made of.
    assert abs(metric._aggregate_and_compute(segments).score - bleu.score) < 1e-12
    return {"score": bleu.score, "precisions": list(bleu.precisions), "counts": list(bleu.counts),
            "totals": list(bleu.totals), "bp": bleu.bp, "sys_len": bleu.sys_len, "ref_len": bleu.ref_len,
            "ratio": bleu.ratio, "segments": [list(map(int, s)) for s in segments]}


def rouge_of(preds, refs):
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    per, best = [], []
    for p, r in zip(preds, refs):
        s = scorer.score_multi(r, p)["rougeL"]
        fs = [scorer.score(t, p)["rougeL"].fmeasure for t in r]
        best.append(fs.index(max(fs)))
        per.append([s.precision, s.recall, s.fmeasure])
    mean = [0.0, 0.0, 0.0]
    for row in per:  # plain sequential sums, as the C++ does
        for k in range(3):
            mean[k] += row[k]
    mean = [m / len(per) for m in mean]
    return {"precision": mean[0], "recall": mean[1], "fmeasure": mean[2], "per_prediction": per,
            "best_reference": best}


def cider_of(preds, refs):
    gts = {i: [" ".join(cider_tokenize(t)) for t in r] for i, r in enumerate(refs)}
    res = {i: [" ".join(cider_tokenize(p))] for i, p in enumerate(preds)}
    score, scores = Cider().compute_score(gts, res)
    return {"score": float(score), "per_prediction": [float(s) for s in scores]}


def results(preds, refs):
    return {"bleu": bleu_of(preds, refs), "rouge_l": rouge_of(preds, refs), "cider_d": cider_of(preds, refs)}


SMALL = {
    "one exact match": (["a cat on the mat"], [["a cat on the mat"]]),
    "no match at all": (["x y z w", "p q"], [["a b c d"], ["e f g", "h"]]),
    "short hypotheses": (["a cat", "dog", "the man"], [["a cat on the mat", "a cat"], ["the dog runs"],
                                                        ["the man is here now"]]),
    "no 4-grams": (["a b c", "a b"], [["a b c d e"], ["a b"]]),
    "unigram matches only": (["a x b y c", "q r"], [["a b c d e f"], ["r s t"]]),
    "long hypotheses": (["a dog runs across the big green field near the river today"], [["a dog runs"]]),
    "empty predictions": (["", ""], [["a dog"], ["a cat", "the cat"]]),
    "empty reference": (["a dog"], [["", "a dog runs"]]),
    "two identical": (["a b c d", "a b c d"], [["a b c d"], ["a b c d"]]),
}


def main():
    rng = random.Random(SEED)
    items = make_corpus(rng, 330)
    os.makedirs(OUT, exist_ok=True)

    # ids: strings and integers, never equal across types; references written in another order
    ids = []
    for i in range(len(items)):
        ids.append(i * 7 + 3 if i % 3 == 0 else (f"img_{i:04d}" if i % 3 == 1 else str(100000 + i)))
    with open(os.path.join(OUT, "predictions.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for id_, (p, _) in zip(ids, items):
            f.write(json.dumps({"id": id_, "caption": p}, ensure_ascii=False) + "\n")
    order = list(range(len(items)))
    rng.shuffle(order)
    with open(os.path.join(OUT, "references.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for i in order:
            f.write(json.dumps({"id": ids[i], "captions": items[i][1]}, ensure_ascii=False) + "\n")

    preds = [p for p, _ in items]
    refs = [r for _, r in items]
    expected = results(preds, refs)
    expected["count"] = len(items)
    expected["reference_counts"] = {str(k): sum(len(r) == k for r in refs) for k in range(1, 6)}
    expected["small"] = [{"name": name, "predictions": p, "references": r, **results(p, r)}
                         for name, (p, r) in SMALL.items()]
    expected["versions"] = {"sacrebleu": sacrebleu.__version__, "rouge_score": "0.1.2", "pycocoevalcap": "1.2"}
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=None, separators=(",", ":"))

    bleu_metric = BLEU()
    rouge_tok = tokenizers.DefaultTokenizer(use_stemmer=False)
    texts = sorted(set(preds) | {t for r in refs for t in r} | {t for p, r in SMALL.values() for t in p + sum(r, [])})
    tokens = [{"text": t, "bleu": bleu_metric._preprocess_segment(t), "rouge": rouge_tok.tokenize(t),
               "cider": cider_tokenize(t)} for t in texts]
    with open(os.path.join(OUT, "tokens.json"), "w", encoding="utf-8") as f:
        json.dump(tokens, f, ensure_ascii=False, indent=None, separators=(",", ":"))

    print(f"{len(items)} predictions, references per prediction {expected['reference_counts']}")
    print(f"BLEU {expected['bleu']['score']:.4f}  ROUGE-L {expected['rouge_l']['fmeasure']:.6f}  "
          f"CIDEr-D {expected['cider_d']['score']:.6f}  ({len(texts)} distinct captions tokenised)")


if __name__ == "__main__":
    main()
