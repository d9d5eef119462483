#!/usr/bin/env python3
"""Generates include/qformer/io/unicode_tables.hpp: the Unicode data the tokenizers need.

    /tmp/refvenv/bin/python tools/gen_unicode_tables.py [--out include/qformer/io/unicode_tables.hpp]

The target is not "Unicode" but "what Hugging Face `tokenizers` does", and that library mixes Unicode versions:
its regexes (onig) know Unicode 16, Rust's `char` methods (whitespace, lowercase) a recent version too, while
`unicode_categories` (BERT's control / punctuation / Mn tests) and its normalization crate (NFD/NFKC) are years
older. Python's `unicodedata` (14.0 with Python 3.11) agrees with none of them exactly: about 9,300 code points
differ for \\p{L} alone, a few hundred for punctuation, Mn, NFKC. So every per-character property is taken by
asking the pinned `tokenizers` (tools/requirements.txt) about each code point, through its public Python API:

  L, N, White_Space, \\w, \\d   onig's \\p{L}, \\p{N}, \\s, \\w, \\d (Replace normalizer with a Regex)
  bert_control            characters BertNormalizer(clean_text) deletes
  bert_punct              characters BertPreTokenizer isolates
  mark_nonspacing         characters BertNormalizer(strip_accents) deletes (Mn)
  combining_mark          characters StripAccents deletes (M*)
  rust_word               characters the Whitespace pre-tokenizer keeps inside a word (Rust regex \\w)
  rust_numeric            characters the Digits pre-tokenizer splits off (Rust's char::is_numeric)
  lowercase               Lowercase of the single character (Rust's to_lowercase)
  NFD / NFKD              full decompositions of the single character
  compositions            pairs (a, b) that NFC composes, among the canonical pairs unicodedata lists
  ccc                     unicodedata's canonical combining class, zeroed where tokenizers does not reorder
Two properties tokenizers does not expose come from elsewhere: the grapheme cluster break classes and
Extended_Pictographic (only the Precompiled normalizer, through the unicode-segmentation crate, uses them) from
the `regex` module (restricted to the code points onig's Unicode 16 assigns, as the crate's tables are Unicode 16),
and ccc / composition candidates from `unicodedata`.

The header is a two-stage table of small property records plus sorted arrays (lowercase, decompositions,
compositions); Hangul syllables are algorithmic and not stored.
"""

import argparse
import os
import sys
import unicodedata

import regex
import tokenizers
from tokenizers import Regex, normalizers, pre_tokenizers

SURROGATES = range(0xD800, 0xE000)
ALL = [c for c in range(0x110000) if c not in SURROGATES]
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3

F_L, F_N, F_WS, F_W, F_BCTRL, F_BPUNCT, F_MN, F_EXTPICT = (1 << i for i in range(8))
GCB = {"Other": 0, "CR": 1, "LF": 2, "Control": 3, "Extend": 4, "ZWJ": 5, "SpacingMark": 6, "Prepend": 7}


def regex_class(pattern):
    """Code points onig's `pattern` matches, by a Replace normalizer over large chunks."""
    out = set()
    mark = "\x01"
    norm = normalizers.Replace(Regex(pattern), mark)
    cps = [c for c in ALL if c != 1]
    for i in range(0, len(cps), 65536):
        chunk = cps[i:i + 65536]
        s = "".join(map(chr, chunk))
        r = norm.normalize_str(s)
        assert len(r) == len(s), pattern
        out.update(c for c, o in zip(chunk, r) if o == mark)
    if normalizers.Replace(Regex(pattern), "\x02").normalize_str("\x01") == "\x02":
        out.add(1)
    return out


def per_char(fn):
    return {c: fn(chr(c)) for c in ALL}


def probe():
    p = {}
    p["L"], p["N"], p["WS_onig"], p["W"], p["ND"] = (regex_class(x) for x in (r"\p{L}", r"\p{N}", r"\s", r"\w", r"\d"))
    strip = normalizers.Strip()
    p["WS"] = {c for c in ALL if strip.normalize_str(chr(c)) == ""}
    if p["WS"] != p["WS_onig"]:
        sys.exit("onig's \\s and Rust's char::is_whitespace differ; the tables assume they agree")
    clean = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False,
                                       lowercase=False)
    p["BCTRL"] = {c for c in ALL if clean.normalize_str(chr(c)) == ""}
    for c in ALL:  # clean_text maps whitespace (and \t \n \r) to ' ' and keeps everything else
        r = clean.normalize_str(chr(c))
        assert r in ("", " ", chr(c)), hex(c)
        assert (r == " ") == (c not in p["BCTRL"] and (c in p["WS"] or c in (9, 10, 13))), hex(c)
    bert = pre_tokenizers.BertPreTokenizer()
    p["BPUNCT"] = {c for c in ALL if c not in p["WS"] and len(bert.pre_tokenize_str("a" + chr(c) + "a")) == 3}
    # BertNormalizer's strip_accents drops Mn (unicode_categories) after NFD: ask it about every code point that
    # NFD leaves alone (the only ones it can meet); StripAccents drops combining marks (M*, an older table).
    bert_sa = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True,
                                         lowercase=False)
    nfd0 = normalizers.NFD()
    p["MN"] = {c for c in ALL if nfd0.normalize_str(chr(c)) == chr(c) and bert_sa.normalize_str(chr(c)) == ""}
    p["MN"] |= {c for c in ALL if nfd0.normalize_str(chr(c)) != chr(c) and unicodedata.category(chr(c)) == "Mn"}
    sa = normalizers.StripAccents()
    p["COMB"] = {c for c in ALL if sa.normalize_str(chr(c)) == ""}
    # The Whitespace pre-tokenizer and added tokens' single_word use Rust's regex crate, whose \w differs from
    # onig's (Join_Control, some marks): a character inside a word keeps "a?a" one piece.
    # The Digits pre-tokenizer uses Rust's char::is_numeric, whose Unicode (17 in 0.23.3) is newer than onig's.
    digits = pre_tokenizers.Digits(individual_digits=True)
    p["RNUM"] = {c for c in ALL if c not in p["WS"] and len(digits.pre_tokenize_str("a" + chr(c) + "a")) == 3}
    ws_pre = pre_tokenizers.Whitespace()
    p["RW"] = {c for c in ALL if len(ws_pre.pre_tokenize_str("a" + chr(c) + "a")) == 1}
    low = normalizers.Lowercase()
    p["lower"] = {c: s for c, s in per_char(low.normalize_str).items() if s != chr(c)}
    nfd, nfkd, nfc = normalizers.NFD(), normalizers.NFKD(), normalizers.NFC()
    p["nfd"] = {c: s for c in ALL if not (HANGUL_FIRST <= c <= HANGUL_LAST) and (s := nfd.normalize_str(chr(c))) != chr(c)}
    p["nfkd"] = {c: s for c in ALL if not (HANGUL_FIRST <= c <= HANGUL_LAST) and (s := nfkd.normalize_str(chr(c))) != chr(c)}
    # Composition pairs: unicodedata's canonical two-part decompositions that tokenizers' NFC recomposes.
    comp = {}
    for c in ALL:
        if HANGUL_FIRST <= c <= HANGUL_LAST:
            continue
        d = unicodedata.decomposition(chr(c))
        if not d or d.startswith("<"):
            continue
        parts = [int(x, 16) for x in d.split()]
        if len(parts) == 2 and nfc.normalize_str(chr(parts[0]) + chr(parts[1])) == chr(c):
            comp[(parts[0], parts[1])] = c
    p["comp"] = comp
    # ccc: unicodedata's, where tokenizers agrees that the mark reorders.
    ccc = {}
    for c in ALL:
        k = unicodedata.combining(chr(c))
        if k == 0 or c in p["nfd"]:
            if k:
                ccc[c] = k  # decomposing marks: their parts carry the classes that matter
            continue
        if k >= 2:
            ok = nfd.normalize_str(chr(c) + "\u0334") == "\u0334" + chr(c)
        else:
            ok = nfd.normalize_str("\u0301" + chr(c)) == chr(c) + "\u0301"
        if ok:
            ccc[c] = k
    p["ccc"] = ccc
    # The regex module may know a newer Unicode than the unicode-segmentation crate (16.0 in tokenizers 0.23):
    # take its classes only for code points onig (Unicode 16) has assigned.
    assigned = set(ALL) - regex_class(r"\p{Cn}")
    gcb = {}
    for name, val in GCB.items():
        if val == 0:
            continue
        rx = regex.compile(r"\p{Grapheme_Cluster_Break=%s}" % name)
        for c in ALL:
            if c in assigned and rx.match(chr(c)):
                gcb[c] = val
    p["gcb"] = gcb
    rx = regex.compile(r"\p{Extended_Pictographic}")
    p["EXTPICT"] = {c for c in ALL if rx.match(chr(c))}
    return p


def report_differences(p):
    """What unicodedata alone would have got wrong (printed, for the record)."""
    cat = lambda c: unicodedata.category(chr(c))
    rows = [
        ("\\p{L}", p["L"], {c for c in ALL if cat(c)[0] == "L"}),
        ("\\p{N}", p["N"], {c for c in ALL if cat(c)[0] == "N"}),
        ("punctuation", p["BPUNCT"], {c for c in ALL if cat(c)[0] == "P" or (c < 128 and chr(c) in
                                       "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")}),
        ("Mn", p["MN"], {c for c in ALL if cat(c) == "Mn"}),
        ("combining marks", p["COMB"], {c for c in ALL if cat(c)[0] == "M"}),
        ("control", p["BCTRL"], {c for c in ALL if cat(c) in ("Cc", "Cf", "Co") and c not in (9, 10, 13)} | {0xFFFD}),
    ]
    out = []
    for name, lib, ud in rows:
        out.append(f"{name}: {len(lib ^ ud)} code points differ from unicodedata {unicodedata.unidata_version}")
    nd = sum(1 for c in ALL if not (HANGUL_FIRST <= c <= HANGUL_LAST)
             and p["nfkd"].get(c, chr(c)) != unicodedata.normalize("NFKD", chr(c)))
    out.append(f"NFKD: {nd} code points differ from unicodedata {unicodedata.unidata_version}")
    return out


def c_array(name, ctype, values, per_line=24):
    lines = []
    for i in range(0, len(values), per_line):
        lines.append("    " + ",".join(str(v) for v in values[i:i + per_line]) + ",")
    return f"inline constexpr {ctype} {name}[{len(values)}] = {{\n" + "\n".join(lines) + "\n};\n"


def build(p):
    records = {}
    rec_of = []
    for c in range(0x110000):
        flags = 0
        if c not in SURROGATES:
            for bit, key in ((F_L, "L"), (F_N, "N"), (F_WS, "WS"), (F_W, "W"), (F_BCTRL, "BCTRL"),
                             (F_BPUNCT, "BPUNCT"), (F_MN, "MN"), (F_EXTPICT, "EXTPICT")):
                if c in p[key]:
                    flags |= bit
        if c in p["ND"]:
            flags |= 1 << 11
        if c in p["COMB"]:
            flags |= 1 << 12
        if c in p["RW"]:
            flags |= 1 << 13
        if c in p["RNUM"]:
            flags |= 1 << 14
        value = flags | (p["gcb"].get(c, 0) << 8) | (p["ccc"].get(c, 0) << 16)
        rec_of.append(records.setdefault(value, len(records)))
    assert len(records) < 256
    block = 128
    blocks, stage1 = {}, []
    for b in range(0, 0x110000, block):
        key = tuple(rec_of[b:b + block])
        stage1.append(blocks.setdefault(key, len(blocks)))
    stage2 = [v for key in sorted(blocks, key=blocks.get) for v in key]
    assert len(blocks) < 65536
    record_values = [v for v, _ in sorted(records.items(), key=lambda kv: kv[1])]

    lower_single = sorted((c, ord(s)) for c, s in p["lower"].items() if len(s) == 1)
    lower_multi = sorted((c, s) for c, s in p["lower"].items() if len(s) != 1)

    pool, decomp = [], []
    for c in sorted(set(p["nfd"]) | set(p["nfkd"])):
        canon = p["nfd"].get(c, chr(c))
        compat = p["nfkd"].get(c, chr(c))
        co = len(pool); pool.extend(map(ord, canon))
        ko = len(pool); pool.extend(map(ord, compat))
        assert len(canon) < 256 and len(compat) < 256
        decomp.append((c, co, len(canon), ko, len(compat)))
    comp = sorted(((a << 21) | b, c) for (a, b), c in p["comp"].items())

    h = []
    h.append("#pragma once\n/// \\file\n/// GENERATED by tools/gen_unicode_tables.py -- do not edit.\n///\n")
    h.append(f"/// Per-code-point behaviour of Hugging Face tokenizers {tokenizers.__version__}, asked of the library itself\n")
    h.append(f"/// (see the script); ccc and composition candidates from Python unicodedata {unicodedata.unidata_version},\n")
    h.append(f"/// grapheme break classes from the regex module {regex.__version__}. What unicodedata alone would give:\n")
    for line in report_differences(p):
        h.append(f"///   {line}\n")
    h.append("\n#include <cstdint>\n\nnamespace qformer::unicode::tables {\n\n")
    h.append("// A record: bits 0-7 flags (L, N, White_Space, \\w, bert_control, bert_punct, Mn, Extended_Pictographic),\n")
    h.append("// bits 8-10 grapheme break class, bit 11 \\d (Nd), bit 12 combining mark (StripAccents), bit 13 Rust regex\n")
    h.append("// \\w, bit 14 Rust char::is_numeric, bits 16-23 canonical combining class.\n")
    h.append(f"inline constexpr int block_shift = {block.bit_length() - 1};\n")
    h.append(c_array("records", "std::uint32_t", record_values))
    h.append(c_array("stage1", "std::uint16_t", stage1))
    h.append(c_array("stage2", "std::uint8_t", stage2, 48))
    h.append("// Single-code-point lowercase mappings (code point, lowercase), sorted.\n")
    h.append(c_array("lower_from", "std::uint32_t", [a for a, _ in lower_single]))
    h.append(c_array("lower_to", "std::uint32_t", [b for _, b in lower_single]))
    h.append("// Lowercase mappings to several code points (rare): from, then the UTF-32 string.\n")
    h.append(c_array("lower_multi_from", "std::uint32_t", [a for a, _ in lower_multi] or [0xFFFFFFFF]))
    h.append("inline constexpr const char32_t* lower_multi_to[] = {" +
             ",".join('U"' + "".join(f"\\U{ord(ch):08X}" for ch in s) + '"' for _, s in lower_multi) + "};\n")
    h.append("// Full decompositions (no Hangul): code point, then offset / length of the canonical (NFD) and the\n")
    h.append("// compatibility (NFKD) decomposition in decomp_pool.\n")
    h.append(c_array("decomp_cp", "std::uint32_t", [d[0] for d in decomp]))
    h.append(c_array("decomp_canon_off", "std::uint16_t", [d[1] for d in decomp]))
    h.append(c_array("decomp_canon_len", "std::uint8_t", [d[2] for d in decomp], 48))
    h.append(c_array("decomp_compat_off", "std::uint16_t", [d[3] for d in decomp]))
    h.append(c_array("decomp_compat_len", "std::uint8_t", [d[4] for d in decomp], 48))
    assert len(pool) < 65536
    h.append(c_array("decomp_pool", "std::uint32_t", pool))
    h.append("// Canonical compositions: key (first << 21 | second), sorted, and the composite.\n")
    h.append(c_array("comp_key", "std::uint64_t", [k for k, _ in comp], 12))
    h.append(c_array("comp_value", "std::uint32_t", [v for _, v in comp]))
    h.append("\n}  // namespace qformer::unicode::tables\n")
    return "".join(h)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "include", "qformer", "io", "unicode_tables.hpp"))
    args = ap.parse_args()
    p = probe()
    text = build(p)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {args.out} ({len(text)} bytes)")
    for line in report_differences(p):
        print(line)


if __name__ == "__main__":
    main()
