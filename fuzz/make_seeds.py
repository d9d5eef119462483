#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora, fuzz/corpus/<target>/, from the test fixtures (standard library only).

Seeds are small on purpose (libFuzzer mutates faster and the committed corpus stays small): tiny safetensors files
written here byte by byte, the fixtures' config and index files, the small tokenizer.json fixtures, and the small
images of tests/data. Run from the repository root: python3 fuzz/make_seeds.py
"""

import json
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CORPUS = ROOT / "fuzz" / "corpus"


def safetensors(tensors: list[tuple[str, str, list[int], bytes]], metadata: dict | None = None) -> bytes:
    header, offset, blob = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blob += data
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + blob


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    out = {t: CORPUS / t for t in ("safetensors", "checkpoint_index", "config", "tokenizer", "image")}
    for d in out.values():
        d.mkdir(parents=True)

    f32 = struct.pack("<6f", 0.5, -1.0, 2.0, 3.5, -0.25, 1e-3)
    seeds = {
        "f32.safetensors": safetensors([("w", "F32", [2, 3], f32)]),
        "mixed.safetensors": safetensors([("a.weight", "F32", [3], f32[:12]), ("b", "F16", [2, 2], b"\x00\x3c" * 4),
                                          ("c", "BF16", [4], b"\x80\x3f" * 4), ("ids", "I64", [1], struct.pack("<q", 7))],
                                         {"format": "pt"}),
        "scalar_and_empty.safetensors": safetensors([("s", "F32", [], f32[:4]), ("e", "F32", [0, 5], b"")]),
        "empty.safetensors": safetensors([]),
    }
    for name, data in seeds.items():
        (out["safetensors"] / name).write_bytes(data)

    (out["checkpoint_index"] / "valid.json").write_bytes((DATA / "tiny-opt-sharded" / "model.safetensors.index.json").read_bytes())
    index = json.loads((DATA / "tiny-opt-sharded" / "model.safetensors.index.json").read_text())
    some = dict(list(index["weight_map"].items())[:3])
    (out["checkpoint_index"] / "three.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": some}))

    for folder in ("tiny-opt", "tiny-t5", "tiny-retrieval", "tiny-opt-hub", "tiny-t5-hub", "tiny-retrieval-hub"):
        (out["config"] / f"{folder}.json").write_bytes((DATA / folder / "config.json").read_bytes())
    (out["config"] / "preprocessor.json").write_bytes((DATA / "preprocess" / "preprocessor_config.json").read_bytes())
    processor = DATA / "tiny-opt-hub" / "processor_config.json"
    if processor.exists():
        (out["config"] / "processor.json").write_bytes(processor.read_bytes())

    texts = ["a red circle and a blue square", "Hello, World! It's 3.14 -- ok?", "h\u00e9llo \u65e5\u672c \U0001F600",
             "  leading and trailing  ", "<image><image> what is this?", "\u00c5ngstr\u00f6m \uff21\uff22 \u0301x"]
    for i, text in enumerate(texts):
        (out["tokenizer"] / f"text{i}").write_bytes(bytes([0, i]) + text.encode())
    (out["tokenizer"] / "invalid_utf8").write_bytes(b"\x00\x03" + b"ab\xff\xfe\xc3(")
    for name in ("wordpiece", "wordlevel", "bert", "unigram", "metaspace_first", "bpe", "opt"):
        (out["tokenizer"] / f"{name}.json").write_bytes(b"\x01" + (DATA / "tokenizer" / f"{name}_tokenizer.json").read_bytes())

    for path in sorted((DATA / "preprocess").iterdir()):
        if path.suffix in (".png", ".jpg") and path.stat().st_size <= 8192:
            shutil.copy(path, out["image"] / path.name)
    for path in sorted((DATA / "images").glob("*.png")):
        shutil.copy(path, out["image"] / path.name)


if __name__ == "__main__":
    main()
