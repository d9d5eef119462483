#!/usr/bin/env python3
"""Writes tests/data/broken/: hostile and broken inputs, each with the error qformer must give.

Every case is a file or a model folder plus an entry of manifest.json:
    {"name": ..., "kind": "safetensors" | "model" | "tokenizer" | "image" | "prompt", "path": ..., "error": the
     qformer exception type, "contains": [substrings the message must hold: the file and the field or tensor]}
tests/test_broken_inputs.cpp loads each through the public API and checks the type and the message; it also runs
the CLI on each and checks a non-zero exit with one line on stderr that names the file.

    kind         loaded by                                                         CLI
    safetensors  safetensors_file(path), then every tensor read                    qformer inspect --model PATH
    model        Blip2<float>::from_pretrained(path)                               qformer caption --model PATH --image ok
    tokenizer    tokenizer::from_file(path)                                        qformer tokenize --tokenizer PATH
    image        load_image(path) + BlipImageProcessor                              qformer caption --image PATH
    prompt       Blip2Pipeline(tests/data/tiny-opt-hub).generate with the file's bytes as the prompt

The model folders are a micro BLIP-2 (OPT) made by transformers' own classes (a few KB), then broken. The
expectations are the behaviour the project specifies, written here by hand, not read back from qformer.

Run with the venv of tools/requirements.txt: python tools/make_broken_corpus.py
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "broken"
cases: list[dict] = []


def case(name: str, kind: str, path: str, error: str, *contains: str) -> None:
    cases.append({"name": name, "kind": kind, "path": path, "error": error, "contains": list(contains)})


def write(rel: str, data: bytes | str) -> Path:
    p = OUT / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


# ---- safetensors ---------------------------------------------------------------------------------------------

def st(header: dict | bytes | str, data: bytes = b"", length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


F32x6 = struct.pack("<6f", *range(6))


def safetensors_cases() -> None:
    def one(name, data, error, *contains):
        write(f"safetensors/{name}.safetensors", data)
        case(f"safetensors: {name}", "safetensors", f"safetensors/{name}.safetensors", error,
             f"{name}.safetensors", *contains)

    ok = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}
    one("empty", b"", "load_error", "too short")
    one("short_length", b"\x10\x00\x00", "load_error", "too short")
    one("header_length_past_end", st(ok, F32x6, length=4096), "load_error", "header length 4096", "past the end")
    one("header_length_huge", st(ok, F32x6, length=(1 << 63) + 5), "load_error", "header length", "past the end")
    one("header_not_json", st(b"{\"w\": {\"dtype\": \"F32\", ", F32x6), "load_error", "not valid JSON")
    one("header_array", st([1, 2, 3], F32x6), "load_error", "not a JSON object")
    one("missing_dtype", st({"w": {"shape": [2, 3], "data_offsets": [0, 24]}}, F32x6), "load_error", "tensor 'w'", "dtype")
    one("unknown_dtype", st({"w": {"dtype": "F7", "shape": [2, 3], "data_offsets": [0, 24]}}, F32x6), "load_error",
        "tensor 'w'", "unknown dtype 'F7'")
    one("dtype_number", st({"w": {"dtype": 32, "shape": [2, 3], "data_offsets": [0, 24]}}, F32x6), "load_error",
        "tensor 'w'", "dtype")
    one("shape_not_array", st({"w": {"dtype": "F32", "shape": 6, "data_offsets": [0, 24]}}, F32x6), "load_error",
        "tensor 'w'", "shape")
    one("negative_dim", st({"w": {"dtype": "F32", "shape": [-2, -3], "data_offsets": [0, 24]}}, F32x6), "load_error",
        "tensor 'w'", "negative")
    one("shape_overflow", st({"w": {"dtype": "F32", "shape": [1 << 40, 1 << 40, 1 << 40], "data_offsets": [0, 24]}},
                             F32x6), "load_error", "tensor 'w'", "overflows")
    one("rank_5", st({"w": {"dtype": "F32", "shape": [1, 1, 2, 3, 1], "data_offsets": [0, 24]}}, F32x6), "load_error",
        "tensor 'w'", "rank 5")
    one("offsets_reversed", st({"w": {"dtype": "F32", "shape": [0], "data_offsets": [24, 0]}}, F32x6), "load_error",
        "tensor 'w'", "reversed")
    one("offsets_past_data", st({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}, F32x6[:20]),
        "load_error", "tensor 'w'", "past the data section")
    one("offsets_negative", st({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [-4, 20]}}, F32x6), "load_error",
        "tensor 'w'", "data_offsets")
    one("size_mismatch", st({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 24]}}, F32x6), "load_error",
        "tensor 'w'", "needs 16 bytes")
    one("overlapping", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                           "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, F32x6), "load_error",
        "tensor 'b'", "overlaps")
    one("gap", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}, F32x6), "load_error",
        "tensor 'b'", "gap")
    one("trailing_bytes", st(ok, F32x6 + b"\x00" * 8), "load_error", "data section is 32 bytes")
    one("metadata_not_object", st({"__metadata__": ["pt"], **ok}, F32x6), "load_error", "__metadata__")
    one("metadata_value_number", st({"__metadata__": {"format": 1}, **ok}, F32x6), "load_error", "__metadata__",
        "'format'")


# ---- model folders ---------------------------------------------------------------------------------------------

def micro_model() -> Path:
    """A micro Blip2ForConditionalGeneration (OPT) saved by transformers, the base of the model cases."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration
    config = Blip2Config(
        vision_config=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        qformer_config=dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                            encoder_hidden_size=8, vocab_size=16, max_position_embeddings=16),
        text_config=dict(model_type="opt", hidden_size=8, ffn_dim=16, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=32, max_position_embeddings=16, word_embed_proj_dim=8, bos_token_id=2,
                         eos_token_id=2, pad_token_id=1),
        num_query_tokens=2)
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config).eval()
    base = OUT / "_micro"
    model.save_pretrained(base)
    return base


def model_cases() -> None:
    from safetensors.numpy import load_file, save_file
    base = micro_model()
    config = json.loads((base / "config.json").read_text())
    weights = load_file(str(base / "model.safetensors"))

    def folder(name: str, cfg: dict | str | None = None, tensors: dict | None = None) -> str:
        d = OUT / "models" / name
        d.mkdir(parents=True, exist_ok=True)
        if cfg is not None:
            (d / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=1))
        if tensors is not None:
            save_file(tensors, str(d / "model.safetensors"))
        return f"models/{name}"

    def with_field(path: list[str], value) -> dict:
        c = json.loads(json.dumps(config))
        node = c
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return c

    def config_case(name, path, value, error, *contains):
        rel = folder(name, with_field(path, value), weights if error == "shape_error" else None)
        blamed = "model.safetensors" if error == "shape_error" else "config.json"
        case(f"config: {name}", "model", rel, error, f"{name}/{blamed}", *contains)

    # config.json
    rel = folder("config_not_json", '{"model_type": "blip-2", "vision_config": {', weights)
    case("config: not JSON", "model", rel, "config_error", "config_not_json/config.json", "not valid JSON")
    rel = folder("config_array", "[1, 2, 3]", weights)
    case("config: root is an array", "model", rel, "config_error", "config_array/config.json", "object")
    config_case("hidden_size_string", ["vision_config", "hidden_size"], "8", "config_error", "vision_config.hidden_size")
    config_case("layers_negative", ["qformer_config", "num_hidden_layers"], -1, "config_error",
                "qformer_config.num_hidden_layers")
    config_case("layers_billion", ["text_config", "num_hidden_layers"], 1_000_000_000, "config_error",
                "text_config.num_hidden_layers", "limit")
    config_case("width_zero", ["qformer_config", "hidden_size"], 0, "config_error", "qformer_config.hidden_size")
    config_case("width_absurd", ["vision_config", "hidden_size"], 1 << 40, "config_error", "vision_config.hidden_size")
    config_case("heads_do_not_divide", ["vision_config", "num_attention_heads"], 3, "config_error",
                "vision_config.num_attention_heads")
    config_case("unknown_text_model", ["text_config", "model_type"], "gpt9", "config_error", "text_config.model_type",
                "gpt9")
    config_case("query_tokens_absurd", ["num_query_tokens"], 10 ** 12, "config_error", "num_query_tokens")
    config_case("vocab_negative", ["text_config", "vocab_size"], -5, "config_error", "text_config.vocab_size")
    config_case("eps_string", ["vision_config", "layer_norm_eps"], "1e-6", "config_error", "vision_config.layer_norm_eps")
    config_case("patch_larger_than_image", ["vision_config", "patch_size"], 32, "config_error", "vision_config")
    # sizes a config may claim, which the weights then contradict: fail on the first tensor, before allocating
    config_case("ffn_huge_vs_weights", ["text_config", "ffn_dim"], 400_000, "shape_error",
                "model.safetensors", "fc1.weight")

    # weights
    missing = {k: v for k, v in weights.items() if k != "qformer.encoder.layer.0.crossattention.attention.key.weight"}
    rel = folder("tensor_missing", config, missing)
    case("weights: a tensor is missing", "model", rel, "load_error", "tensor_missing/model.safetensors",
         "qformer.encoder.layer.0.crossattention.attention.key.weight")
    transposed = dict(weights)
    name = "language_model.model.decoder.layers.0.fc1.weight"
    transposed[name] = weights[name].T.copy()
    rel = folder("tensor_transposed", config, transposed)
    case("weights: a tensor is transposed", "model", rel, "shape_error", "tensor_transposed/model.safetensors", name,
         "[8, 16]", "expected [16, 8]")
    wrong_type = dict(weights)
    wrong_type["vision_model.post_layernorm.weight"] = weights["vision_model.post_layernorm.weight"].astype("int32")
    rel = folder("tensor_integer", config, wrong_type)
    case("weights: an integer tensor where floats belong", "model", rel, "load_error", "tensor_integer/model.safetensors",
         "vision_model.post_layernorm.weight", "I32")
    rel = folder("no_weights", config)
    case("weights: no safetensors in the folder", "model", rel, "load_error", "no_weights", "model.safetensors")
    rel = folder("no_config", None, weights)
    case("config: missing config.json", "model", rel, "load_error", "no_config/config.json")

    # sharded folders
    names = sorted(weights)
    half = len(names) // 2

    def sharded(name: str, index: dict | str, shards: dict[str, list[str]]) -> str:
        rel = folder(name, config)
        d = OUT / rel
        for shard, members in shards.items():
            save_file({k: weights[k] for k in members}, str(d / shard))
        (d / "model.safetensors.index.json").write_text(index if isinstance(index, str) else json.dumps(index, indent=1))
        return rel

    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {k: s for s, ks in shards.items() for k in ks}
    rel = sharded("index_missing_shard", {"weight_map": {**weight_map, names[0]: "model-00003-of-00002.safetensors"}},
                  shards)
    case("index: a shard that does not exist", "model", rel, "load_error", "index_missing_shard/model.safetensors.index.json",
         "model-00003-of-00002.safetensors")
    rel = sharded("index_outside_folder", {"weight_map": {**weight_map, names[0]: "../tensor_missing/model.safetensors"}},
                  shards)
    case("index: a shard path outside the model folder", "model", rel, "load_error",
         "index_outside_folder/model.safetensors.index.json", "../tensor_missing/model.safetensors")
    rel = sharded("index_not_json", '{"weight_map": {"a": ', shards)
    case("index: not JSON", "model", rel, "load_error", "index_not_json/model.safetensors.index.json", "not valid JSON")
    rel = sharded("index_lies", {"weight_map": {**weight_map, names[-1]: "model-00001-of-00002.safetensors"}}, shards)
    case("index: names a tensor its shard does not hold", "model", rel, "load_error",
         "index_lies/model-00001-of-00002.safetensors", names[-1])
    shutil.rmtree(base)


# ---- tokenizers ------------------------------------------------------------------------------------------------

def tokenizer_cases() -> None:
    good = json.loads((ROOT / "tests" / "data" / "tokenizer" / "wordpiece_tokenizer.json").read_text())

    def one(name, data, error, *contains):
        write(f"tokenizers/{name}.json", data if isinstance(data, str) else json.dumps(data))
        case(f"tokenizer: {name}", "tokenizer", f"tokenizers/{name}.json", error, f"{name}.json", *contains)

    def changed(path: list, value):
        j = json.loads(json.dumps(good))
        node = j
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return j

    text = json.dumps(good)
    one("not_json", "this is not JSON", "load_error", "not valid JSON")
    one("truncated", text[: len(text) // 2], "load_error", "not valid JSON")
    one("unknown_model", changed(["model", "type"], "Transformer9"), "config_error", "'model.type'", "Transformer9")
    one("vocab_is_list", changed(["model", "vocab"], ["a", "b"]), "config_error", "'model.vocab'")
    one("vocab_id_negative", changed(["model", "vocab", "[UNK]"], -3), "config_error", "model.vocab[\"[UNK]\"]")
    one("unknown_normalizer", changed(["normalizer"], {"type": "Sparkle"}), "config_error", "'normalizer.type'",
        "Sparkle")
    one("bad_split_regex", changed(["pre_tokenizer"], {"type": "Split", "pattern": {"Regex": "(ab"},
                                                        "behavior": "Isolated", "invert": False}),
        "config_error", "'pre_tokenizer.pattern.Regex'", "(ab")
    one("added_token_id_string", changed(["added_tokens"], [{"id": "zero", "content": "[PAD]", "special": True}]),
        "config_error", "'added_tokens[0].id'")


# ---- images ----------------------------------------------------------------------------------------------------

def png(width: int, height: int, rows: bytes | None, colour_type: int = 2, depth: int = 8) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
    if rows is not None:
        out += chunk(b"IDAT", zlib.compress(rows))
    return out + chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, a quantisation table, SOF0 claiming width x height, and nothing after."""
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([1] * 64)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + dqt + sof + b"\xff\xd9"


def image_cases() -> None:
    def one(name, data, error, *contains):
        write(f"images/{name}", data)
        case(f"image: {name}", "image", f"images/{name}", error, name, *contains)

    valid = png(4, 3, b"".join(b"\x00" + bytes([200, 30, 30] * 4) for _ in range(3)))
    one("empty.png", b"", "load_error", "empty")
    one("text.png", "this is a text file, not an image\n", "load_error", "not a PNG or JPEG")
    one("truncated.png", valid[: len(valid) - 30], "load_error", "cannot decode")
    one("huge_header.png", png(200000, 200000, None), "load_error", "200000 x 200000", "89478485")
    one("huge_header.jpg", jpeg_header(60000, 60000), "load_error", "60000 x 60000", "89478485")
    one("zero_width.png", png(0, 3, b""), "load_error", "PNG header")
    one("animation.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "load_error", "not a PNG or JPEG")
    one("garbage_after_header.jpg", jpeg_header(16, 16)[:-2] + bytes(range(256)) * 4, "load_error", "cannot decode")


# ---- prompts ----------------------------------------------------------------------------------------------------

def prompt_cases() -> None:
    write("prompts/invalid_utf8.txt", b"a photo of \xff\xfe a \xc3(")
    case("prompt: invalid UTF-8", "prompt", "prompts/invalid_utf8.txt", "encoding_error", "not valid UTF-8", "offset 11")
    write("prompts/too_long.txt", " ".join(["circle"] * 600))
    case("prompt: longer than the language model's positions", "prompt", "prompts/too_long.txt", "invalid_argument",
         "max_position_embeddings")


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    safetensors_cases()
    model_cases()
    tokenizer_cases()
    image_cases()
    prompt_cases()
    (OUT / "manifest.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")
    for p in OUT.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    print(f"{len(cases)} cases in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
