#!/usr/bin/env python3
"""Regenerate, create and shard the tiny BLIP-2 reference fixtures of the C++ tests.

A fixture folder is a Hugging Face Hub-style checkpoint plus the reference data the
C++ tests compare against:

    config.json                 Blip2Config (as written by save_pretrained)
    generation_config.json      only for Blip2ForConditionalGeneration
    model.safetensors           weights (or model-0000k-of-0000N.safetensors + index)
    reference.safetensors       inputs and every intermediate output (fp32 / int64)
    reference.json              shapes, seed, versions and "how" the tensors were made

Everything is computed with transformers on the CPU in fp32 (pins: requirements.txt
next to this file; install with `pip install -r tools/requirements.txt`).

Subcommands
-----------
regenerate DIR [--out FILE] [--check]
    Load DIR with transformers, read the *inputs* from DIR/reference.safetensors and
    recompute every output tensor. Writes FILE (default DIR/reference.safetensors) and
    prints max|diff| per tensor against the reference that was there. With --check
    nothing is written and the exit status is 1 if a float differs by more than
    --tolerance or an id differs. Used to confirm that the fixtures still agree with the
    pinned transformers, or to refresh them after a deliberate upgrade.

new --kind {opt,opt-hub-layout,t5,retrieval} --seed N --out DIR [size flags]
    Build a tiny random BLIP-2 of that kind (weights scaled so activations are O(1)),
    draw random inputs and write a complete fixture folder. The size flags default to
    the shapes of the shared folders (tiny-opt, tiny-opt-hub-layout, tiny-t5,
    tiny-retrieval); the same seed does not reproduce their weights, though.

shard DIR --out DIR2 --shards N
    Copy a fixture folder, splitting model.safetensors into N files
    model-0000k-of-0000N.safetensors plus model.safetensors.index.json, as the Hub does
    for big checkpoints. Every other file is copied unchanged.

What is in reference.safetensors
--------------------------------
Conditional generation (OPT and T5 language models):
    pixel_values [B,3,S,S], prompt_ids [B,T]               inputs
    vision_last_hidden_state, vision_pooler_output           vision tower
    qformer_last_hidden_state, language_projection           Q-Former, projection
    lm_logits                                                OPT: logits over [queries; prompt]
                                                             T5: first decoder step [B,1,V]
    greedy_ids [B,n_new]                                     greedy decode, no KV cache
    padded_prompt_ids, padded_prompt_mask                    inputs (not for opt-hub-layout)
    padded_lm_logits (OPT only), padded_greedy_ids           same with the padded prompts
    beam3_ids [B,n_new]                                      generate(num_beams=3, ...)
The query outputs are *prepended* to the prompt embeddings (original BLIP-2 order, no
<image> placeholder tokens), the attention mask is ones over the queries followed by the
prompt mask. OPT prompts are left-padded (pads between queries and text); T5 prompts end
with </s> and are right-padded, as the T5 tokenizer does.

Image-text retrieval:
    pixel_values, input_ids, attention_mask                  inputs
    itm_logits [B,2]                                         use_image_text_matching_head=True
    itc_logits_per_image [B,B], itc_image_embeds, itc_text_embeds   ITC branch

Checkpoint layout note: the "hub layout" fixture stores the vision attention biases as
separate ...self_attn.q_bias / v_bias (as raw LAVIS/EVA checkpoints do) instead of the
fused qkv.bias. transformers 5.17 does not convert those keys: it reports them as
unexpected and initialises qkv.bias to zeros. load_blip2() therefore folds them into
qkv.bias = [q_bias, 0, v_bias] itself, which is what the references assume.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval

FLOAT_TOLERANCE = 1e-5
KINDS = ("opt", "opt-hub-layout", "t5", "retrieval")
SINGLE_FILE_WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
REFERENCE_TENSORS = "reference.safetensors"
REFERENCE_JSON = "reference.json"

GENERATION_HOW = {
    "opt": (
        "fp32 CPU; query outputs prepended to the prompt embeddings (original BLIP-2 order); "
        "greedy decode without cache; padded_*: same images, prompts left-padded (mask 0 = pad) "
        "between the queries and the text; beam3_ids: language model generate(num_beams=3, "
        "length_penalty=1, early_stopping=True, exactly n_new tokens) on the same embeddings"
    ),
    "t5": (
        "fp32 CPU; query outputs prepended to the prompt embeddings (original BLIP-2 order) as the "
        "T5 encoder input; lm_logits: first decoder step from decoder_start_token_id [B,1,V]; "
        "greedy decode without cache, ids exclude the decoder start token; padded_*: same images, "
        "prompts (ending in </s>) right-padded (mask 0 = pad) after the text; beam3_ids: language "
        "model generate(num_beams=3, length_penalty=1, early_stopping=True, exactly n_new tokens) "
        "on the same embeddings, decoder start token removed"
    ),
}
RETRIEVAL_HOW = (
    "fp32 CPU; itm_logits: forward(use_image_text_matching_head=True).logits_per_image; itc_*: "
    "forward(use_image_text_matching_head=False) logits_per_image, image_embeds, text_embeds"
)


# ---------------------------------------------------------------------------------------
# Checkpoint files
# ---------------------------------------------------------------------------------------


def weight_files(folder: Path) -> list[Path]:
    """The safetensors weight files of a Hub folder, sharded or not."""
    index = folder / SHARD_INDEX
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    single = folder / SINGLE_FILE_WEIGHTS
    if single.exists():
        return [single]
    raise FileNotFoundError(f"{folder} has neither {SINGLE_FILE_WEIGHTS} nor {SHARD_INDEX}")


def read_weights(folder: Path, keep=lambda name: True) -> dict[str, torch.Tensor]:
    """Read the checkpoint tensors whose name passes `keep`, across all shards."""
    tensors = {}
    for path in weight_files(folder):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                if keep(name):
                    tensors[name] = f.get_tensor(name)
    return tensors


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """save_file, leaving the file readable by everyone like the other fixture files."""
    save_file(tensors, str(path), metadata=metadata)
    path.chmod(0o644)


# ---------------------------------------------------------------------------------------
# Loading a fixture with transformers
# ---------------------------------------------------------------------------------------


def is_retrieval_config(config: dict) -> bool:
    return "Blip2ForImageTextRetrieval" in config.get("architectures", [])


def load_blip2(folder: Path):
    """Load a fixture folder as Blip2ForConditionalGeneration or Blip2ForImageTextRetrieval.

    Separate vision q_bias / v_bias keys (hub layout) are folded into qkv.bias =
    [q_bias, 0, v_bias]. Any other missing, unexpected or mis-shaped key is an error.
    """
    config = json.loads((folder / "config.json").read_text())
    model_class = Blip2ForImageTextRetrieval if is_retrieval_config(config) else Blip2ForConditionalGeneration
    model, info = model_class.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    model.eval()

    split_biases = read_weights(folder, keep=lambda n: n.endswith((".self_attn.q_bias", ".self_attn.v_bias")))
    folded = fold_split_qkv_biases(model, split_biases)

    missing = set(info["missing_keys"]) - folded
    unexpected = set(info["unexpected_keys"]) - set(split_biases)
    if missing or unexpected or info["mismatched_keys"]:
        raise RuntimeError(
            f"{folder}: checkpoint does not match {model_class.__name__}: missing={sorted(missing)} "
            f"unexpected={sorted(unexpected)} mismatched={sorted(info['mismatched_keys'])}"
        )
    if folded:
        print(f"  folded q_bias/v_bias into qkv.bias for {len(folded)} vision layers")
    return model


@torch.no_grad()
def fold_split_qkv_biases(model, split_biases: dict[str, torch.Tensor]) -> set[str]:
    """Set every vision qkv.bias to [q_bias, 0, v_bias] where the checkpoint has split biases.

    Returns the names of the qkv.bias parameters that were set.
    """
    folded = set()
    for prefix in sorted({name.rsplit(".", 1)[0] for name in split_biases}):
        q_bias = split_biases[f"{prefix}.q_bias"]
        v_bias = split_biases[f"{prefix}.v_bias"]
        qkv_name = f"{prefix}.qkv.bias"
        model.get_parameter(qkv_name).copy_(torch.cat([q_bias, torch.zeros_like(q_bias), v_bias]))
        folded.add(qkv_name)
    return folded


# ---------------------------------------------------------------------------------------
# Computing the reference outputs
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def image_features(model, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Vision tower, Q-Former over the query tokens, and language projection."""
    vision = model.vision_model(pixel_values=pixel_values)
    image_embeds = vision.last_hidden_state
    queries = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
    qformer = model.qformer(
        query_embeds=queries,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long),
    )
    return {
        "vision_last_hidden_state": image_embeds,
        "vision_pooler_output": vision.pooler_output,
        "qformer_last_hidden_state": qformer.last_hidden_state,
        "language_projection": model.language_projection(qformer.last_hidden_state),
    }


def prepend_queries(projected_queries, language_model, prompt_ids, prompt_mask):
    """Language-model input: [projected queries; prompt embeddings] and its attention mask."""
    embeds = torch.cat([projected_queries, language_model.get_input_embeddings()(prompt_ids)], dim=1)
    query_mask = torch.ones(projected_queries.shape[:2], dtype=torch.long)
    return embeds, torch.cat([query_mask, prompt_mask], dim=1)


@torch.no_grad()
def first_logits(language_model, embeds, mask) -> torch.Tensor:
    """OPT: logits at every input position. T5: logits of the first decoder step."""
    if language_model.config.is_encoder_decoder:
        start = torch.full((embeds.shape[0], 1), language_model.config.decoder_start_token_id)
        return language_model(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=start).logits
    return language_model(inputs_embeds=embeds, attention_mask=mask).logits


@torch.no_grad()
def greedy_without_cache(language_model, embeds, mask, n_new: int) -> torch.Tensor:
    """Greedy decoding of exactly n_new tokens, re-running the full sequence every step.

    No EOS stopping. For T5 the returned ids exclude the decoder start token.
    """
    if language_model.config.is_encoder_decoder:
        decoder_ids = torch.full((embeds.shape[0], 1), language_model.config.decoder_start_token_id)
        for _ in range(n_new):
            logits = language_model(
                inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_ids, use_cache=False
            ).logits
            decoder_ids = torch.cat([decoder_ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        return decoder_ids[:, 1:]

    token_embedding = language_model.get_input_embeddings()
    new_ids = []
    for _ in range(n_new):
        logits = language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        next_id = logits[:, -1].argmax(-1)
        new_ids.append(next_id)
        embeds = torch.cat([embeds, token_embedding(next_id)[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(new_ids, dim=1)


@torch.no_grad()
def beam3(language_model, embeds, mask, n_new: int) -> torch.Tensor:
    """generate(num_beams=3) producing exactly n_new new tokens.

    Given inputs_embeds only, a decoder-only generate returns just the new tokens; a T5
    generate returns the decoder start token followed by them. Keep the last n_new.
    """
    ids = language_model.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        num_beams=3,
        length_penalty=1.0,
        early_stopping=True,
        do_sample=False,
        max_new_tokens=n_new,
        min_new_tokens=n_new,
    )
    return ids[:, -n_new:]


def compute_generation_reference(model, inputs: dict[str, torch.Tensor], n_new: int) -> dict[str, torch.Tensor]:
    """Every output of a Blip2ForConditionalGeneration fixture, in reference order."""
    language_model = model.language_model
    is_t5 = language_model.config.is_encoder_decoder
    features = image_features(model, inputs["pixel_values"])
    projected = features["language_projection"]

    prompt_ids = inputs["prompt_ids"]
    embeds, mask = prepend_queries(projected, language_model, prompt_ids, torch.ones_like(prompt_ids))
    out = {"pixel_values": inputs["pixel_values"], "prompt_ids": prompt_ids, **features}
    out["lm_logits"] = first_logits(language_model, embeds, mask)
    out["greedy_ids"] = greedy_without_cache(language_model, embeds, mask, n_new)

    if "padded_prompt_ids" in inputs:
        padded_ids, padded_mask = inputs["padded_prompt_ids"], inputs["padded_prompt_mask"]
        padded_embeds, padded_full_mask = prepend_queries(projected, language_model, padded_ids, padded_mask)
        out["padded_prompt_ids"] = padded_ids
        out["padded_prompt_mask"] = padded_mask
        if not is_t5:
            out["padded_lm_logits"] = first_logits(language_model, padded_embeds, padded_full_mask)
        out["padded_greedy_ids"] = greedy_without_cache(language_model, padded_embeds, padded_full_mask, n_new)

    out["beam3_ids"] = beam3(language_model, embeds, mask, n_new)
    return out


@torch.no_grad()
def compute_retrieval_reference(model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ITM and ITC outputs of a Blip2ForImageTextRetrieval fixture, in reference order."""
    pixel_values, input_ids, attention_mask = inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
    itm = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                use_image_text_matching_head=True)
    itc = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                use_image_text_matching_head=False)
    return {
        "pixel_values": pixel_values,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "itm_logits": itm.logits_per_image,
        "itc_logits_per_image": itc.logits_per_image,
        "itc_image_embeds": itc.image_embeds,
        "itc_text_embeds": itc.text_embeds,
    }


def compute_reference(model, inputs: dict[str, torch.Tensor], n_new: int) -> dict[str, torch.Tensor]:
    if isinstance(model, Blip2ForImageTextRetrieval):
        out = compute_retrieval_reference(model, inputs)
    else:
        out = compute_generation_reference(model, inputs, n_new)
    return {name: tensor.detach().contiguous() for name, tensor in out.items()}


# ---------------------------------------------------------------------------------------
# Comparing references
# ---------------------------------------------------------------------------------------


def compare_references(new: dict, old: dict, tolerance: float) -> bool:
    """Print max|diff| per tensor (ids: number of differing entries); True if all agree."""
    all_ok = True
    for name in sorted(new.keys() | old.keys()):
        if name not in old or name not in new:
            print(f"  {name:28s} only in the {'new' if name in new else 'old'} reference")
            all_ok = False
            continue
        a, b = new[name], old[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            print(f"  {name:28s} shape/dtype {tuple(a.shape)} {a.dtype} vs old {tuple(b.shape)} {b.dtype}")
            all_ok = False
        elif a.dtype.is_floating_point:
            diff = (a - b).abs().max().item() if a.numel() else 0.0
            ok = diff <= tolerance
            all_ok &= ok
            print(f"  {name:28s} {tuple(a.shape)!s:16s} max|diff| = {diff:.3g}{'' if ok else '  <-- over tolerance'}")
        else:
            differing = int((a != b).sum())
            all_ok &= differing == 0
            verdict = "identical" if differing == 0 else f"{differing} ids differ  <--"
            print(f"  {name:28s} {tuple(a.shape)!s:16s} {verdict}")
    return all_ok


# ---------------------------------------------------------------------------------------
# regenerate
# ---------------------------------------------------------------------------------------

INPUT_NAMES = ("pixel_values", "prompt_ids", "padded_prompt_ids", "padded_prompt_mask", "input_ids", "attention_mask")


def regenerate(folder: Path, out_file: Path | None, check_only: bool, tolerance: float) -> int:
    """Recompute every output of FOLDER from the inputs stored in its reference.safetensors.

    The model is loaded from FOLDER (single-file or sharded weights, fused or split vision
    qkv biases); n_new comes from reference.json. Prints max|diff| per tensor against the
    stored reference, then writes the new one to OUT (default FOLDER/reference.safetensors),
    or with --check writes nothing and exits 1 if the difference exceeds the tolerance.
    reference.json is left as it is.
    """
    old = load_file(str(folder / REFERENCE_TENSORS))
    inputs = {name: old[name] for name in INPUT_NAMES if name in old}
    meta_path = folder / REFERENCE_JSON
    n_new = json.loads(meta_path.read_text()).get("n_new", 8) if meta_path.exists() else 8

    print(f"{folder}:")
    new = compute_reference(load_blip2(folder), inputs, n_new)
    agrees = compare_references(new, old, tolerance)
    if check_only:
        print("  agrees with the stored reference" if agrees else "  DIFFERS from the stored reference")
        return 0 if agrees else 1

    out_file = out_file or folder / REFERENCE_TENSORS
    write_safetensors(new, out_file)
    print(f"  wrote {out_file}")
    return 0


# ---------------------------------------------------------------------------------------
# new
# ---------------------------------------------------------------------------------------

# Defaults per kind, matching the shared fixture folders.
KIND_DEFAULTS = {
    "opt": dict(qformer_layers=3, num_query_tokens=6, cross_attention_frequency=2, prompt_len=4),
    "opt-hub-layout": dict(qformer_layers=2, num_query_tokens=4, cross_attention_frequency=2, prompt_len=2),
    "t5": dict(qformer_layers=2, num_query_tokens=5, cross_attention_frequency=1, prompt_len=4),
    "retrieval": dict(qformer_layers=2, num_query_tokens=6, cross_attention_frequency=2, prompt_len=6),
}
COMMON_DEFAULTS = dict(
    batch=2, n_new=8, image_size=28, patch_size=7,
    vision_hidden=48, vision_intermediate=96, vision_layers=2, vision_heads=4,
    qformer_hidden=32, qformer_intermediate=64, qformer_heads=4, qformer_vocab=120,
    text_hidden=40, text_ffn=80, text_layers=2, text_heads=4, text_vocab=300,
    t5_ffn=72, image_text_hidden=24,
)

OPT_BOS, OPT_PAD = 2, 1
T5_PAD, T5_EOS = 0, 1
BERT_PAD = 0


def build_config(kind: str, s: argparse.Namespace) -> Blip2Config:
    """Blip2Config for a tiny model of the given kind (fields as in the shared folders)."""
    vision = dict(
        hidden_size=s.vision_hidden, intermediate_size=s.vision_intermediate,
        num_hidden_layers=s.vision_layers, num_attention_heads=s.vision_heads,
        image_size=s.image_size, patch_size=s.patch_size,
        initializer_range=1e-10,  # unused: new_fixture() sets every weight itself
    )
    qformer = dict(
        hidden_size=s.qformer_hidden, intermediate_size=s.qformer_intermediate,
        num_hidden_layers=s.qformer_layers, num_attention_heads=s.qformer_heads,
        cross_attention_frequency=s.cross_attention_frequency, vocab_size=s.qformer_vocab,
        max_position_embeddings=64, use_qformer_text_input=(kind == "retrieval"),
    )
    if kind == "retrieval":
        text = None  # the retrieval model has no language model; Blip2Config's OPT default
    elif kind == "t5":
        text = dict(
            model_type="t5", vocab_size=s.text_vocab, d_model=s.text_hidden,
            d_kv=s.text_hidden // s.text_heads, d_ff=s.t5_ffn, num_layers=s.text_layers,
            num_decoder_layers=s.text_layers, num_heads=s.text_heads,
            relative_attention_num_buckets=8, relative_attention_max_distance=20,
            feed_forward_proj="gated-gelu", dense_act_fn="gelu",  # BLIP-2 uses exact GELU
            tie_word_embeddings=True, scale_decoder_outputs=False,
            decoder_start_token_id=T5_PAD, pad_token_id=T5_PAD, eos_token_id=T5_EOS,
        )
    else:
        text = dict(
            model_type="opt", vocab_size=s.text_vocab, hidden_size=s.text_hidden,
            word_embed_proj_dim=s.text_hidden, ffn_dim=s.text_ffn, num_hidden_layers=s.text_layers,
            num_attention_heads=s.text_heads, max_position_embeddings=128,
            bos_token_id=OPT_BOS, eos_token_id=OPT_BOS, pad_token_id=OPT_PAD,
        )
    config = Blip2Config(
        vision_config=vision, qformer_config=qformer, text_config=text,
        num_query_tokens=s.num_query_tokens,
        image_text_hidden_size=s.image_text_hidden if kind == "retrieval" else 256,
    )
    config.architectures = ["Blip2ForImageTextRetrieval" if kind == "retrieval" else "Blip2ForConditionalGeneration"]
    return config


NORM_WEIGHT_SUFFIXES = ("layernorm.weight", "LayerNorm.weight", "layer_norm.weight", "layer_norm1.weight",
                        "layer_norm2.weight", "self_attn_layer_norm.weight")
QUERY_KEY_SUFFIXES = ("attention.query.weight", "attention.key.weight", "self_attn.qkv.weight",
                      "q_proj.weight", "k_proj.weight", ".q.weight", ".k.weight")


def scaled_init(name: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """A random value for one parameter, scaled so that activations stay of order one.

    Linear/conv weights: N(0, gain^2/fan_in), gain 2 for attention queries/keys so the
    softmax is not uniform. Norm weights 1 + N(0, 0.1^2), biases N(0, 0.02^2), query
    tokens and the CLS embedding N(0,1), position tables N(0, 0.3^2), token tables
    N(0, 0.05^2) (OPT/T5 heads are tied to them, which gives logits of order 0.3),
    T5 relative-attention biases N(0,1).
    """
    noise = torch.randn(shape, generator=generator)
    if name.endswith(NORM_WEIGHT_SUFFIXES):
        return 1.0 + 0.1 * noise
    if name.endswith("bias") and "relative_attention_bias" not in name:
        return 0.02 * noise
    if name.endswith(("query_tokens", "class_embedding", "relative_attention_bias.weight")):
        return noise
    if name.endswith(("position_embedding", "embed_positions.weight", "position_embeddings.weight")):
        return 0.3 * noise
    if name.endswith(("embed_tokens.weight", "shared.weight", "word_embeddings.weight")):
        return 0.05 * noise
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        gain = 2.0 if name.endswith(QUERY_KEY_SUFFIXES) else 1.0
        return gain / math.sqrt(fan_in) * noise
    raise ValueError(f"no initialisation rule for parameter {name} {tuple(shape)}")


@torch.no_grad()
def randomize_weights(model, generator: torch.Generator) -> None:
    for name, param in model.named_parameters():  # tied parameters appear once
        param.copy_(scaled_init(name, param.shape, generator))


@torch.no_grad()
def zero_vision_key_bias(model) -> None:
    """Real BLIP-2 checkpoints have no key bias: qkv.bias = [q_bias, 0, v_bias]."""
    for layer in model.vision_model.encoder.layers:
        bias = layer.self_attn.qkv.bias
        hidden = bias.shape[0] // 3
        bias[hidden:2 * hidden] = 0


def split_qkv_biases_in_file(weights_path: Path) -> None:
    """Rewrite a model.safetensors with q_bias/v_bias keys instead of the fused qkv.bias."""
    tensors = load_file(str(weights_path))
    for name in [n for n in tensors if n.endswith(".self_attn.qkv.bias")]:
        bias = tensors.pop(name)
        hidden = bias.shape[0] // 3
        assert torch.all(bias[hidden:2 * hidden] == 0), f"{name} has a non-zero key bias"
        prefix = name[: -len("qkv.bias")]
        tensors[prefix + "q_bias"] = bias[:hidden].clone()
        tensors[prefix + "v_bias"] = bias[2 * hidden:].clone()
    write_safetensors(tensors, weights_path, metadata={"format": "pt"})


def random_tokens(n: int, low: int, high: int, generator: torch.Generator) -> list[int]:
    return torch.randint(low, high, (n,), generator=generator).tolist()


def random_generation_inputs(kind: str, s: argparse.Namespace, generator: torch.Generator) -> tuple[dict, list[int]]:
    """Random images, one prompt repeated over the batch and a padded prompt batch.

    OPT prompts start with BOS (</s>, id 2) and are left-padded with id 1; T5 prompts
    end with </s> (id 1) and are right-padded with id 0. Row i of the padded batch has
    min(2i, len-2) pads; row 0 is a full prompt one token longer than prompt_ids.
    """
    vocab = s.text_vocab
    first_plain = 3  # ids 0..2 are special in both vocabularies
    if kind == "t5":
        prompt = random_tokens(s.prompt_len - 1, first_plain, vocab, generator) + [T5_EOS]
    else:
        prompt = [OPT_BOS] + random_tokens(s.prompt_len - 1, first_plain, vocab, generator)
    inputs = {
        "pixel_values": torch.randn(s.batch, 3, s.image_size, s.image_size, generator=generator),
        "prompt_ids": torch.tensor([prompt] * s.batch),
    }
    if kind == "opt-hub-layout":  # the shared hub-layout fixture has no padded batch
        return inputs, prompt

    padded_len = s.prompt_len + 1
    rows, masks = [], []
    for i in range(s.batch):
        n_pad = min(2 * i, padded_len - 2)
        n_text = padded_len - n_pad - 1
        if kind == "t5":
            rows.append(random_tokens(n_text, first_plain, vocab, generator) + [T5_EOS] + [T5_PAD] * n_pad)
            masks.append([1] * (padded_len - n_pad) + [0] * n_pad)
        else:
            rows.append([OPT_PAD] * n_pad + [OPT_BOS] + random_tokens(n_text, first_plain, vocab, generator))
            masks.append([0] * n_pad + [1] * (padded_len - n_pad))
    inputs["padded_prompt_ids"] = torch.tensor(rows)
    inputs["padded_prompt_mask"] = torch.tensor(masks)
    return inputs, prompt


def random_retrieval_inputs(s: argparse.Namespace, generator: torch.Generator) -> dict:
    """Random images and BERT-style texts [CLS] words [SEP] [PAD]..., row i has i+1 pads."""
    cls_id = min(101, s.qformer_vocab - 2)
    sep_id = cls_id + 1
    rows, masks = [], []
    for i in range(s.batch):
        n_pad = min(i + 1, s.prompt_len - 2)
        n_words = s.prompt_len - n_pad - 2
        rows.append([cls_id] + random_tokens(n_words, 1, cls_id, generator) + [sep_id] + [BERT_PAD] * n_pad)
        masks.append([1] * (s.prompt_len - n_pad) + [0] * n_pad)
    return {
        "pixel_values": torch.randn(s.batch, 3, s.image_size, s.image_size, generator=generator),
        "input_ids": torch.tensor(rows),
        "attention_mask": torch.tensor(masks),
    }


def reference_metadata(kind: str, s: argparse.Namespace, reference: dict, prompt: list[int] | None) -> dict:
    """reference.json contents, in the layout of the shared folders."""
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "seed": s.seed}
    if kind != "retrieval":
        meta.update(prompt_ids=prompt, n_new=s.n_new, batch=s.batch)
    meta["tensors"] = {name: list(t.shape) for name, t in reference.items()}
    if kind == "retrieval":
        meta["how"] = RETRIEVAL_HOW
    else:
        meta["how"] = GENERATION_HOW["t5" if kind == "t5" else "opt"]
        meta["hub_layout"] = kind == "opt-hub-layout"
    return meta


def new_fixture(kind: str, s: argparse.Namespace, out_dir: Path) -> int:
    """Create a fixture folder for a tiny random model of KIND, seeded by SEED.

    Writes config.json, model.safetensors, generation_config.json (not for retrieval),
    reference.safetensors and reference.json, with the tensor set of the shared folder
    of the same kind (opt-hub-layout: no padded batch; t5: no padded_lm_logits). The
    weights are drawn by scaled_init(); for opt-hub-layout the vision key bias is zero
    and the file stores q_bias / v_bias. The reference is computed from the saved
    folder, so `regenerate --check` on the result passes by construction.
    """
    torch.manual_seed(s.seed)  # only module construction; every value below uses `generator`
    generator = torch.Generator().manual_seed(s.seed)
    config = build_config(kind, s)
    model_class = Blip2ForImageTextRetrieval if kind == "retrieval" else Blip2ForConditionalGeneration
    model = model_class(config).eval()
    randomize_weights(model, generator)
    if kind == "opt-hub-layout":
        zero_vision_key_bias(model)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    if kind == "opt-hub-layout":
        split_qkv_biases_in_file(out_dir / SINGLE_FILE_WEIGHTS)

    if kind == "retrieval":
        inputs, prompt = random_retrieval_inputs(s, generator), None
    else:
        inputs, prompt = random_generation_inputs(kind, s, generator)

    # Compute from the saved folder, so the fixture is exactly what regenerate sees.
    print(f"{out_dir}:")
    reference = compute_reference(load_blip2(out_dir), inputs, s.n_new)
    write_safetensors(reference, out_dir / REFERENCE_TENSORS)
    meta = reference_metadata(kind, s, reference, prompt)
    (out_dir / REFERENCE_JSON).write_text(json.dumps(meta, indent=1) + "\n")
    for name, tensor in reference.items():
        summary = tensor.tolist() if not tensor.dtype.is_floating_point else f"std {tensor.std():.3f}"
        print(f"  {name:28s} {tuple(tensor.shape)!s:16s} {summary}")
    print(f"  wrote {out_dir}")
    return 0


# ---------------------------------------------------------------------------------------
# shard
# ---------------------------------------------------------------------------------------


def shard_name(k: int, n: int) -> str:
    return f"model-{k:05d}-of-{n:05d}.safetensors"


def split_evenly_by_size(names: list[str], sizes: dict[str, int], n_shards: int) -> list[list[str]]:
    """Split names (in order) into n_shards non-empty contiguous groups of similar byte size."""
    if not 1 <= n_shards <= len(names):
        raise ValueError(f"cannot split {len(names)} tensors into {n_shards} shards")
    total = sum(sizes.values())
    groups, current, done = [], [], 0
    for i, name in enumerate(names):
        current.append(name)
        done += sizes[name]
        groups_left = n_shards - len(groups) - 1
        names_left = len(names) - i - 1
        if groups_left and (done >= total * (len(groups) + 1) / n_shards or names_left == groups_left):
            groups.append(current)
            current = []
    groups.append(current)
    return groups


def shard_folder(src: Path, dst: Path, n_shards: int) -> int:
    """Copy the Hub folder SRC to DST with its weights split into N shard files.

    Tensors are taken in name order and cut into N contiguous groups of similar byte
    size, written as model-0000k-of-0000N.safetensors (same file metadata) with a
    model.safetensors.index.json {"metadata": {"total_size": bytes}, "weight_map":
    {name: file}}. Every other file of SRC is copied unchanged.
    """
    source_files = weight_files(src)  # an already sharded SRC can be re-sharded
    tensors = read_weights(src)
    with safe_open(str(source_files[0]), framework="pt") as f:
        metadata = f.metadata() or {"format": "pt"}
    names = sorted(tensors)
    sizes = {name: tensors[name].numel() * tensors[name].element_size() for name in names}

    dst.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for k, group in enumerate(split_evenly_by_size(names, sizes, n_shards), start=1):
        file_name = shard_name(k, n_shards)
        write_safetensors({name: tensors[name] for name in group}, dst / file_name, metadata=metadata)
        weight_map.update({name: file_name for name in group})
        print(f"  {file_name}: {len(group)} tensors, {sum(sizes[n] for n in group)} bytes")
    index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": dict(sorted(weight_map.items()))}
    (dst / SHARD_INDEX).write_text(json.dumps(index, indent=2) + "\n")

    for path in sorted(src.iterdir()):
        if path.is_file() and path not in source_files and path.name != SHARD_INDEX:
            shutil.copyfile(path, dst / path.name)
    print(f"  wrote {dst}")
    return 0


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


SIZE_FLAG_HELP = {
    "batch": "batch size (images and prompts)",
    "n_new": "tokens generated by greedy and beam search",
    "image_size": "input image side in pixels",
    "patch_size": "vision patch side in pixels",
    "vision_hidden": "vision tower width",
    "vision_intermediate": "vision MLP width",
    "vision_layers": "vision tower depth",
    "vision_heads": "vision attention heads",
    "qformer_hidden": "Q-Former width",
    "qformer_intermediate": "Q-Former feed-forward width",
    "qformer_heads": "Q-Former attention heads",
    "qformer_vocab": "Q-Former (BERT) vocabulary, used by retrieval texts",
    "text_hidden": "language model width (OPT hidden_size / T5 d_model)",
    "text_ffn": "OPT feed-forward width",
    "text_layers": "language model depth (T5: encoder and decoder each)",
    "text_heads": "language model attention heads",
    "text_vocab": "language model vocabulary",
    "t5_ffn": "T5 gated feed-forward width (d_ff)",
    "image_text_hidden": "retrieval: ITC embedding width",
    "qformer_layers": "Q-Former depth",
    "num_query_tokens": "number of learned query tokens",
    "cross_attention_frequency": "Q-Former layer i cross-attends when i %% this == 0",
    "prompt_len": "prompt length incl. BOS / </s> (retrieval: text length incl. [CLS] [SEP] and padding)",
}


def add_size_flags(parser: argparse.ArgumentParser) -> None:
    """Size flags of `new`; unset ones are filled from COMMON_DEFAULTS and KIND_DEFAULTS."""
    sizes = parser.add_argument_group("sizes (defaults: those of the shared folder of the same kind)")
    for key, help_text in SIZE_FLAG_HELP.items():
        default = COMMON_DEFAULTS.get(key, "per kind, see below")
        sizes.add_argument("--" + key.replace("_", "-"), type=int, default=None,
                           help=f"{help_text} (default: {default})")
    parser.epilog = "per-kind defaults:\n" + "\n".join(
        f"  {kind}: " + ", ".join(f"{k}={v}" for k, v in defaults.items())
        for kind, defaults in KIND_DEFAULTS.items()
    )


def fill_size_defaults(args: argparse.Namespace) -> argparse.Namespace:
    for key, value in {**COMMON_DEFAULTS, **KIND_DEFAULTS[args.kind]}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(name, function, help_text):
        return commands.add_parser(name, help=help_text, description=inspect.getdoc(function),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add_command("regenerate", regenerate, "recompute a folder's reference outputs from its inputs")
    p.add_argument("folder", type=Path, metavar="FOLDER")
    p.add_argument("--out", type=Path, default=None, help="output file (default FOLDER/reference.safetensors)")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    p.add_argument("--tolerance", type=float, default=FLOAT_TOLERANCE, help="max |diff| for floats (default 1e-5)")

    p = add_command("new", new_fixture, "create a fixture folder for a tiny random model")
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--seed", type=int, required=True, help="seeds the weights and the inputs")
    p.add_argument("--out", type=Path, required=True, help="fixture folder to create")
    add_size_flags(p)

    p = add_command("shard", shard_folder, "copy a folder with its weights split into N shards")
    p.add_argument("folder", type=Path, metavar="SRC")
    p.add_argument("--out", type=Path, required=True, metavar="DST", help="folder to create")
    p.add_argument("--shards", type=int, required=True, metavar="N", help="number of weight files")

    args = parser.parse_args(argv)
    transformers.logging.set_verbosity_error()  # load_blip2() checks the loading report itself
    transformers.logging.disable_progress_bar()
    torch.set_grad_enabled(False)

    if args.command == "regenerate":
        return regenerate(args.folder, args.out, args.check, args.tolerance)
    if args.command == "new":
        return new_fixture(args.kind, fill_size_defaults(args), args.out)
    return shard_folder(args.folder, args.out, args.shards)


if __name__ == "__main__":
    sys.exit(main())
