#!/usr/bin/env python3
"""Train the bundled shapes captioner: a tiny Blip2ForConditionalGeneration (OPT) on the shapes world.

Builds, with transformers' own classes, a BLIP-2 sized for the shapes world of shapes_world.py (96 x 96
images, 16 px patches), a byte-level BPE tokenizer trained with `tokenizers` on the world's caption
vocabulary (OPT-style: "</s>" is BOS and EOS and the post-processor prepends it; "<pad>", "<unk>"; the
processor adds "<image>"), trains it on the CPU on fresh scenes every step, saves a Hub-shaped folder with
model.save_pretrained + Blip2Processor.save_pretrained and then measures, exactly as a user would
(processor -> model.generate -> processor.batch_decode), how many greedy captions of fresh scenes from another
seed are exactly right. The accuracy goes into the folder's README.md.

The training sequence of a scene is what the processor gives for its caption, followed by EOS:

    <image> x num_query_tokens, </s>, caption tokens, </s>

and the loss (cross-entropy of the next token) is taken on the caption tokens and the final </s> only: the
same sequence that generate() builds for an empty prompt (placeholders + BOS) and then continues.

Usage (the venv of tools/requirements.txt), from the repository root:
    python tools/shapes/train_captioner.py --out models/shapes-captioner
    python tools/shapes/train_captioner.py --out models/shapes-captioner --eval-only   # re-measure
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

# Threads that sleep while they wait: with busy-waiting OpenMP threads, a CPU shared with other work (a compiler)
# slows training by 10x or more; passive waiting costs nothing measurable on an idle machine. Before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).parent))
import shapes_world as world  # noqa: E402

IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]  # BlipImageProcessor's (OpenAI CLIP) defaults
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on every caption of the world: each word becomes one token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, min_frequency=1, show_progress=False,
                                  special_tokens=["<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(world.all_captions(), trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B",
                                                       special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def build_config(args, tokenizer, vocab_size: int) -> Blip2Config:
    vision = dict(hidden_size=args.vision_hidden, intermediate_size=4 * args.vision_hidden,
                  num_hidden_layers=args.vision_layers, num_attention_heads=args.heads,
                  image_size=world.SIZE, patch_size=args.patch_size, attention_dropout=0.0)
    qformer = dict(hidden_size=args.qformer_hidden, intermediate_size=4 * args.qformer_hidden,
                   num_hidden_layers=args.qformer_layers, num_attention_heads=args.heads,
                   cross_attention_frequency=1, vocab_size=8, max_position_embeddings=8,
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    eos = tokenizer.convert_tokens_to_ids("</s>")
    pad = tokenizer.convert_tokens_to_ids("<pad>")
    text = dict(model_type="opt", vocab_size=vocab_size, hidden_size=args.text_hidden,
                word_embed_proj_dim=args.text_hidden, ffn_dim=4 * args.text_hidden,
                num_hidden_layers=args.text_layers, num_attention_heads=args.heads,
                max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
                bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text,
                         num_query_tokens=args.queries)
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    config.architectures = ["Blip2ForConditionalGeneration"]
    return config


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, 96, 96, 3) -> normalised float (B, 3, 96, 96), as BlipImageProcessor does at this size."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class Batcher:
    """Token ids of each caption (processor(text=caption) + EOS), cached; padded batches with labels."""

    def __init__(self, processor: Blip2Processor, num_queries: int):
        self.processor = processor
        self.eos = processor.tokenizer.eos_token_id
        self.pad = processor.tokenizer.pad_token_id
        self.prefix = num_queries + 1  # placeholders and BOS: no loss
        self.cache: dict[str, list[int]] = {}
        self.blank = np.full((world.SIZE, world.SIZE, 3), 255, dtype=np.uint8)  # text ids do not depend on it

    def ids(self, caption: str) -> list[int]:
        if caption not in self.cache:
            self.cache[caption] = list(self.processor(images=self.blank, text=caption)["input_ids"][0]) + [self.eos]
        return self.cache[caption]

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = [self.ids(c) for c in captions]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
            labels[i, self.prefix:len(r)] = torch.tensor(r[self.prefix:])
        return ids, mask, labels


def train(model, processor, args) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images, _ = world.sample_batch(np.random.default_rng(1), 4)  # the processor's pixels are to_pixels'
    from PIL import Image
    reference = processor(images=[Image.fromarray(im) for im in images], return_tensors="pt")["pixel_values"]
    assert torch.allclose(reference, to_pixels(images), atol=1e-5), (reference - to_pixels(images)).abs().max()
    batcher = Batcher(processor, model.config.num_query_tokens)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n and "query_tokens" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n and "query_tokens" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    start = time.time()
    history, running = [], []
    for step in range(args.steps):
        images, captions = world.sample_batch(rng, args.batch)
        ids, mask, labels = batcher(captions)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        logits = model(pixel_values=to_pixels(images), input_ids=ids, attention_mask=mask).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            mean = sum(running) / len(running)
            running = []
            elapsed = time.time() - start
            history.append({"step": step + 1, "loss": mean, "seconds": round(elapsed, 1)})
            print(f"step {step + 1:5d}  loss {mean:.4f}  lr {lr_at(step):.2e}  {elapsed:7.1f} s", flush=True)
        if time.time() - start > args.time_limit:
            print(f"time limit {args.time_limit} s reached at step {step + 1}", flush=True)
            history.append({"step": step + 1, "loss": loss.item(), "seconds": round(time.time() - start, 1), "stopped": True})
            break
    model.eval()
    return {"seconds": round(time.time() - start, 1), "steps": history[-1]["step"], "final_loss": history[-1]["loss"],
            "history": history}


@torch.no_grad()
def evaluate(folder: Path, count: int, seed: int, batch: int = 50) -> dict:
    """Reload the folder as a user would and caption `count` fresh scenes greedily with its defaults."""
    from PIL import Image
    model = Blip2ForConditionalGeneration.from_pretrained(folder).eval()
    processor = Blip2Processor.from_pretrained(folder)
    rng = np.random.default_rng(seed)
    images, truths = world.sample_batch(rng, count)
    right, wrong, captions = 0, [], []
    for b in range(0, count, batch):
        pil = [Image.fromarray(im, "RGB") for im in images[b:b + batch]]
        inputs = processor(images=pil, return_tensors="pt")
        # Blip2ForConditionalGeneration.generate hands over to the language model's generate, which would use the
        # language model's own defaults; the folder's generation_config.json (greedy, max_new_tokens) is passed.
        out = model.generate(**inputs, generation_config=model.generation_config)
        new = out[:, model.config.num_query_tokens + 1:]
        texts = [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
        captions += texts
        for i, (t, truth) in enumerate(zip(texts, truths[b:b + batch])):
            if t == truth:
                right += 1
            else:
                wrong.append({"index": b + i, "truth": truth, "caption": t})
    return {"scenes": count, "seed": seed, "exact": right, "accuracy": right / count, "errors": wrong,
            "captions": captions}


README = """# shapes-captioner

A tiny BLIP-2 (`Blip2ForConditionalGeneration`, OPT language model) that captions the **shapes world** of
`tools/shapes/shapes_world.py`: 96 x 96 white images with one or two filled circles, squares or triangles in
red, green, blue or yellow, captioned `a red circle` or, left then right, `a red circle and a blue square`.
It is qformer's bundled demo model: trained by the project from scratch with transformers' own classes and
saved with `save_pretrained`, so it loads in transformers and in qformer alike.

```sh
./build/tools/qformer caption --model models/shapes-captioner --image examples/images/{example}
```

## Model

{arch}

Tokenizer: byte-level BPE trained with `tokenizers` on the world's captions (every word is one token; any text
still encodes through the 256 byte tokens), OPT-style: `</s>` is BOS and EOS and is prepended to every text,
`<pad>`, `<unk>`, and the `<image>` placeholder that `Blip2Processor` puts before the prompt
(`image_token_index` in config.json). Image processor: `BlipImageProcessor` at 96 x 96 (CLIP mean / std).
Generation defaults (generation_config.json): greedy, at most {max_new} new tokens, stop at `</s>`.
Weights: `model.safetensors`, {dtype}.

In transformers, `Blip2ForConditionalGeneration.generate` hands over to the language model's `generate`, which
uses the language model's own defaults rather than this folder's generation_config.json; pass it on to get
exactly these defaults (greedy either way):

```python
model = Blip2ForConditionalGeneration.from_pretrained("models/shapes-captioner")
processor = Blip2Processor.from_pretrained("models/shapes-captioner")
ids = model.generate(**processor(images=image, return_tensors="pt"), generation_config=model.generation_config)
print(processor.batch_decode(ids[:, model.config.num_query_tokens + 1:], skip_special_tokens=True)[0].strip())
```

## Training

`python tools/shapes/train_captioner.py --out models/shapes-captioner` (seed {seed}): {steps} steps of
batch {batch} fresh scenes, AdamW (lr {lr}, {warmup} warm-up steps, cosine decay, weight decay
{weight_decay}), next-token cross-entropy on the caption tokens and the final `</s>` only. {seconds:.0f} s of
wall time ({minutes:.1f} min) on the CPU with {threads} threads ({cpu}, a 2-core machine that other jobs
shared during the run); final training loss {loss:.4f} (mean of the last 100 steps). `training.json` has the
loss curve, `evaluation.json` every evaluation caption.

## Accuracy

Greedy captions of {scenes} fresh scenes (seed {eval_seed}, not a training seed), through
`Blip2Processor` + `generate` exactly as a user would: **{exact} / {scenes} exactly right
({accuracy:.1%})** with transformers {transformers}.{cpp}
"""


def architecture(config: Blip2Config, model) -> str:
    v, q, t = config.vision_config, config.qformer_config, config.text_config
    count = lambda prefix: sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
    total = sum(p.numel() for p in model.parameters())
    return "\n".join([
        f"| part | size | parameters |", "|---|---|---|",
        f"| vision tower | ViT, {v.image_size} px, patch {v.patch_size} ({(v.image_size // v.patch_size) ** 2} patches + CLS), "
        f"width {v.hidden_size}, {v.num_hidden_layers} layers, {v.num_attention_heads} heads | {count('vision_model'):,} |",
        f"| Q-Former | {config.num_query_tokens} queries, width {q.hidden_size}, {q.num_hidden_layers} layers "
        f"(cross-attention in every layer), {q.num_attention_heads} heads | {count('qformer') + count('query_tokens'):,} |",
        f"| projection | {q.hidden_size} -> {t.hidden_size} | {count('language_projection'):,} |",
        f"| OPT | width {t.hidden_size}, {t.num_hidden_layers} layers, {t.num_attention_heads} heads, vocabulary {t.vocab_size}, "
        f"head tied to the embeddings | {count('language_model'):,} |",
        f"| total | | {total:,} |"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models/shapes-captioner"))
    parser.add_argument("--seed", type=int, default=0, help="weights and training scenes")
    parser.add_argument("--eval-seed", type=int, default=20250501, help="evaluation scenes")
    parser.add_argument("--eval-count", type=int, default=500)
    parser.add_argument("--eval-only", action="store_true", help="only re-measure the saved folder")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--time-limit", type=float, default=24 * 60, help="stop training after this many seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--vision-hidden", type=int, default=96)
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--qformer-hidden", type=int, default=96)
    parser.add_argument("--qformer-layers", type=int, default=2)
    parser.add_argument("--text-hidden", type=int, default=96)
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers
    transformers.logging.set_verbosity_error()

    if not args.eval_only:
        tokenizer = build_tokenizer()
        image_processor = BlipImageProcessor(size={"height": world.SIZE, "width": world.SIZE})
        processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=args.queries)
        config = build_config(args, tokenizer, len(tokenizer))  # len includes <image>
        torch.manual_seed(args.seed)
        model = Blip2ForConditionalGeneration(config)
        total = sum(p.numel() for p in model.parameters())
        print(f"parameters: {total:,}; vocabulary {len(tokenizer)}; "
              f"example ids {Batcher(processor, args.queries).ids(world.all_captions()[-1])}", flush=True)
        stats = train(model, processor, args)
        gen = model.generation_config
        gen.bos_token_id = gen.eos_token_id = config.text_config.eos_token_id
        gen.pad_token_id = config.text_config.pad_token_id
        gen.do_sample, gen.num_beams, gen.max_new_tokens = False, 1, args.max_new_tokens
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.out)
        processor.save_pretrained(args.out)
        for f in args.out.iterdir():
            f.chmod(0o644)  # save_pretrained writes the weights 0600
        import platform
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   platform.processor())
        stats.update(threads=args.threads, cpu=cpu, args={k: str(v) for k, v in vars(args).items()})
        (args.out / "training.json").write_text(json.dumps(stats, indent=1) + "\n")
        print(f"trained {stats['steps']} steps in {stats['seconds']} s, final loss {stats['final_loss']:.4f}", flush=True)

    stats = json.loads((args.out / "training.json").read_text())
    result = evaluate(args.out, args.eval_count, args.eval_seed)
    print(f"accuracy on {result['scenes']} fresh scenes (seed {result['seed']}): {result['exact']} exact = "
          f"{result['accuracy']:.1%}", flush=True)
    for e in result["errors"][:20]:
        print(f"  #{e['index']}: {e['caption']!r} (truth {e['truth']!r})")
    (args.out / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")

    model = Blip2ForConditionalGeneration.from_pretrained(args.out)
    config = model.config
    dtype = "fp32" if next(model.parameters()).dtype == torch.float32 else str(next(model.parameters()).dtype)
    cpp_note = ""
    cpp_file = args.out / "cpp_accuracy.txt"
    if cpp_file.exists():
        cpp_note = "\n\n" + cpp_file.read_text().strip()
    a = stats["args"]
    text = README.format(
        example="red_circle_and_blue_square.png", arch=architecture(config, model), max_new=model.generation_config.max_new_tokens,
        dtype=dtype, seed=a["seed"], steps=stats["steps"], batch=a["batch"], lr=a["lr"], warmup=a["warmup"],
        weight_decay=a["weight_decay"], seconds=stats["seconds"], minutes=stats["seconds"] / 60, threads=stats["threads"], cpu=stats["cpu"],
        loss=stats["final_loss"], scenes=result["scenes"], eval_seed=result["seed"], exact=result["exact"],
        accuracy=result["accuracy"], transformers=transformers.__version__, cpp=cpp_note)
    (args.out / "README.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
