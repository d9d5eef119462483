#!/usr/bin/env python3
"""Measure the shapes models with qformer's C++ program on the scenes their training scripts evaluated.

Renders the same fresh scenes (same seed, same draws) as PNG files into a temporary folder, runs
`qformer caption --model FOLDER --image SCENES/` (one JSON line per image), and compares the captions with the
truth and with PyTorch's captions in FOLDER/evaluation.json. Writes FOLDER/cpp_accuracy.txt, which
train_captioner.py --eval-only puts into the folder's README.md.

With --task rank (the retrieval model): renders the scenes train_retrieval.py evaluated into two folders (one
shape, two shapes), runs `qformer rank --images FOLDER --texts <every caption of that kind>` on each, and counts
the scenes whose top-ranked caption is the truth; PyTorch's top-1 comes from FOLDER/evaluation.json.

Usage, from the repository root after building the qformer program:
    python tools/shapes/eval_cpp.py --model models/shapes-captioner --cli build/tools/qformer
    python tools/shapes/eval_cpp.py --task rank --model models/shapes-retrieval --cli build/tools/qformer
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import shapes_world as world  # noqa: E402


def evaluate_rank(args) -> int:
    torch_eval = json.loads((args.model / "evaluation.json").read_text())
    count, seed = torch_eval["scenes"], torch_eval["seed"]
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(count)]  # the draws of train_retrieval.evaluate
    torch_top1 = [world.caption(sc) for sc in scenes]
    for e in torch_eval["errors"]:
        torch_top1[e["index"]] = e["top1"]
    every = world.all_captions()
    candidates = {1: every[:12], 2: every[12:]}
    cpp_top1: dict[int, str] = {}
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for n, texts in candidates.items():
            folder = Path(tmp) / f"shapes{n}"
            folder.mkdir()
            for i, scene in enumerate(scenes):
                if len(scene) == n:
                    Image.fromarray(world.render(scene), "RGB").save(folder / f"scene_{i:04d}.png")
            start = time.time()
            run = subprocess.run([str(args.cli), "rank", "--model", str(args.model), "--images", str(folder),
                                  "--top-k", "1", "--threads", str(args.threads), "--texts", *texts],
                                 capture_output=True, text=True, check=True)
            seconds += time.time() - start
            out = json.loads(run.stdout)
            for path, top in zip(out["images"], out["top"]):
                cpp_top1[int(Path(path).stem.split("_")[1])] = top[0]["text"]
    truths = [world.caption(sc) for sc in scenes]
    right = sum(cpp_top1[i] == truths[i] for i in range(count))
    agree = sum(cpp_top1[i] == torch_top1[i] for i in range(count))
    for i in range(count):
        if cpp_top1[i] != truths[i]:
            print(f"  #{i}: C++ {cpp_top1[i]!r}, PyTorch {torch_top1[i]!r}, truth {truths[i]!r}")
    summary = (f"qformer (C++, fp32, `qformer rank --images FOLDER --texts <the kind's captions>`) on the same {count} "
               f"scenes: **top-1 right for {right} / {count} ({right / count:.1%})**; its top-1 equals PyTorch's on "
               f"{agree} / {count} scenes ({seconds:.1f} s for all {count}, {args.threads} threads).")
    print(summary)
    (args.model / "cpp_accuracy.txt").write_text(summary + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/shapes-captioner"))
    parser.add_argument("--cli", type=Path, default=Path("build/tools/qformer"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--task", choices=["caption", "rank"], default="caption")
    args = parser.parse_args()
    if args.task == "rank":
        return evaluate_rank(args)
    torch_eval = json.loads((args.model / "evaluation.json").read_text())
    count, seed = torch_eval["scenes"], torch_eval["seed"]
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(count)]  # the draws of train_captioner.evaluate
    with tempfile.TemporaryDirectory() as tmp:
        names = []
        for i, scene in enumerate(scenes):
            names.append(f"scene_{i:04d}.png")
            Image.fromarray(world.render(scene), "RGB").save(Path(tmp) / names[-1])
        start = time.time()
        run = subprocess.run([str(args.cli), "caption", "--model", str(args.model), "--image", tmp,
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        seconds = time.time() - start
    by_name = {}
    for line in run.stdout.splitlines():
        row = json.loads(line)
        by_name[Path(row["image"]).name] = row.get("caption", "<error: " + row.get("error", "?") + ">")
    cpp = [by_name[n] for n in names]
    truths = [world.caption(sc) for sc in scenes]
    exact = sum(c == t for c, t in zip(cpp, truths))
    agree = sum(c == p for c, p in zip(cpp, torch_eval["captions"]))
    for i, (c, p, t) in enumerate(zip(cpp, torch_eval["captions"], truths)):
        if c != p:
            print(f"  #{i}: C++ {c!r}, PyTorch {p!r}, truth {t!r}")
    summary = (f"qformer (C++, fp32, `qformer caption --image FOLDER`) on the same {count} scenes: **{exact} / {count} "
               f"exactly right ({exact / count:.1%})**; its captions equal PyTorch's on {agree} / {count} scenes "
               f"({seconds:.1f} s for all {count}, {args.threads} threads).")
    print(summary)
    (args.model / "cpp_accuracy.txt").write_text(summary + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
