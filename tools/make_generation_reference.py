#!/usr/bin/env python3
"""Generation cases for the C++ tests: transformers' generate() on the tiny fixtures with EOS allowed.

The fixtures' own greedy_ids / beam3_ids suppress EOS (min_new_tokens = max_new_tokens), so they never
exercise how generation stops. This script runs the language model of a fixture folder on
[projected queries; prompt] with EOS set to a token the model really produces, across greedy, sampling-free
beam search settings (num_beams, length_penalty, early_stopping), min_new_tokens and repetition_penalty,
and writes every case with transformers' output ids to tests/data/generation/cases.json.

Usage (the venv of tools/requirements.txt):
    python tools/make_generation_reference.py --out tests/data/generation/cases.json \
        tests/data/tiny-opt tests/data/tiny-t5-seed7
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

import make_reference as ref  # same folder: load_blip2, image_features, prepend_queries


def eos_candidates(language_model, embeds, mask, n: int) -> list[int]:
    """Tokens greedy decoding produces (so that making one of them EOS really stops sequences)."""
    ids = ref.greedy_without_cache(language_model, embeds, mask, n)
    seen = []
    for t in ids.flatten().tolist():
        if t not in seen:
            seen.append(t)
    return seen


@torch.no_grad()
def run_case(language_model, embeds, mask, options: dict) -> list[list[int]]:
    out = language_model.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False, **options)
    if language_model.config.is_encoder_decoder:
        out = out[:, 1:]  # drop decoder_start_token_id
    return out.tolist()


def cases_for(folder: Path) -> list[dict]:
    model = ref.load_blip2(folder)
    inputs = load_file(str(folder / "reference.safetensors"))
    lm = model.language_model
    features = ref.image_features(model, inputs["pixel_values"])
    prompt = inputs["prompt_ids"]
    embeds, mask = ref.prepend_queries(features["language_projection"], lm, prompt, torch.ones_like(prompt))
    eos_pool = eos_candidates(lm, embeds, mask, 8)
    pad = lm.config.pad_token_id
    settings = []
    for eos in eos_pool[1:4]:  # tokens that appear after the first step
        settings += [
            {"max_new_tokens": 8, "num_beams": 1, "eos_token_id": eos},
            {"max_new_tokens": 8, "num_beams": 1, "eos_token_id": eos, "min_new_tokens": 3},
            {"max_new_tokens": 8, "num_beams": 1, "eos_token_id": eos, "repetition_penalty": 1.3},
            {"max_new_tokens": 8, "num_beams": 3, "eos_token_id": eos, "early_stopping": True, "length_penalty": 1.0},
            {"max_new_tokens": 8, "num_beams": 3, "eos_token_id": eos, "early_stopping": False, "length_penalty": 1.0},
            {"max_new_tokens": 8, "num_beams": 2, "eos_token_id": eos, "early_stopping": False, "length_penalty": 0.5},
            {"max_new_tokens": 8, "num_beams": 4, "eos_token_id": eos, "early_stopping": True, "length_penalty": 2.0},
            {"max_new_tokens": 8, "num_beams": 3, "eos_token_id": eos, "early_stopping": False, "length_penalty": -1.0},
            {"max_new_tokens": 8, "num_beams": 3, "eos_token_id": eos, "repetition_penalty": 1.5, "min_new_tokens": 2},
        ]
    cases = []
    for options in settings:
        options = {**options, "pad_token_id": pad}
        cases.append({
            "folder": folder.name,
            "prompt_ids": prompt.tolist(),
            "options": options,
            "expected": run_case(lm, embeds, mask, options),
        })
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import transformers
    cases = [c for folder in args.folders for c in cases_for(folder)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"transformers": transformers.__version__, "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
