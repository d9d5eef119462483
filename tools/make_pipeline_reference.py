#!/usr/bin/env python3
"""Hub-shaped tiny BLIP-2 folders and transformers' end-to-end answers for them.

A Hub folder for captioning holds more than weights: config.json with image_token_index,
generation_config.json, preprocessor_config.json, tokenizer files and sharded safetensors.
This script makes such a folder for a tiny random OPT (and Flan-T5) BLIP-2 whose tokenizer is a
real byte-level BPE (Unigram for T5) tokenizer, and a retrieval folder (WordPiece, ITM / ITC), saves it with transformers' own save_pretrained
(model and Blip2Processor), renders a test image, and records what

    processor(images=image, text=prompt) -> model.generate(...) -> processor.batch_decode(new tokens)

gives for a few prompts and decoding settings. The C++ pipeline (qformer caption / vqa) must
produce the same token ids and text from nothing but the folder and the image.

Usage (the venv of tools/requirements.txt), from the repository root:
    python tools/make_pipeline_reference.py --out tests/data
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, processors
from transformers import (Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, Blip2Processor,
                          BlipImageProcessor, PreTrainedTokenizerFast)

sys.path.insert(0, str(Path(__file__).parent))
import make_reference as ref  # noqa: E402  (build_config, randomize_weights, fill_size_defaults)

SHARED_TOKENIZERS = Path(__file__).resolve().parent.parent / "tests" / "data" / "tokenizer"


def render_test_image(path: Path) -> Image.Image:
    """A 40 x 30 RGB pattern: a colour gradient with a dark disk (not square, so the resize matters)."""
    h, w = 30, 40
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 6, y * 8, 255 - x * 3], axis=-1).astype(np.float64)
    disk = (x - 26) ** 2 + (y - 12) ** 2 < 64
    img[disk] = [20, 30, 40]
    image = Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")
    image.save(path)
    return image


def opt_tokenizer() -> PreTrainedTokenizerFast:
    """The shared byte-level BPE tokenizer with OPT's post-processing ("</s>" before every text)."""
    tok = Tokenizer.from_file(str(SHARED_TOKENIZERS / "bpe_tokenizer.json"))
    bos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def t5_tokenizer() -> PreTrainedTokenizerFast:
    """The shared Unigram tokenizer with T5's post-processing ("</s>" after every text)."""
    tok = Tokenizer.from_file(str(SHARED_TOKENIZERS / "unigram_tokenizer.json"))
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def bert_tokenizer() -> PreTrainedTokenizerFast:
    """The shared WordPiece tokenizer with BERT's post-processing ("[CLS] $A [SEP]"), as blip2-itm-vit-g's."""
    tok = Tokenizer.from_file(str(SHARED_TOKENIZERS / "wordpiece_tokenizer.json"))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]", mask_token="[MASK]", padding_side="right")


def build_retrieval_folder(out: Path, seed: int) -> tuple:
    tokenizer = bert_tokenizer()
    image_processor = BlipImageProcessor(size={"height": 28, "width": 28})
    sizes = ref.fill_size_defaults(argparse.Namespace(kind="retrieval", **{k: None for k in ref.SIZE_FLAG_HELP}, seed=seed))
    # No num_query_tokens: blip2-itm-vit-g's processor adds no <image> placeholders to the text.
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer)
    sizes.qformer_vocab = len(tokenizer)
    config = ref.build_config("retrieval", sizes)
    config.qformer_config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(config).eval()
    ref.randomize_weights(model, torch.Generator().manual_seed(seed))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return Blip2ForImageTextRetrieval.from_pretrained(out).eval(), Blip2Processor.from_pretrained(out)


RETRIEVAL_TEXTS = ["a red circle", "two blue squares on the left", "a photo of a cat", "Question: what is this?"]


@torch.no_grad()
def retrieval_answers(model, processor, images: list) -> dict:
    """ITM probability of every (image, text) pair and the ITC similarity matrix."""
    itm = []
    for image in images:
        row = []
        for text in RETRIEVAL_TEXTS:
            inputs = processor(images=image, text=text, return_tensors="pt")
            logits = model(**inputs, use_image_text_matching_head=True).logits_per_image
            row.append(torch.softmax(logits, dim=1)[0, 1].item())
        itm.append(row)
    inputs = processor(images=images, text=RETRIEVAL_TEXTS, return_tensors="pt", padding=True)
    itc = model(**inputs, use_image_text_matching_head=False).logits_per_image
    return {"texts": RETRIEVAL_TEXTS, "itm_probability": itm, "itc_similarity": itc.tolist(),
            "text_ids": [processor.tokenizer(t)["input_ids"] for t in RETRIEVAL_TEXTS]}


def build_folder(kind: str, out: Path, seed: int) -> tuple:
    tokenizer = opt_tokenizer() if kind == "opt" else t5_tokenizer()
    image_processor = BlipImageProcessor(size={"height": 28, "width": 28})
    sizes = ref.fill_size_defaults(argparse.Namespace(kind=kind, **{k: None for k in ref.SIZE_FLAG_HELP}, seed=seed))
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=sizes.num_query_tokens)
    sizes.text_vocab = len(tokenizer)  # includes the <image> token the processor added
    config = ref.build_config(kind, sizes)
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    text = config.text_config
    if kind == "opt":
        text.bos_token_id = text.eos_token_id = tokenizer.convert_tokens_to_ids("</s>")
        text.pad_token_id = tokenizer.convert_tokens_to_ids("<pad>")
    else:
        text.eos_token_id = text.bos_token_id = tokenizer.convert_tokens_to_ids("</s>")
        text.pad_token_id = text.decoder_start_token_id = tokenizer.convert_tokens_to_ids("<pad>")
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    ref.randomize_weights(model, torch.Generator().manual_seed(seed))
    model.generation_config.bos_token_id = text.bos_token_id
    model.generation_config.eos_token_id = text.eos_token_id
    model.generation_config.pad_token_id = text.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="200KB")  # sharded, with model.safetensors.index.json
    processor.save_pretrained(out)
    # Reload exactly what a user downloads.
    return Blip2ForConditionalGeneration.from_pretrained(out).eval(), Blip2Processor.from_pretrained(out)


CASES = [
    {"prompt": "", "options": {"max_new_tokens": 20}},  # what `qformer caption` does with no flags
    {"prompt": "", "options": {"max_new_tokens": 8}},
    {"prompt": "", "options": {"max_new_tokens": 6, "num_beams": 3}},
    {"prompt": "a photo of", "options": {"max_new_tokens": 6}},
    {"prompt": "Question: what is in the picture? Answer:", "options": {"max_new_tokens": 5, "num_beams": 2, "length_penalty": 0.0}},
    {"prompt": "a photo of", "options": {"max_new_tokens": 6, "repetition_penalty": 1.5}},
]


@torch.no_grad()
def answers(model, processor, image: Image.Image) -> list[dict]:
    out = []
    for case in CASES:
        prompt = case["prompt"]
        inputs = processor(images=image, text=prompt or None, return_tensors="pt")
        ids = model.generate(**inputs, **case["options"], do_sample=False)
        if model.config.use_decoder_only_language_model:
            new = ids[:, inputs["input_ids"].shape[1]:] if "input_ids" in inputs else ids[:, model.config.num_query_tokens + 1:]
        else:
            new = ids[:, 1:]  # decoder_start_token_id
        out.append({**case, "prompt_ids": inputs["input_ids"][0].tolist() if "input_ids" in inputs else None,
                    "ids": new[0].tolist(), "text": processor.batch_decode(new, skip_special_tokens=True)[0].strip()})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder that receives tiny-*-hub/ and images/")
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    image = render_test_image(args.out / "images" / "pattern.png")
    import transformers
    for kind in ("opt", "t5"):
        folder = args.out / f"tiny-{kind}-hub"
        model, processor = build_folder(kind, folder, args.seed)
        cases = answers(model, processor, Image.open(args.out / "images" / "pattern.png"))
        (folder / "pipeline_reference.json").write_text(json.dumps(
            {"transformers": transformers.__version__, "image": "../images/pattern.png", "cases": cases}, indent=1) + "\n")
        for c in cases:
            print(f"{kind}: {c['prompt']!r} {c['options']} -> {c['ids']} {c['text']!r}")
    folder = args.out / "tiny-retrieval-hub"
    model, processor = build_retrieval_folder(folder, args.seed)
    flipped = Image.open(args.out / "images" / "pattern.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    flipped.save(args.out / "images" / "pattern_flipped.png")
    images = ["pattern.png", "pattern_flipped.png"]
    answers_ = retrieval_answers(model, processor, [Image.open(args.out / "images" / name) for name in images])
    (folder / "pipeline_reference.json").write_text(json.dumps(
        {"transformers": transformers.__version__, "images": ["../images/" + n for n in images], **answers_}, indent=1) + "\n")
    print("retrieval:", answers_)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
