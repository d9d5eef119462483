#!/usr/bin/env python3
"""Train the bundled shapes retrieval model: a tiny Blip2ForImageTextRetrieval on the shapes world.

Builds, with transformers' own classes, a BLIP-2 image-text retrieval model (ViT + Q-Former with text input,
ITC projections and ITM head) sized for the shapes world of shapes_world.py. As BLIP-2's stage 1 does, it starts
from a pretrained image encoder and keeps it frozen: the vision tower of the bundled captioner
(models/shapes-captioner, trained by train_captioner.py on the same world), whose query tokens and Q-Former
query path also initialise the Q-Former (each layer's text feed-forward starts as a copy of the query one, as
BLIP-2's Q-Former starts both from one BERT feed-forward). It adds a WordPiece tokenizer trained with
`tokenizers` on the world's captions with BERT post-processing ("[CLS] $A [SEP]"; [PAD] [UNK] [CLS] [SEP]
[MASK]), trains it on the CPU on fresh scenes every step with the BLIP-2 stage-1 losses, saves a Hub-shaped
folder (model.save_pretrained + Blip2Processor.save_pretrained, no num_query_tokens, as blip2-itm-vit-g) and
measures retrieval: for fresh scenes of another seed, every caption of the scene's kind (12 one-shape captions,
144 two-shape captions) is scored by ITC similarity through the reloaded folder, and the top one must be the
scene's caption.

The losses, as the BLIP-2 paper (Li et al. 2023, section 3.2) defines them:

* ITC: image feature = the queries' projected, normalised outputs (queries only, no text); text feature = the
  projected, normalised [CLS] output of the text-only pass. Similarity of an image and a text = the highest
  over the queries; divided by a learnable temperature (initialised 0.07, as BLIP's); symmetric
  cross-entropy image-to-text and text-to-image over the batch. Captions that equal the positive one (two
  scenes of a batch can share a caption) are masked out of the negatives.
  transformers' inference (use_image_text_matching_head=False) returns the cosine without temperature, which
  ranks the same.
* ITM: the queries and the text in one pass (bidirectional self-attention, queries cross-attend to the image),
  a linear 2-way head on the query outputs averaged over the queries (transformers applies the head to each
  query and averages the logits: the same, the head being linear); binary cross-entropy on the B positive pairs
  and 2B hard negatives: for each image one negative text, for each text one negative image, sampled in
  proportion to the softmax of the ITC similarity with duplicates of the true caption excluded.

Usage (the venv of tools/requirements.txt), from the repository root:
    python tools/shapes/train_retrieval.py --out models/shapes-retrieval
    python tools/shapes/train_retrieval.py --out models/shapes-retrieval --eval-only   # re-measure
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see train_captioner.py

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor, BlipImageProcessor, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).parent))
import shapes_world as world  # noqa: E402
from train_captioner import to_pixels  # noqa: E402  (the processor's pixels, checked there)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """WordPiece trained on every caption of the world, BERT-style (lower case, [CLS] $A [SEP])."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=128, min_frequency=1, show_progress=False, special_tokens=SPECIALS)
    tok.train_from_iterator(world.all_captions(), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]", mask_token="[MASK]", padding_side="right")


def build_config(args, tokenizer) -> Blip2Config:
    vision = dict(hidden_size=args.vision_hidden, intermediate_size=4 * args.vision_hidden,
                  num_hidden_layers=args.vision_layers, num_attention_heads=args.heads,
                  image_size=world.SIZE, patch_size=args.patch_size, attention_dropout=0.0)
    if args.vision_from:  # the pretrained image encoder's own shape
        source = Blip2Config.from_pretrained(args.vision_from).vision_config
        vision = {k: getattr(source, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                  "num_attention_heads", "image_size", "patch_size", "qkv_bias",
                                                  "layer_norm_eps", "hidden_act")}
        vision["attention_dropout"] = 0.0
    qformer = dict(hidden_size=args.qformer_hidden, intermediate_size=4 * args.qformer_hidden,
                   num_hidden_layers=args.qformer_layers, num_attention_heads=args.heads,
                   cross_attention_frequency=1, vocab_size=len(tokenizer), max_position_embeddings=32,
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, use_qformer_text_input=True,
                   pad_token_id=tokenizer.pad_token_id)
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=None,
                         num_query_tokens=args.queries, image_text_hidden_size=args.embed)
    config.architectures = ["Blip2ForImageTextRetrieval"]
    return config


def initialise_from(model, folder: Path) -> list[str]:
    """BLIP-2 stage 1 starts from a pretrained image encoder. Here it is the bundled captioner's
    (models/shapes-captioner, trained on the same world): its vision tower, query tokens and the Q-Former layers'
    query path are copied where names and shapes agree; each layer's text feed-forward (the captioner has none)
    starts as a copy of the query feed-forward, as BLIP-2's Q-Former starts both from one BERT feed-forward."""
    from safetensors.torch import load_file
    source = load_file(str(folder / "model.safetensors"))
    own = model.state_dict()
    copied = {}
    for name, tensor in source.items():
        if name in own and own[name].shape == tensor.shape and not name.startswith("language"):
            copied[name] = tensor
        for query_part, text_part in ((".intermediate_query.", ".intermediate."), (".output_query.", ".output.")):
            twin_name = name.replace(query_part, text_part)
            if query_part in name and twin_name in own and own[twin_name].shape == tensor.shape:
                copied[twin_name] = tensor.clone()
    model.load_state_dict(copied, strict=False)
    return sorted(copied)


def image_queries(model, pixels):
    """Vision outputs and the queries' Q-Former outputs (no text)."""
    image_embeds = model.vision_model(pixel_values=pixels).last_hidden_state
    queries = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
    out = model.qformer(query_embeds=queries, encoder_hidden_states=image_embeds).last_hidden_state
    return image_embeds, out


def text_cls(model, ids, mask):
    out = model.qformer(query_embeds=model.embeddings(input_ids=ids), query_length=0, attention_mask=mask).last_hidden_state
    return out[:, 0, :]


def itm_logits(model, image_embeds, ids, mask):
    """transformers' use_image_text_matching_head=True path, on given vision outputs."""
    queries = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
    full_mask = torch.cat([torch.ones(queries.shape[:2], dtype=mask.dtype), mask], dim=1)
    out = model.qformer(query_embeds=model.embeddings(input_ids=ids, query_embeds=queries), query_length=queries.shape[1],
                        attention_mask=full_mask, encoder_hidden_states=image_embeds).last_hidden_state
    return model.itm_head(out[:, :queries.shape[1], :]).mean(dim=1)


def twin(rng: np.random.Generator, scene: list) -> list:
    """A fresh scene whose caption is close to `scene`'s: for two shapes, half the time the same two shapes
    swapped left-right, else one shape's kind or colour changed; for one shape, its kind or colour changed.
    Positions and sizes are drawn afresh. Used to put hard negatives into the ITC batch (the losses do not change)."""
    words = [(sh.kind, sh.colour) for sh in scene]
    if len(words) == 2 and rng.integers(2) == 0:
        words = words[::-1]
    else:
        i = int(rng.integers(len(words)))
        k, c = words[i]
        if rng.integers(2) == 0:
            k = world.KINDS[(world.KINDS.index(k) + 1 + int(rng.integers(len(world.KINDS) - 1))) % len(world.KINDS)]
        else:
            c = world.COLOUR_NAMES[(world.COLOUR_NAMES.index(c) + 1 + int(rng.integers(3))) % 4]
        words[i] = (k, c)
    fresh = world.sample_scene(rng)
    while len(fresh) != len(words):
        fresh = world.sample_scene(rng)
    return [world.Shape(k, c, sh.s, sh.x0, sh.y0) for (k, c), sh in zip(words, fresh)]


def sample_batch(rng: np.random.Generator, n: int, twins: bool):
    if not twins:
        return world.sample_batch(rng, n)
    scenes = [world.sample_scene(rng) for _ in range(n // 2)]
    scenes += [twin(rng, sc) for sc in scenes]
    return np.stack([world.render(sc) for sc in scenes]), [world.caption(sc) for sc in scenes]


class Texts:
    """Token ids of captions (the processor's), cached; right-padded batches."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}

    def __call__(self, captions):
        rows = []
        for c in captions:
            if c not in self.cache:
                self.cache[c] = self.tokenizer(c)["input_ids"]
            rows.append(self.cache[c])
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        return ids, mask


def losses(model, temp, pixels, ids, mask, captions):
    b = pixels.shape[0]
    image_embeds, query_out = image_queries(model, pixels)
    image_feat = F.normalize(model.vision_projection(query_out), dim=-1)  # (B, Q, D)
    text_feat = F.normalize(model.text_projection(text_cls(model, ids, mask)), dim=-1)  # (B, D)
    sim = torch.einsum("iqd,td->iqt", image_feat, text_feat).max(dim=1).values  # (images, texts)
    same = torch.tensor([[a == c for c in captions] for a in captions])  # same caption (diagonal included)
    eye = torch.eye(b, dtype=torch.bool)
    dup = same & ~eye
    logits = (sim / temp).masked_fill(dup, float("-inf"))
    target = torch.arange(b)
    itc = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2

    with torch.no_grad():  # hard negatives, in proportion to the ITC softmax, never a duplicate of the truth
        weights = F.softmax(sim / temp, dim=1).masked_fill(same, 0) + 1e-8 * (~same)
        neg_text = torch.multinomial(weights, 1).squeeze(1)  # for each image a text
        weights = F.softmax(sim.t() / temp, dim=1).masked_fill(same, 0) + 1e-8 * (~same)
        neg_image = torch.multinomial(weights, 1).squeeze(1)  # for each text an image
    all_images = torch.cat([image_embeds, image_embeds, image_embeds[neg_image]], dim=0)
    all_ids = torch.cat([ids, ids[neg_text], ids], dim=0)
    all_mask = torch.cat([mask, mask[neg_text], mask], dim=0)
    labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)])
    logits_itm = itm_logits(model, all_images, all_ids, all_mask)
    itm = F.cross_entropy(logits_itm, labels)
    return itc, itm


def train(model, tokenizer, args) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    texts = Texts(tokenizer)
    log_temp = torch.nn.Parameter(torch.tensor(math.log(0.07)))  # temp = exp(log_temp), clamped like BLIP
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n and "query_tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n and "query_tokens" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay + [log_temp], "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    start = time.time()
    history, run_itc, run_itm = [], [], []
    for step in range(args.steps):
        images, captions = sample_batch(rng, args.batch, args.twins)
        ids, mask = texts(captions)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        temp = log_temp.exp().clamp(0.001, 0.5)
        itc, itm = losses(model, temp, to_pixels(images), ids, mask, captions)
        loss = itc + itm
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        run_itc.append(itc.item())
        run_itm.append(itm.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            elapsed = time.time() - start
            history.append({"step": step + 1, "itc": float(np.mean(run_itc)), "itm": float(np.mean(run_itm)),
                            "temp": float(temp.detach()), "seconds": round(elapsed, 1)})
            run_itc, run_itm = [], []
            print(f"step {step + 1:5d}  itc {history[-1]['itc']:.4f}  itm {history[-1]['itm']:.4f}  temp {float(temp):.4f}  "
                  f"lr {lr_at(step):.2e}  {elapsed:7.1f} s", flush=True)
        if time.time() - start > args.time_limit:
            print(f"time limit {args.time_limit} s reached at step {step + 1}", flush=True)
            history.append({"step": step + 1, "itc": itc.item(), "itm": itm.item(), "temp": float(temp),
                            "seconds": round(time.time() - start, 1), "stopped": True})
            break
    model.eval()
    return {"seconds": round(time.time() - start, 1), "steps": history[-1]["step"], "final_itc": history[-1]["itc"],
            "final_itm": history[-1]["itm"], "temperature": history[-1]["temp"], "history": history}


@torch.no_grad()
def evaluate(folder: Path, count: int, seed: int) -> dict:
    """Reload the folder as a user would; rank every caption of each fresh scene's kind by ITC similarity."""
    from PIL import Image
    model = Blip2ForImageTextRetrieval.from_pretrained(folder).eval()
    processor = Blip2Processor.from_pretrained(folder)
    every = world.all_captions()
    kinds = {1: every[:12], 2: every[12:]}
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(count)]
    right, wrong = 0, []
    for n, candidates in kinds.items():
        index = [i for i, sc in enumerate(scenes) if len(sc) == n]
        for b in range(0, len(index), 50):
            chunk = index[b:b + 50]
            pil = [Image.fromarray(world.render(scenes[i]), "RGB") for i in chunk]
            inputs = processor(images=pil, text=candidates, return_tensors="pt", padding=True)
            sim = model(**inputs, use_image_text_matching_head=False).logits_per_image  # (images, captions)
            best = sim.argmax(dim=1).tolist()
            for i, k in zip(chunk, best):
                truth = world.caption(scenes[i])
                if candidates[k] == truth:
                    right += 1
                else:
                    wrong.append({"index": i, "truth": truth, "top1": candidates[k]})
    return {"scenes": count, "seed": seed, "top1": right, "accuracy": right / count,
            "errors": sorted(wrong, key=lambda e: e["index"])}


README = """# shapes-retrieval

A tiny BLIP-2 image-text retrieval model (`Blip2ForImageTextRetrieval`, shaped like `Salesforce/blip2-itm-vit-g`)
for the **shapes world** of `tools/shapes/shapes_world.py`: 96 x 96 white images with one or two filled circles,
squares or triangles in red, green, blue or yellow, captioned `a red circle` or, left then right,
`a red circle and a blue square`. Trained by the project with transformers' own classes (its frozen image
encoder is the bundled captioner's) and saved with `save_pretrained`, so it loads in transformers and in qformer
alike.

```sh
./build/tools/qformer rank --model models/shapes-retrieval --images examples/images \\
    --texts "a red circle and a blue square" "a blue circle" "a green triangle"
```

## Model

{arch}

Tokenizer: WordPiece trained with `tokenizers` on the world's captions, BERT-style (lower case,
`[CLS] $A [SEP]`, `[PAD]` `[UNK]` `[CLS]` `[SEP]` `[MASK]`). `Blip2Processor` without `num_query_tokens`
(no `<image>` placeholders, as blip2-itm-vit-g's). Image processor: `BlipImageProcessor` at 96 x 96 (CLIP
mean / std). Weights: `model.safetensors`, fp32.

## Training

`python tools/shapes/train_retrieval.py --out models/shapes-retrieval` (seed {seed}). As BLIP-2's stage 1, it
starts from a pretrained, frozen image encoder: the vision tower of `{vision_from}` (trained on the same world by
`train_captioner.py`), whose query tokens and Q-Former query path also initialise the Q-Former (text
feed-forwards start as copies of the query ones); the Q-Former, its text embeddings, the projections and the ITM
head are trained. {steps} steps of batch
{batch} fresh scenes, AdamW (lr {lr}, {warmup} warm-up steps, cosine decay, weight decay {weight_decay}), the
BLIP-2 stage-1 losses ITC + ITM as the paper defines them (see the script's docstring; captions shared by two
scenes of a batch are masked out of the ITC negatives and the hard-negative sampling; the learnable ITC
temperature started at 0.07 and ended at {temp:.4f} — it is not part of the saved model, transformers'
inference returns the plain cosine). {seconds:.0f} s of wall time ({minutes:.1f} min) on the CPU with
{threads} threads ({cpu}, a 2-core machine shared with other jobs); final losses ITC {itc:.4f}, ITM {itm:.4f}.
`training.json` has the loss curve, `evaluation.json` the errors.

## Accuracy

{scenes} fresh scenes (seed {eval_seed}, not a training seed); every caption of the scene's kind (the 12
one-shape captions, or the 144 two-shape captions) scored by ITC similarity through `Blip2Processor` +
`model(..., use_image_text_matching_head=False)`: **the top-1 caption is right for {top1} / {scenes}
({accuracy:.1%})** with transformers {transformers}.{cpp}
"""


def architecture(config: Blip2Config, model) -> str:
    v, q = config.vision_config, config.qformer_config
    count = lambda prefix: sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
    total = sum(p.numel() for p in model.parameters())
    return "\n".join([
        "| part | size | parameters |", "|---|---|---|",
        f"| vision tower | ViT, {v.image_size} px, patch {v.patch_size} ({(v.image_size // v.patch_size) ** 2} patches + CLS), "
        f"width {v.hidden_size}, {v.num_hidden_layers} layers, {v.num_attention_heads} heads | {count('vision_model'):,} |",
        f"| Q-Former | {config.num_query_tokens} queries, width {q.hidden_size}, {q.num_hidden_layers} layers "
        f"(cross-attention in every layer), {q.num_attention_heads} heads, text input (vocabulary {q.vocab_size}) | "
        f"{count('qformer') + count('query_tokens') + count('embeddings'):,} |",
        f"| ITC projections | {q.hidden_size} -> {config.image_text_hidden_size} (queries and [CLS]) | "
        f"{count('vision_projection') + count('text_projection'):,} |",
        f"| ITM head | {q.hidden_size} -> 2 | {count('itm_head'):,} |",
        f"| total | | {total:,} |"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models/shapes-retrieval"))
    parser.add_argument("--seed", type=int, default=0, help="weights and training scenes")
    parser.add_argument("--eval-seed", type=int, default=20250501, help="evaluation scenes")
    parser.add_argument("--eval-count", type=int, default=500)
    parser.add_argument("--eval-only", action="store_true", help="only re-measure the saved folder")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--time-limit", type=float, default=25 * 60, help="stop training after this many seconds")
    parser.add_argument("--twins", type=int, default=1, help="half of each batch: near-miss twins of the other half")
    parser.add_argument("--init", type=Path, help="start from this saved folder's weights (a second stage)")
    parser.add_argument("--vision-from", type=Path, default=Path("models/shapes-captioner"), help="a Blip2ForConditionalGeneration folder (the shapes captioner) "
                        "whose vision tower and Q-Former query path start the model")
    parser.add_argument("--freeze-vision", type=int, default=1, help="1: train the Q-Former only (BLIP-2 stage 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--vision-hidden", type=int, default=64, help="(the vision sizes apply with --vision-from none)")
    parser.add_argument("--vision-layers", type=int, default=3)
    parser.add_argument("--qformer-hidden", type=int, default=96)
    parser.add_argument("--qformer-layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--embed", type=int, default=64, help="image_text_hidden_size")
    args = parser.parse_args()
    if str(args.vision_from).lower() in ("", "none"):
        args.vision_from = None
    torch.set_num_threads(args.threads)
    import transformers
    transformers.logging.set_verbosity_error()

    if not args.eval_only:
        tokenizer = build_tokenizer()
        processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": world.SIZE, "width": world.SIZE}),
                                   tokenizer=tokenizer)
        config = build_config(args, tokenizer)
        torch.manual_seed(args.seed)
        model = Blip2ForImageTextRetrieval(config)
        if args.init:
            model = Blip2ForImageTextRetrieval.from_pretrained(args.init)
            assert model.config.num_query_tokens == args.queries
        elif args.vision_from:
            copied = initialise_from(model, args.vision_from)
            print(f"initialised {len(copied)} tensors from {args.vision_from}", flush=True)
        if args.freeze_vision:  # as BLIP-2's stage 1: the image encoder stays frozen
            model.vision_model.requires_grad_(False)
        print(f"parameters: {sum(p.numel() for p in model.parameters()):,}; vocabulary {len(tokenizer)}; "
              f"example ids {tokenizer(world.all_captions()[-1])['input_ids']}", flush=True)
        stats = train(model, tokenizer, args)
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.out)
        processor.save_pretrained(args.out)
        for f in args.out.iterdir():
            f.chmod(0o644)
        import platform
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   platform.processor())
        stats.update(threads=args.threads, cpu=cpu, args={k: str(v) for k, v in vars(args).items()})
        (args.out / "training.json").write_text(json.dumps(stats, indent=1) + "\n")
        print(f"trained {stats['steps']} steps in {stats['seconds']} s", flush=True)

    stats = json.loads((args.out / "training.json").read_text())
    result = evaluate(args.out, args.eval_count, args.eval_seed)
    print(f"ITC top-1 on {result['scenes']} fresh scenes (seed {result['seed']}): {result['top1']} = "
          f"{result['accuracy']:.1%}", flush=True)
    for e in result["errors"][:20]:
        print(f"  #{e['index']}: {e['top1']!r} (truth {e['truth']!r})")
    (args.out / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")

    model = Blip2ForImageTextRetrieval.from_pretrained(args.out)
    cpp_file = args.out / "cpp_accuracy.txt"
    cpp_note = "\n\n" + cpp_file.read_text().strip() if cpp_file.exists() else ""
    a = stats["args"]
    text = README.format(
        arch=architecture(model.config, model), seed=a["seed"], vision_from=a.get("vision_from", "(none)"), steps=stats["steps"], batch=a["batch"], lr=a["lr"],
        warmup=a["warmup"], weight_decay=a["weight_decay"], temp=stats["temperature"], seconds=stats["seconds"],
        minutes=stats["seconds"] / 60, threads=stats["threads"], cpu=stats["cpu"], itc=stats["final_itc"],
        itm=stats["final_itm"], scenes=result["scenes"], eval_seed=result["seed"], top1=result["top1"],
        accuracy=result["accuracy"], transformers=transformers.__version__, cpp=cpp_note)
    (args.out / "README.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
