#!/usr/bin/env python3
"""Regenerate tests/data/preprocess: BLIP-2 image preprocessing references made by transformers.

    /tmp/refvenv/bin/python tools/make_preprocess_reference.py \
        [--out tests/data/preprocess] [--shared /work/shared/reference/preprocess]

Needs the pinned transformers / torch (tools/requirements.txt) plus Pillow and torchvision matching torch
(Pillow 13.0.0 and torchvision 0.26.0 made the committed files: `pip install pillow==13.0.0 torchvision==0.26.0
--no-deps`). Python never runs in the build or the tests.

transformers 5.17 has two BLIP image processors, and they differ by up to 2 LSB after the resize:
    BlipImageProcessorPil   PIL path: Image.resize(BICUBIC) on uint8, numpy rescale / normalise  -> backend "pil"
    BlipImageProcessor      torchvision path (antialiased uint8 resize, fused rescale + normalise) -> backend
                            "torchvision"; without torchvision installed it falls back to the PIL path, so this
                            script refuses to run without torchvision.
The shared reference (/work/shared/reference/preprocess/reference.safetensors) was made by the torchvision path:
its "<img>_<S>" and "<img>_<S>_fast" tensors are identical, and equal to BlipImageProcessor with torchvision.

What is written into --out
--------------------------
chelsea.png, gradient.png          copied from --shared (451 x 300 and 131 x 97 RGB)
<unusual images>                   made here, deterministic (see make_images): gray, gray + alpha, RGBA,
                                   16-bit gray / RGB / gray + alpha, 1-bit and 4-bit gray, palette with
                                   transparency, Adam7-interlaced, 3 x 2, baseline / 4:4:4 / progressive /
                                   gray / CMYK JPEG; all 40 x 30 except tiny_3x2.png
preprocessor_config.json           BlipImageProcessorPil(size=224).save_pretrained: transformers' own file
reference.safetensors              F32 pixel_values [1, 3, H, W], one tensor per case; "*_decoded" ones are the
                                   decoded pixels as PIL's convert("RGB") gives them (no resize / rescale /
                                   normalise), to measure the JPEG decoder difference in levels
reference.json                     per tensor: image, backend, size, resample, do_rescale, do_normalize,
                                   whether the decode is PNG (bit-exact in stb) or JPEG; plus versions

Every image is opened with PIL.Image.open(path) and handed to the processor as is (no EXIF transpose), the way
`processor(images=Image.open(path))` runs. The C++ test reads reference.json and reproduces every case.
"""

import argparse
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from PIL import Image
from safetensors.numpy import load_file, save_file

# ---------------------------------------------------------------------------------------------------------------
# A minimal PNG writer for what Pillow cannot save: 16-bit RGB / gray + alpha, 4-bit gray, Adam7 interlacing.

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _pack_rows(a, bit_depth):
    """a: (h, w, c) integer samples -> filtered scanlines (filter type 0)."""
    out = b""
    for row in a:
        flat = row.reshape(-1)
        if bit_depth == 16:
            data = flat.astype(">u2").tobytes()
        elif bit_depth == 8:
            data = flat.astype(np.uint8).tobytes()
        else:
            per = 8 // bit_depth
            padded = np.zeros(((len(flat) + per - 1) // per) * per, np.uint8)
            padded[: len(flat)] = flat
            data = bytes(
                sum(int(v) << (8 - bit_depth * (k + 1)) for k, v in enumerate(padded[i : i + per]))
                for i in range(0, len(padded), per)
            )
        out += b"\x00" + data
    return out


def write_png(path, a, color_type, bit_depth, interlace=False):
    if a.ndim == 2:
        a = a[:, :, None]
    h, w = a.shape[:2]
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = a[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += _pack_rows(sub, bit_depth)
    else:
        raw = _pack_rows(a, bit_depth)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")
    Path(path).write_bytes(png)


# ---------------------------------------------------------------------------------------------------------------


def base_rgb(w=40, h=30, seed=0):
    """Smooth gradients, a sine pattern and some noise: every resize tap matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / (w - 1)
    g = 127.5 + 127.5 * np.sin(x / 3.0 + y / 4.0)
    b = 255 * y / (h - 1)
    rgb = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def make_images(out):
    rgb = base_rgb()
    h, w = rgb.shape[:2]
    gray = np.round(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    alpha = ((np.arange(w)[None, :] * 7 + np.arange(h)[:, None] * 13) % 256).astype(np.uint8)
    alpha[0, :5] = 0  # fully transparent pixels keep their colour in PIL's convert("RGB")
    files = {}

    def save(name, im, **kw):
        im.save(out / name, **kw)
        files[name] = Image.open(out / name).mode

    save("gray.png", Image.fromarray(gray, "L"))
    save("gray_alpha.png", Image.fromarray(np.stack([gray, alpha], -1), "LA"))
    save("rgba.png", Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA"))
    gray16 = (gray.astype(np.uint16) * 4 + np.arange(w, dtype=np.uint16)[None, :])  # 0..1059: most clip to 255
    save("gray16.png", Image.fromarray(gray16))  # mode I;16
    rgb16 = rgb.astype(np.uint16) * 257 + (np.arange(w, dtype=np.uint16)[None, :, None] * 5)
    write_png(out / "rgb16.png", rgb16, 2, 16)
    files["rgb16.png"] = Image.open(out / "rgb16.png").mode
    la16 = np.stack([gray.astype(np.uint16) * 256 + 255, alpha.astype(np.uint16) * 257], -1)
    write_png(out / "gray_alpha16.png", la16, 4, 16)
    files["gray_alpha16.png"] = Image.open(out / "gray_alpha16.png").mode
    write_png(out / "gray4.png", (gray >> 4), 0, 4)
    files["gray4.png"] = Image.open(out / "gray4.png").mode
    save("gray1.png", Image.fromarray(gray > 128))  # mode 1
    pal = Image.fromarray(rgb, "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=61)
    save("palette.png", pal, transparency=3)
    write_png(out / "interlaced.png", rgb, 2, 8, interlace=True)
    files["interlaced.png"] = Image.open(out / "interlaced.png").mode
    save("tiny_3x2.png", Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                                                   [[255, 255, 255], [0, 0, 0], [128, 64, 32]]], np.uint8)))
    im = Image.fromarray(rgb, "RGB")
    save("baseline.jpg", im, quality=90)  # 4:2:0
    save("baseline_444.jpg", im, quality=90, subsampling=0)
    save("progressive.jpg", im, quality=90, progressive=True)
    save("gray.jpg", Image.fromarray(gray, "L"), quality=90)
    save("cmyk.jpg", im.convert("CMYK"), quality=90)
    return files


def processor(backend, height, width, **kw):
    from transformers import BlipImageProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    cls = BlipImageProcessorPil if backend == "pil" else BlipImageProcessor
    p = cls(size={"height": height, "width": width}, **kw)
    if p.backend != backend:
        raise SystemExit(f"BlipImageProcessor runs the {p.backend} backend here: install torchvision")
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests/data/preprocess"))
    ap.add_argument("--shared", default="/work/shared/reference/preprocess")
    args = ap.parse_args()
    out, shared = Path(args.out), Path(args.shared)
    out.mkdir(parents=True, exist_ok=True)
    for name in ["chelsea.png", "gradient.png"]:
        shutil.copyfile(shared / name, out / name)
    modes = make_images(out)
    modes.update({n: Image.open(out / n).mode for n in ["chelsea.png", "gradient.png"]})
    processor("pil", 224, 224).save_pretrained(out)

    cases = {}

    def case(name, image, backend, height, width, resample=3, do_resize=True, do_rescale=True, do_normalize=True):
        p = processor(backend, height, width, resample=resample, do_resize=do_resize, do_rescale=do_rescale,
                      do_normalize=do_normalize)
        pv = p(Image.open(out / image), return_tensors="pt")["pixel_values"]
        cases[name] = dict(
            tensor=pv.to(torch.float32).numpy(), image=image, mode=modes[image], backend=backend, size=[height, width],
            resample=resample, do_resize=do_resize, do_rescale=do_rescale, do_normalize=do_normalize,
            codec="jpeg" if image.endswith(".jpg") else "png")

    # The real images at 224 and 364 (the two BLIP-2 sizes) on the PIL path. (The torchvision path at those sizes
    # is the shared reference itself; the C++ test compares with it where the shared folder is present.)
    case("chelsea_224_pil", "chelsea.png", "pil", 224, 224)
    case("chelsea_364_pil", "chelsea.png", "pil", 364, 364)
    # Unusual inputs at 32 x 32 (40 x 30 sources: horizontal downscale, vertical upscale).
    for image in sorted(modes):
        if image not in ("chelsea.png", "gradient.png"):
            case(f"{Path(image).stem}_{Path(image).suffix[1:]}_32_pil", image, "pil", 32, 32)
    # The decoded pixels themselves (no resize, rescale or normalise) where the decoders may differ.
    for image in ["baseline.jpg", "baseline_444.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg", "gray16.png",
                  "palette.png", "gray_alpha16.png"]:
        case(f"{Path(image).stem}_{Path(image).suffix[1:]}_decoded", image, "pil", 30, 40, do_resize=False,
             do_rescale=False, do_normalize=False)
    case("chelsea_32_torchvision", "chelsea.png", "torchvision", 32, 32)
    case("tiny_3x2_32_torchvision", "tiny_3x2.png", "torchvision", 32, 32)
    case("rgba_32_torchvision", "rgba.png", "torchvision", 32, 32)
    # Other PIL filters and non-square sizes (48 wide, 40 high), rescale / normalise switched off.
    for resample, fname in [(2, "bilinear"), (1, "lanczos"), (4, "box"), (5, "hamming")]:
        case(f"gradient_40x48_{fname}_pil", "gradient.png", "pil", 40, 48, resample=resample)
    case("gradient_40x48_bilinear_torchvision", "gradient.png", "torchvision", 40, 48, resample=2)
    for backend in ["pil", "torchvision"]:
        case(f"gradient_40x48_norescale_{backend}", "gradient.png", backend, 40, 48, do_rescale=False)
        case(f"gradient_40x48_nonormalize_{backend}", "gradient.png", backend, 40, 48, do_normalize=False)
        case(f"gradient_40x48_raw_{backend}", "gradient.png", backend, 40, 48, do_rescale=False,
             do_normalize=False)

    save_file({k: np.ascontiguousarray(v["tensor"]) for k, v in cases.items()}, str(out / "reference.safetensors"))
    meta = {
        "how": "pixel_values = processor(Image.open(image), return_tensors='pt'); backend pil = "
               "BlipImageProcessorPil, torchvision = BlipImageProcessor with torchvision installed; "
               "made by tools/make_preprocess_reference.py",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "Pillow": PIL.__version__, "torchvision": __import__("torchvision").__version__},
        "tensors": {k: {kk: vv for kk, vv in v.items() if kk != "tensor"} | {"shape": list(v["tensor"].shape)}
                    for k, v in cases.items()},
    }
    (out / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")

    # Cross-checks against the shared reference (printed, not stored).
    ref_path = shared / "reference.safetensors"
    if ref_path.exists():
        ref = load_file(str(ref_path))
        for name in sorted(ref):
            base, size = name.split("_")[0], int(name.split("_")[1])
            tv = processor("torchvision", size, size)(Image.open(shared / f"{base}.png"), return_tensors="pt")
            pil = processor("pil", size, size)(Image.open(shared / f"{base}.png"), return_tensors="pt")
            print(f"shared {name:22s} torchvision max|diff| {np.abs(tv['pixel_values'].numpy() - ref[name]).max():.3g}"
                  f"  pil max|diff| {np.abs(pil['pixel_values'].numpy() - ref[name]).max():.3g}")
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"{len(cases)} tensors; {out} holds {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
