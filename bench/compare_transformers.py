#!/usr/bin/env python3
"""qformer against transformers' own BLIP-2 classes on this machine, in one invocation.

Runs `qformer bench --json` first (its own process: both models at full size do not fit in memory together),
then builds transformers' Blip2ForConditionalGeneration with the same blip2-opt-2.7b shapes, dtype and thread
count (random weights, not initialised by transformers' slow init: uniform noise of the same scale), times the
same four stages the same way (one untimed run, then --repeats timed ones; min and median), and prints the
ratio table (transformers time / qformer time: above 1 means qformer is faster).

    vision   model.vision_model(pixel_values)                          B images, 224 px
    qformer  model.qformer(query_tokens, encoder_hidden_states=...)    the Q-Former in fp32, as transformers keeps it
    decode   model.language_model(next token, past_key_values)         one step after 32 + 8 prompt positions
  int8: the bf16 model with the language model's Linears (and head) replaced by torch.ao's dynamic int8
  quantisation (quantize_dynamic, per-channel weights, activations quantised per call: fbgemm, VNNI), the same
  scheme as qformer's int8 language model; quantize_dynamic runs fp32 activations, so the int8 model is fp32
  around the language model's Linears in torch.
    caption  model.generate(pixel_values, max_new_tokens=min_new_tokens=30), greedy

Usage (the venv of tools/requirements.txt; PyPI torch), from the repository root after building:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/compare_transformers.py --threads 2 --out bench/compare.json
On a GPU (a build with -DQFORMER_CUDA=ON; bench/gpu.sh does this): --device cuda runs `qformer bench --device
cuda` and transformers' model on the same card, each timed run ended by a synchronisation. qformer's vision and
qformer stages are also reported as a replayed CUDA graph (rows "vision_graph", "qformer_graph").
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


SYNCHRONIZE = lambda: None  # torch.cuda.synchronize on a GPU


def timed(repeats: int, run) -> list[float]:
    run()
    SYNCHRONIZE()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        SYNCHRONIZE()
        out.append(time.perf_counter() - t0)
    return out


def build_model(dtype, device="cpu"):
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration
    from transformers.initialization import no_init_weights
    # transformers 5 generates only through <image> placeholders (image_token_index, as the Hub's blip2-opt-2.7b
    # has it: 50265); qformer's run prepends the queries instead: the same 32 + 1 positions.
    config = Blip2Config(text_config=dict(model_type="opt", hidden_size=2560, num_attention_heads=32, ffn_dim=10240,
                                          num_hidden_layers=32, vocab_size=50304, word_embed_proj_dim=2560),
                         image_token_index=50265)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights(), torch.device(device):
            model = Blip2ForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    generator = torch.Generator(device=device).manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.uniform_(-0.0346, 0.0346, generator=generator)  # sd 0.02, as qformer's random_weights
        # transformers keeps the Q-Former and its queries in fp32 (_keep_in_fp32_modules)
        model.qformer.float()
        model.query_tokens.data = model.query_tokens.data.float()
    return model.eval(), config


def bench_transformers(dtype_name: str, batches: list[int], stages: list[str], repeats: int, new_tokens: int,
                       device: str = "cpu") -> list[dict]:
    import torch
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "int8": torch.bfloat16}[dtype_name]
    lm_dtype = torch.float32 if dtype_name == "int8" else dtype
    t0 = time.perf_counter()
    model, config = build_model(dtype, device)
    if dtype_name == "int8":
        # bf16 vision as qformer's int8 runs; torch's dynamic int8 Linear takes fp32 activations, so the projection
        # and the language model go to fp32 around it (built in bf16 first: fp32 + the int8 copy would not fit 24 GB)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        model.language_projection.float()  # its input (the Q-Former's output, cast to the vision dtype) to fp32:
        model.language_projection.register_forward_pre_hook(lambda module, args: tuple(a.float() for a in args))
        model.language_model.float()
        model.language_model = quantize_dynamic(model.language_model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                                dtype=torch.qint8, inplace=True)  # no fp32 deep copy
        gc.collect()
    print(f"transformers: blip2-opt-2.7b {dtype_name} built in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    results = []
    with torch.inference_mode():
        for batch in batches:
            n = batch * 3 * 224 * 224
            pixels = ((torch.arange(n, dtype=torch.int64) * 7919) % 255).float().div(127.5).sub(1.0).reshape(batch, 3, 224, 224)
            pixels = pixels.to(dtype).to(device)

            def add(stage, seconds):
                results.append({"stage": stage, "dtype": dtype_name, "batch": batch, "seconds": seconds,
                                "min_ms": min(seconds) * 1e3, "median_ms": statistics.median(seconds) * 1e3})
                print(f"transformers: {stage:8s} {dtype_name:4s} batch {batch}: min {min(seconds) * 1e3:.1f} ms, "
                      f"median {statistics.median(seconds) * 1e3:.1f} ms", file=sys.stderr, flush=True)

            if "vision" in stages:
                add("vision", timed(repeats, lambda: model.vision_model(pixel_values=pixels)))
            if "qformer" in stages:
                image = ((torch.arange(batch * 257 * 1408) * 7919) % 255).float().div(127.5).sub(1.0).reshape(batch, 257, 1408).to(device)
                queries = model.query_tokens.expand(batch, -1, -1)
                add("qformer", timed(repeats, lambda: model.qformer(query_embeds=queries, encoder_hidden_states=image)))
            if "decode" in stages:
                lm = model.language_model
                embeds = ((torch.arange(batch * 40 * 2560) * 7919) % 255).float().div(2550.0).sub(0.05).reshape(batch, 40, 2560).to(lm_dtype).to(device)
                past = lm(inputs_embeds=embeds, use_cache=True).past_key_values
                token = torch.full((batch, 1), 2, dtype=torch.long, device=device)
                add("decode", timed(repeats, lambda: lm(input_ids=token, past_key_values=past, use_cache=True)))
            if "caption" in stages:
                def caption():  # input_ids None: generate builds 32 <image> placeholders + BOS per row
                    out = model.generate(pixel_values=pixels, max_new_tokens=new_tokens,
                                         min_new_tokens=new_tokens, do_sample=False, num_beams=1)
                    assert out.shape[1] >= new_tokens, out.shape
                add("caption", timed(repeats, caption))
    del model
    gc.collect()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qformer", type=Path, default=Path("build/tools/qformer"), help="the qformer program")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", default="f32,bf16")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--stages", default="vision,qformer,decode,caption")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=30)
    parser.add_argument("--out", type=Path, help="write both runs and the ratios as JSON here")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--omp-wait-policy", default="inherit", choices=["inherit", "passive", "active"],
                        help="OMP_WAIT_POLICY for both runs (set before either OpenMP runtime starts); inherit: as the "
                             "environment has it (unset: libgomp spins briefly, then sleeps)")
    args = parser.parse_args()
    if args.omp_wait_policy != "inherit":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    dtypes, stages = args.dtypes.split(","), args.stages.split(",")
    batches = [int(b) for b in args.batches.split(",")]

    command = [str(args.qformer), "bench", "--json", "--threads", str(args.threads), "--dtypes", args.dtypes,
               "--batches", args.batches, "--stages", args.stages, "--repeats", str(args.repeats),
               "--new-tokens", str(args.new_tokens), "--device", args.device]
    print("qformer:", " ".join(command), file=sys.stderr, flush=True)
    ours = json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)

    import torch
    import transformers
    global SYNCHRONIZE
    if args.device == "cuda":
        SYNCHRONIZE = torch.cuda.synchronize
    else:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
    theirs = []
    for d in dtypes:
        theirs += bench_transformers(d, batches, stages, args.repeats, args.new_tokens, args.device)

    key = lambda r: (r["stage"], r["dtype"], r["batch"])
    by_key = {key(r): r for r in ours["results"]}
    rows = []
    if args.device == "cuda":
        print(f"\nmachine: {ours['machine']['gpu']} (torch sees {torch.cuda.get_device_name(0)}); torch {torch.__version__}, "
              f"transformers {transformers.__version__}\n")
    else:
        print(f"\nmachine: {ours['machine']['cpu']}, {args.threads} threads, OMP_WAIT_POLICY="
              f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; torch {torch.__version__}, transformers "
              f"{transformers.__version__}; peaks in the same run: fp32 FMA {ours['machine']['fp32_fma_gflops']:.0f} GFLOP/s, "
              f"bf16 {ours['machine']['bf16_dot_gflops']:.0f} GFLOP/s, read {ours['machine']['read_gbps']:.1f} GB/s\n")
    print("| stage | dtype | batch | transformers min / median ms | qformer min / median ms | speed-up (min) | qformer rate |")
    print("|---|---|---|---|---|---|---|")
    for t in theirs:
        for variant in ("", "_graph"):  # the GPU run also times vision and qformer as replayed graphs
            q = by_key.get((t["stage"] + variant, t["dtype"], t["batch"]))
            if not q:
                continue
            ratio = t["min_ms"] / q["min_ms"]
            rate = f"{q['rate']:.1f} {q['rate_unit']}" if q["rate_unit"] else ""
            if q["rate_unit"] and q["fraction_of_peak"] > 0:
                rate += f" ({100 * q['fraction_of_peak']:.0f} % of peak)"
            rows.append({"stage": t["stage"] + variant, "dtype": t["dtype"], "batch": t["batch"], "transformers": t, "qformer": q,
                         "speedup": ratio})
            print(f"| {t['stage'] + variant} | {t['dtype']} | {t['batch']} | {t['min_ms']:.3f} / {t['median_ms']:.3f} | "
                  f"{q['min_ms']:.3f} / {q['median_ms']:.3f} | {ratio:.2f}x | {rate} |")
    if args.out:
        args.out.write_text(json.dumps({"machine": ours["machine"], "threads": args.threads, "torch": torch.__version__,
                                        "transformers": transformers.__version__, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
