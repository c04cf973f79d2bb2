"""Per-pixel training-free OVS methods over OpenAI CLIP (MaskCLIP, SCLIP, NACLIP, ClearCLIP, ProxyCLIP).

Each method is one function for CLIP's last image block (`maskclip`, `sclip`, `naclip`,
`clearclip`, `proxyclip`: its attention from a proxy model's features, DINO by default); the
rest is shared and follows the peers' inference: test images resized as mmcv resizes them
(`rim_bench.data.peer_pixels`), text embeddings from the 80 ImageNet templates (`text`), sliding
windows batched in one forward (`windows`), softmax over every query name then max per class,
the area rule and the probability threshold (`decide`), PAMR (`pamr`), per-benchmark settings
read from configs/method/<method>.yaml (`protocol`). `segment.PixelSegmenter` puts them together:
image (3, H, W) uint8 -> label map (H, W).
"""
