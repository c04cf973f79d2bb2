"""The per-pixel peer methods' cost: our batched windows against the peers' window-at-a-time
loop, and the start-up with the text embeddings cached.

    python benchmarks/peers.py [--width 768] [--layers 12] [--text-width 512] [--text-layers 12]
                               [--threads 2] [--repeats 2] [--benchmark voc21] [--names 0]
                               [--json benchmarks/results/peers-cpu.json]

A random-weight CLIP of ViT-B/16 size (by default) is written as an OpenAI checkpoint. For each
method under its `--benchmark` settings it prints the seconds per 336x500 image (the best of
`--repeats`, after a warm-up):

* batched: `PixelSegmenter` as it runs: all windows of the image in one forward (chunks of 16),
  each window's logits interpolated to the window and added into one sum and count map;
* one window at a time, as the peers' segmentors run it (SCLIP's `forward_slide`): a forward per
  window, its logits interpolated to the window and padded to the whole image, then added;

and their ratio: the same pipeline otherwise (resize, PAMR where set, decide), the same logits
(checked). First the text side alone: the query names x 80 templates embedded at CLIP's full 77
positions (as before issue 27, and as the peers run it) and cut to the batch's longest prompt (now;
the same embeddings, checked), best of `--repeats`; then a first run that embeds them into an empty
text cache and a second that reads them from it. Then the start-up of a segmenter (loading the
checkpoint, the text embeddings) twice: the first run embeds, the second reads the cache. Every method reads SCLIP's
query names of the benchmark (56 on VOC21), so that the methods' times compare. `--names N` keeps the first N
names (the text tower's cost is linear in them; 0: all). CLIP's BPE file: see `find_bpe`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.nn import functional as F

from rim_bench.core.cache_files import file_digest
from rim_bench.stages.backbones.openai_clip import (
    Architecture,
    BpeTokenizer,
    OpenAIClip,
    find_bpe,
    load_openai_clip,
    random_state_dict,
)
from rim_bench.stages.pixel import segment
from rim_bench.stages.pixel.protocol import load_settings
from rim_bench.stages.pixel.text import cached_text_embeddings, imagenet_templates, read_class_file, text_embeddings
from rim_bench.stages.pixel.windows import patch_padding, short_side_padding, slide, window_boxes

METHODS = ("maskclip", "sclip", "naclip", "clearclip")


def one_window_at_a_time(image: torch.Tensor, crop: int, stride: int, dense: Callable[[torch.Tensor], torch.Tensor],
                         chunk: int = 16, pad_to_patch: int = 0, min_side: int = 0) -> torch.Tensor:
    """`windows.slide` as the peers' segmentors loop (logits (Q, H, W)): a forward per window, its
    logits interpolated to the window, then padded to the whole image and added."""
    _, h, w = image.shape
    total = None
    count = image.new_zeros(1, h, w)
    for y1, y2, x1, x2 in window_boxes(h, w, crop, stride):
        pad = (patch_padding(y2 - y1, x2 - x1, pad_to_patch) if pad_to_patch
               else short_side_padding(y2 - y1, x2 - x1, min_side))
        size = (y2 - y1 + pad[2] + pad[3], x2 - x1 + pad[0] + pad[1])
        logits = F.interpolate(dense(F.pad(image[None, :, y1:y2, x1:x2], pad)), size=size, mode="bilinear")
        logits = logits[0, :, pad[2]:pad[2] + y2 - y1, pad[0]:pad[0] + x2 - x1]
        padded = F.pad(logits, (x1, w - x2, y1, h - y2))
        total = padded if total is None else total + padded
        count[:, y1:y2, x1:x2] += 1
    assert total is not None
    return total / count


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def full_context_embeddings(model: OpenAIClip, tokenizer: BpeTokenizer, names: list[str], templates: list[str],
                            batch: int = 400) -> torch.Tensor:
    """`text.text_embeddings` as it ran before issue 27 (and as the peers run it): every prompt at
    CLIP's full 77 positions. The reference for the speed-up of cutting a batch to its prompts."""
    prompts = [t.replace("{}", name) for name in names for t in templates]
    tokens = tokenizer(prompts, model.arch.context)
    embedded = torch.cat([F.normalize(model.encode_text(tokens[i:i + batch]), dim=-1)
                          for i in range(0, len(prompts), batch)])
    return F.normalize(embedded.view(len(names), len(templates), -1).mean(1), dim=-1)


def text_side(checkpoint: Path, names: list[str], cache: Path, repeats: int) -> dict[str, float]:
    """The text side of a peer's start-up, apart from loading the checkpoint: the names x 80
    templates at the full context (before) and cut to the prompts' length (now), then the same
    read from the text cache (a second run)."""
    model, tokenizer = load_openai_clip(checkpoint), BpeTokenizer(find_bpe())
    templates = imagenet_templates()
    full = best_time(partial(full_context_embeddings, model, tokenizer, names, templates), repeats)
    cut = best_time(partial(text_embeddings, model, tokenizer, names, templates), repeats)
    few = names[:2]  # the same embeddings (checked on two names: tests/test_pixel_methods.py checks it to 1e-6)
    assert (full_context_embeddings(model, tokenizer, few, templates)
            - text_embeddings(model, tokenizer, few, templates)).abs().max() < 1e-5
    key = file_digest(checkpoint)
    start = time.perf_counter()
    cached_text_embeddings(model, tokenizer, names, templates, key, cache / "text")  # a first run: embeds, writes
    first = time.perf_counter() - start
    start = time.perf_counter()
    cached_text_embeddings(model, tokenizer, names, templates, key, cache / "text")  # a second run: reads
    second = time.perf_counter() - start
    print(f"text side, {len(names)} names x {len(templates)} templates: full 77 positions {full:.2f} s, cut to the "
          f"prompts {cut:.2f} s (x{full / cut:.2f}); first run {first:.2f} s, cached {second:.3f} s "
          f"(x{first / second:.0f})")
    return {"names": len(names), "full_context": full, "cut": cut, "first": first, "cached": second}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--text-width", type=int, default=512)
    parser.add_argument("--text-layers", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--benchmark", default="voc21")
    parser.add_argument("--names", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arch = Architecture(width=args.width, layers=args.layers, patch=16, grid=14, embed_dim=512, context=77,
                        vocab=49408, text_width=args.text_width, text_layers=args.text_layers)
    image = torch.randint(0, 256, (3, 336, 500), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    results: dict[str, object] = {"arch": arch.__dict__, "threads": args.threads, "image": [336, 500],
                                  "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "ViT-B-16-random.pt"
        torch.save(random_state_dict(arch), checkpoint)
        cache = Path(tmp) / "cache"
        first = load_settings("sclip", args.benchmark)  # SCLIP's names (56 on VOC21) for every method, alike
        names, classes = read_class_file(first.class_file, first.separator)
        if args.names:
            names, classes = names[:args.names], classes[:args.names]
        results["text_s"] = text_side(checkpoint, names, cache, args.repeats)
        starts = []
        for _ in ("first", "second"):
            start = time.perf_counter()
            segment.PixelSegmenter.from_checkpoint(checkpoint, first, cache_dir=cache / "startup", names=names,
                                                   query_class=classes)
            starts.append(time.perf_counter() - start)
        print(f"start-up (load + text), {len(names)} names x 80 templates: first run {starts[0]:.1f} s (text embedded),"
              f" second run {starts[1]:.1f} s (read from the cache): x{starts[0] / starts[1]:.1f}")
        results["startup_s"] = {"names": len(names), "first": starts[0], "second": starts[1]}
        per_method = {}
        for method in args.methods:
            settings = load_settings(method, args.benchmark, short_side=336)
            seg = segment.PixelSegmenter.from_checkpoint(checkpoint, settings, cache_dir=cache, names=names,
                                                         query_class=classes)
            windows = len(window_boxes(336, 500, settings.crop, settings.stride))
            ours = best_time(partial(seg, image), args.repeats)
            logits = seg.logits(image)
            segment.slide = one_window_at_a_time  # the same pipeline, the windows as the peers run them
            theirs = best_time(partial(seg, image), args.repeats)
            assert torch.allclose(seg.logits(image), logits, atol=1e-4)
            segment.slide = slide
            per_method[method] = {"windows": windows, "batched_s": ours, "one_window_at_a_time_s": theirs}
            print(f"{method:9s} {windows} windows: {ours:.2f} s per image batched, {theirs:.2f} s one window at a "
                  f"time: x{theirs / ours:.2f}")
        results["methods"] = per_method
    results["load_after"] = os.getloadavg()[0]
    print(f"load {results['load_before']:.1f} -> {results['load_after']:.1f}, {args.threads} threads")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
