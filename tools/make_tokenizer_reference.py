#!/usr/bin/env python3
"""Makes the tokenizer fixtures in tests/data/tokenizer/ with Hugging Face `tokenizers` (and `transformers` for the
T5 file), so the C++ tokenizer can be checked id for id.

    /tmp/refvenv/bin/pip install sentencepiece==0.2.1     # once, beside tools/requirements.txt
    /tmp/refvenv/bin/python tools/make_tokenizer_reference.py [--shared /work/shared/reference/tokenizer]

Writes:
  bpe_tokenizer.json, wordpiece_tokenizer.json, unigram_tokenizer.json, vocab.json, merges.txt, vocab.txt,
  reference.json      copied from the shared reference folder (the three small tokenizers and their fallbacks)
  t5_tokenizer.json   a T5 tokenizer as transformers 5 writes it: a sentencepiece Unigram model trained here with
                      the nmt_nfkc rule, so its normalizer is a real Precompiled charsmap
  t5_legacy_tokenizer.json  the same model in the layout of older Hub T5 files (Precompiled + Replace, Metaspace
                      with add_prefix_space, WhitespaceSplit)
  <name>_tokenizer.json for the other configurations below (added tokens with lstrip / rstrip / single_word,
                      TemplateProcessing, BertProcessing, byte fallback, regex Split, WordLevel ...)
  corpus.json         {"texts": [...], "tokenizers": {name: {"file", "prefix", "suffix", "ids": [...], "decoded": [...],
                      "vocab_size", "token_to_id": {token: id or null}, "id_to_token": {id: token or null},
                      "codepoint_hashes": {context: [...]}}}} -- the last for five tokenizers: every code point,
                      700 to a string, alone / between spaces / between "a"s, FNV-1a of the ids per 64 strings
                      ids[i] is encode(texts[i], add_special_tokens=False); encode(text, True) is prefix + ids +
                      suffix (checked here); decoded[i] is decode(prefix + ids + suffix, skip_special_tokens=True).

Everything is deterministic (fixed seeds; sentencepiece runs single-threaded).
"""

import argparse
import io
import json
import os
import random
import shutil
import struct

import sentencepiece as spm
import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "tokenizer")


# ---------------------------------------------------------------------------------------------------------------
# The corpus

HANDWRITTEN = [
    "a cat sitting on a table", "A photo of a dog.", "Question: what is in the image? Answer:",
    "Two dogs playing in the snow, one of them is brown.", "  Two   dogs,running!", "UPPER lower MiXeD CaSe",
    "don't can't it's I'm we're they've you'll he'd", "DON'T CAN'T IT'S", "rock 'n' roll", "’s ‘quoted’ “double”",
    "'s 't 're 've 'm 'll 'd ''s '' '", "crème brûlée and naïve jalapeño", "Ünïcödé ß ﬁ ﬂ æ œ Ø",
    "e\u0301 a\u0300 o\u0308 n\u0303 c\u0327 (decomposed)", "e\u0301\u0302\u0303 stacked marks",
    "\u0301 leading combining mark", "Å vs A\u030a vs \u212b", "ǅ ǈ ǋ titlecase digraphs", "İstanbul ıi",
    "ΑΒΓ αβγ Σίσυφος ς", "Привет, мир! Ёё", "Ελληνικά και Русский", "مرحبا بالعالم ١٢٣", "שלום עולם",
    "नमस्ते दुनिया क्षत्रिय", "হ্যালো বিশ্ব", "வணக்கம் உலகம்", "สวัสดีชาวโลก", "ສະບາຍດີ", "ሰላም ልዑል",
    "გამარჯობა", "Բարեւ աշխարհ", "東京 and 大阪", "日本語のテキスト、カタカナとひらがな。", "ｶﾀｶﾅ ﾊﾟﾋﾟ 半角",
    "한국어 텍스트 안녕하세요", "\u1100\u1161\u11a8 conjoining jamo", "中文标点：你好，世界！", "𠀀𠀁 CJK ext B",
    "emoji 🐱 and 🐶🐭", "👍🏽 skin tone", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "🇫🇷🇯🇵 flags", "#️⃣ 1️⃣ keycaps",
    "❤️ ❤ ☺️ ✈︎", "©️ ®️ ™", "🫠🥲🦩 newer emoji", "text😀😀😀text", "\U0001F9D1\u200d\U0001F4BB",
    "numbers 12345 and 3.14", "1,000,000.50 $19.99 -42 +7 1e-5", "¹²³ ₁₂₃ ½ ¾ ⅞", "① ② ⑩ Ⅻ ⅻ", "٠١٢٣٤٥٦٧٨٩ ۰۱۲",
    "२०२४ ๒๕๖๗", "phone: +1 (555) 123-4567", "2024-01-15T10:30:00Z", "v1.2.3-beta+build.5",
    "", " ", "  ", "   leading and trailing   ", "\ttab\nnewline", "\r\n windows \r\n", "a\u00a0non-breaking space",
    "thin\u2009space ideographic\u3000space", "line\u2028separator\u2029para", "zero\u200bwidth\u200cjoiners\u200d",
    "\ufeffBOM at start", "vertical\x0btab form\x0cfeed", "\x00nul\x07bell\x1bescape\x7fdel", "\x85next line",
    "soft\u00adhyphen", "\u200e\u200fmarks\u202a\u202e", "\ue000\uf8ff private use", "\U000F0000 plane 15",
    "\u0378\u0379 unassigned", "\ufffe\uffff noncharacters", "\ufffd replacement", "tab\t\t\ttabs", "\n\n\n",
    " \n \n ", "a  b   c    d", "end with space ", "!!!???...", "Hello, world! How are you?", "(parens) [brackets] {braces}",
    "email@example.com https://example.com/path?q=1&r=2#frag", "C++ and C# and F#", "snake_case camelCase kebab-case",
    "x = y + 2 * (z - 1) / 3; // comment", "<html><body>tag</body></html>", "«guillemets» „low quotes“",
    "em—dash en–dash ellipsis…", "§ ¶ † ‡ • ° ± × ÷", "∀x∈ℝ: x²≥0 ∑ ∫ √", "₹ € £ ¥ ₩ ₿", "ＡＢＣ ｆｕｌｌｗｉｄｔｈ １２３",
    "㎞ ㎏ ㏄ ㍻", "ℌ ℑ ℜ 𝐀𝐁𝐂 𝔸𝔹", "ﾟ ﾞ halfwidth marks", "ﬀ ﬃ ﬄ ﬅ ligatures", "a\u0323\u0307 order", "q\u0307\u0323 order",
    "\u1e0b\u0323 vs \u1e0d\u0307", "ḱṷṓn", "Ǆemal", "Ꭰ Cherokee ꭰ", "Ꮳ", "ℓ ℮ ℯ", "ß SS ẞ",
    "<pad> </s> <unk> [CLS] [SEP] [MASK] [PAD] [UNK]", "</s>hello</s>", "<s>start", "[CLS] a cat [SEP]",
    "<extra_id_0> filled <extra_id_1>", "look at <image> here", "an <image>image", "x <mask> y <mask>z",
    "xylophone xylophones unseenword", "the dogs and the dogs", "hello  <sep>  world", "<|begin_of_text|>hi",
    "unseenword xylophone", "a red bus parked in the street", "\U0001d54f\U0001d550", "𝟘𝟙𝟚", "ǰ ΐ ΰ", "ﷺ ﷻ",
    "\u0f73\u0f75\u0f81 tibetan", "\u0344 \u0340 \u0341", "\u0958\u0959 nukta", "\u2126 \u212a \u212b",
]

POOLS = [
    (30, [chr(c) for c in range(0x20, 0x7F)]),
    (10, list(" \t\n\r\u00a0\u3000\u2009") + ["  "]),
    (8, [chr(c) for c in range(0xA0, 0x250)]),
    (6, [chr(c) for c in range(0x300, 0x370)]),
    (6, [chr(c) for c in range(0x370, 0x530)]),
    (4, [chr(c) for c in range(0x590, 0x700)]),
    (4, [chr(c) for c in range(0x900, 0xE00)]),
    (6, [chr(c) for c in range(0x3040, 0x3100)] + [chr(c) for c in range(0x4E00, 0x4F00)]),
    (3, [chr(c) for c in range(0xAC00, 0xAD00)] + [chr(c) for c in range(0x1100, 0x1200)]),
    (4, [chr(c) for c in range(0x1F300, 0x1F700)] + ["\u200d", "\ufe0f", "\U0001F3FD"]),
    (4, [chr(c) for c in range(0xFB00, 0xFB07)] + [chr(c) for c in range(0xFF01, 0xFF70)] + [chr(c) for c in range(0x2460, 0x2500)]),
    (3, [chr(c) for c in range(0x2000, 0x2070)]),
    (2, [chr(c) for c in range(0x0, 0x20)] + ["\x7f", "\x85", "\u00ad", "\ufffd", "\ufeff"]),
]


def random_string(rng, length):
    total = sum(w for w, _ in POOLS)
    out = []
    for _ in range(length):
        r = rng.random() * total
        if rng.random() < 0.03:  # anything at all (but surrogates)
            c = rng.randrange(0x110000 - 0x800)
            out.append(chr(c + 0x800 if c >= 0xD800 else c))
            continue
        for w, pool in POOLS:
            if r < w:
                out.append(rng.choice(pool))
                break
            r -= w
    return "".join(out)


def random_words(rng, n):
    words = ["a", "cat", "dog", "sitting", "on", "the", "table", "red", "bus", "street", "photo", "of", "two", "in",
             "is", "what", "this", "running", "park", "snow", "brown", "Question", "Answer", "I", "don't", "it's",
             "xylophone", "unseenword", "São", "Paulo", "Zürich", "東京", "🐱", "3.14", "2024", "!", ",", "."]
    return " ".join(rng.choice(words) for _ in range(n))


def corpus():
    rng = random.Random(20240917)
    texts = list(HANDWRITTEN)
    for i in range(150):
        texts.append(random_string(rng, rng.choice([1, 2, 3, 5, 8, 13, 21, 40, 80])))
    for i in range(60):
        texts.append(random_words(rng, rng.randrange(1, 30)))
    # Long inputs (several KB).
    texts.append(" ".join(random_words(rng, 40) for _ in range(30)))
    texts.append(random_string(rng, 3000))
    texts.append("a" * 3000)
    texts.append(" " * 2000 + "x" + "\t" * 200)
    texts.append(("The quick brown fox jumps over the lazy dog. " * 60).strip())
    texts.append("".join(chr(c) for c in range(0x20, 0x3000, 3)))
    seen, out = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers

def spm_model(sentences):
    """Trains a tiny sentencepiece Unigram model (nmt_nfkc) and returns (pieces [(piece, score, type)], charsmap)."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buf, vocab_size=400, model_type="unigram",
        normalization_rule_name="nmt_nfkc", hard_vocab_limit=False, character_coverage=0.98, pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, num_threads=1, seed_sentencepiece_size=100000, minloglevel=2)
    data = buf.getvalue()

    def varint(b, i):
        r = s = 0
        while True:
            x = b[i]
            i += 1
            r |= (x & 0x7F) << s
            s += 7
            if x < 0x80:
                return r, i

    def fields(b):  # protobuf wire format, enough for ModelProto
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            f, wt = key >> 3, key & 7
            if wt == 0:
                v, i = varint(b, i)
            elif wt == 1:
                v, i = b[i:i + 8], i + 8
            elif wt == 5:
                v, i = b[i:i + 4], i + 4
            elif wt == 2:
                n, i = varint(b, i)
                v, i = b[i:i + n], i + n
            else:
                raise ValueError("unexpected wire type")
            yield f, v

    pieces, charsmap = [], None
    for f, v in fields(data):
        if f == 1:  # SentencePiece {piece = 1, score = 2, type = 3}
            d = dict(fields(v))
            pieces.append((d[1].decode(), struct.unpack("<f", d.get(2, b"\0\0\0\0"))[0], d.get(3, 1)))
        elif f == 3:  # NormalizerSpec {precompiled_charsmap = 2}
            charsmap = dict(fields(v)).get(2)
    assert charsmap, "no precompiled_charsmap in the trained model"
    return pieces, charsmap


def t5_tokenizers(texts):
    from transformers import T5Tokenizer

    sentences = [t for t in HANDWRITTEN if t.strip()] * 3 + [random_words(random.Random(i), 12) for i in range(300)]
    pieces, charsmap = spm_model(sentences)
    t5 = T5Tokenizer(vocab=[(p, s) for p, s, _ in pieces], _spm_precompiled_charsmap=charsmap, extra_ids=5)
    modern = json.loads(t5.backend_tokenizer.to_str())
    # Older Hub T5 files: Precompiled then Replace, and Metaspace with the legacy add_prefix_space.
    legacy = json.loads(json.dumps(modern))
    legacy["normalizer"] = {"type": "Sequence", "normalizers": [
        modern["normalizer"], {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
    legacy["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}]}
    legacy["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}
    return {"t5": Tokenizer.from_str(json.dumps(modern)), "t5_legacy": Tokenizer.from_str(json.dumps(legacy))}


def derived_tokenizers(shared, texts):
    out = {}
    # OPT style: the small BPE with "</s>" prepended and added tokens of every kind.
    opt = Tokenizer.from_file(os.path.join(shared, "bpe_tokenizer.json"))
    opt.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 1)])
    opt.add_special_tokens([AddedToken("<image>", lstrip=True, normalized=False)])
    opt.add_tokens([AddedToken("dogs", single_word=True), AddedToken(" xylophone", normalized=True),
                    AddedToken("<mask>", rstrip=True, normalized=False)])
    out["opt"] = opt
    # BERT style: the small WordPiece with [CLS] / [SEP] and added tokens.
    bert = Tokenizer.from_file(os.path.join(shared, "wordpiece_tokenizer.json"))
    bert.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    bert.add_tokens([AddedToken("Xylophone", single_word=True, normalized=True)])
    bert.add_special_tokens([AddedToken("<image>", lstrip=True, rstrip=True, normalized=False)])
    out["bert"] = bert
    # Metaspace with prepend_scheme "first" and no split, after an added token.
    meta = Tokenizer.from_file(os.path.join(shared, "unigram_tokenizer.json"))
    meta.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    meta.decoder = decoders.Metaspace(prepend_scheme="first", split=False)
    meta.add_special_tokens([AddedToken("<sep>", normalized=False)])
    out["metaspace_first"] = meta
    # Llama-2 style: BPE with byte fallback, spaces as U+2581 by normalizers, decoder chain.
    train = [t for t in HANDWRITTEN if t.strip()] + [random_words(random.Random(i), 12) for i in range(200)]
    llama = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    llama.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    llama.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=True)
    llama.train_from_iterator(train, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                                         show_progress=False))
    spec = json.loads(llama.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault("<0x%02X>" % b, len(vocab))
    spec["pre_tokenizer"] = None
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    llama = Tokenizer.from_str(json.dumps(spec))
    llama.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    out["llama_byte_fallback"] = llama
    # Llama-3 style: a regex Split (case-insensitive group, counted repetition, lookahead) and byte-level BPE.
    l3 = Tokenizer(models.BPE())
    l3.normalizer = normalizers.NFC()
    l3.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                             behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    l3.decoder = decoders.ByteLevel()
    l3.train_from_iterator(train, trainers.BpeTrainer(vocab_size=700, special_tokens=["<|begin_of_text|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    l3.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                      special_tokens=[("<|begin_of_text|>", 0)])
    out["split_regex"] = l3
    # WordLevel with a normalizer and pre-tokenizer sequence.
    wl = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    wl.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase(),
                                          normalizers.Strip()])
    wl.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.Punctuation()])
    wl.train_from_iterator(train, trainers.WordLevelTrainer(vocab_size=300, special_tokens=["[UNK]"], show_progress=False))
    out["wordlevel"] = wl
    return out


CODEPOINT_TOKENIZERS = ["bpe", "wordpiece", "unigram", "t5", "wordlevel"]
CODEPOINT_CONTEXTS = {"plain": "", "spaced": " ", "after_a": "a"}
CHUNK = 700       # code points per string
GROUP = 64        # strings per hash


def codepoint_strings(joiner):
    """Every code point but the surrogates, CHUNK at a time, joined by `joiner` (and a final U+0301 after "a")."""
    cps = [c for c in range(0x110000) if not (0xD800 <= c <= 0xDFFF)]
    out = []
    for i in range(0, len(cps), CHUNK):
        s = joiner.join(chr(c) for c in cps[i:i + CHUNK])
        out.append(s + "\u0301" if joiner == "a" else s)
    return out


def fnv_ids(h, ids):
    """FNV-1a over id + 1 per token and a separator per string (the C++ test computes the same)."""
    for x in ids + [-1]:
        h ^= (x + 1) & 0xFFFFFFFFFFFFFFFF
        h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def codepoint_hashes(tok):
    """Hashes of encode(s, False) over every code point in three contexts, one hash per GROUP strings."""
    out = {}
    for ctx, joiner in CODEPOINT_CONTEXTS.items():
        strings = codepoint_strings(joiner)
        hashes = []
        for g in range(0, len(strings), GROUP):
            h = 14695981039346656037
            for s in strings[g:g + GROUP]:
                h = fnv_ids(h, tok.encode(s, add_special_tokens=False).ids)
            hashes.append(h)
        out[ctx] = hashes
    return out


def special_affixes(tok):
    """prefix / suffix ids the post-processor adds to a single sequence (from encoding the empty string)."""
    probe = "zq"
    plain = tok.encode(probe, add_special_tokens=False).ids
    full = tok.encode(probe, add_special_tokens=True).ids
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    raise RuntimeError("cannot find the sequence inside its special tokens")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default="/work/shared/reference/tokenizer")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    for name in ["bpe_tokenizer.json", "wordpiece_tokenizer.json", "unigram_tokenizer.json", "vocab.json",
                 "merges.txt", "vocab.txt", "reference.json"]:
        shutil.copyfile(os.path.join(args.shared, name), os.path.join(OUT, name))

    texts = corpus()
    toks = {name: Tokenizer.from_file(os.path.join(args.shared, f"{name}_tokenizer.json"))
            for name in ["bpe", "wordpiece", "unigram"]}
    toks.update(t5_tokenizers(texts))
    toks.update(derived_tokenizers(args.shared, texts))

    result = {"tokenizers_version": tokenizers.__version__, "texts": texts, "tokenizers": {}}
    for name, tok in toks.items():
        file = f"{name}_tokenizer.json"
        if name not in ("bpe", "wordpiece", "unigram"):
            tok.save(os.path.join(OUT, file))
            tok = Tokenizer.from_file(os.path.join(OUT, file))  # exactly what the test reads
        prefix, suffix = special_affixes(tok)
        ids, decoded = [], []
        for text in texts:
            plain = tok.encode(text, add_special_tokens=False).ids
            full = tok.encode(text, add_special_tokens=True).ids
            assert full == prefix + plain + suffix, (name, text)
            ids.append(plain)
            decoded.append(tok.decode(full, skip_special_tokens=True))
        vocab = tok.get_vocab(with_added_tokens=True)
        probe_tokens = sorted(vocab)[:: max(1, len(vocab) // 20)] + ["not-a-token-at-all"]
        result["tokenizers"][name] = {
            "file": file, "prefix": prefix, "suffix": suffix, "ids": ids, "decoded": decoded,
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "token_to_id": {t: tok.token_to_id(t) for t in probe_tokens},
            "id_to_token": {str(i): tok.id_to_token(i) for i in range(0, tok.get_vocab_size() + 3, 17)}}
        if name in CODEPOINT_TOKENIZERS:
            result["tokenizers"][name]["codepoint_hashes"] = codepoint_hashes(tok)
        print(f"{name}: {len(texts)} strings, {sum(map(len, ids))} ids")
    with open(os.path.join(OUT, "corpus.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
