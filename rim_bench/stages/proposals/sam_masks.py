"""SAM's automatic masks: segment-anything's `SamAutomaticMaskGenerator`, computed in less time.

`SamMaskGenerator(sam, ...)` takes a segment-anything ``Sam`` and the generator's own settings
(point grid, crop layers, ``pred_iou_thresh``, ``stability_score_thresh`` and its offset, box and
crop NMS) and returns the masks that ``SamAutomaticMaskGenerator(..., output_mode="binary_mask")``
returns with ``min_mask_region_area=0``, in its order, with the same scores, boxes and points.
Each step follows segment-anything's `automatic_mask_generator.py` and `utils/amg.py` (v1.0):
the image and the points are resized as `SamPredictor` resizes them, the mask logits are upscaled
with the same two bilinear interpolations, the stability score is taken on those full-size logits,
and duplicates are removed with the same torchvision ``batched_nms`` on the same boxes.

Where the time goes instead (measured in ``benchmarks/sam_masks.py``):

- the prompt decoder's two-way transformer computes each point's attention in a cheaper order:
  what depends on the image alone (the first layer's image-side projections) once per image, and
  the image tokens' projections folded into the few prompt tokens' side (a ``(T, C)`` product
  instead of an ``(N, C)`` one, T = 7 tokens against N = 4,096 image tokens);
- the mask upscaling (the decoder's own and the interpolations to the image) runs only over the
  rows and columns of the resized image, not SAM's padding, which is cropped away after it
  (exact: a transposed convolution of stride 2 and kernel 2 maps each input pixel to its own
  output pixels, and the interpolations read one row or column beyond at most);
- masks below ``pred_iou_thresh`` are dropped before they are upscaled;
- masks stay binary (packed 8 pixels a byte between the batches), with no run-length encoding
  and decoding of every mask.

What can differ: sums are taken in another order, so logits, scores and IoU predictions differ
from segment-anything's in their last bits (about 1e-6 relative): a pixel whose logit lies that
close to the threshold may flip, and two boxes whose IoU lies that close to an NMS threshold may
be kept where segment-anything drops one (or the other way round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.ops import batched_nms


@dataclass
class MaskSet:
    """SAM's masks of one image, in segment-anything's order.

    masks ``(N, H, W) bool``; iou_preds, stability ``(N,)``; boxes ``(N, 4)`` x0, y0, x1, y1 of the
    mask's first and last pixel (0s for an empty mask); points ``(N, 2)`` x, y of each mask's prompt;
    crop_boxes ``(N, 4)`` x0, y0, x1, y1 of the crop it came from. All in image pixels.
    """

    masks: Tensor
    iou_preds: Tensor
    stability: Tensor
    boxes: Tensor
    points: Tensor
    crop_boxes: Tensor


def point_grid(n_per_side: int) -> np.ndarray:
    """``(n², 2)`` x, y in [0, 1]: the centres of an n x n grid of cells, row by row."""
    side = np.linspace(1 / (2 * n_per_side), 1 - 1 / (2 * n_per_side), n_per_side)
    return np.stack(np.meshgrid(side, side), axis=-1).reshape(-1, 2)


def crop_boxes(height: int, width: int, n_layers: int, overlap_ratio: float) -> list[tuple[list[int], int]]:
    """The image (layer 0), then (2^i)² overlapping crops in layer i: ``([x0, y0, x1, y1], layer)``."""
    boxes = [([0, 0, width, height], 0)]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * min(height, width) * (2 / n))
        crop_w, crop_h = (int(math.ceil((overlap * (n - 1) + side) / n)) for side in (width, height))
        for x0 in (int((crop_w - overlap) * i) for i in range(n)):
            for y0 in (int((crop_h - overlap) * i) for i in range(n)):
                boxes.append(([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)], layer))
    return boxes


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """SAM's input size: the long side scaled to `long_side`, the other rounded half up."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def mask_boxes(masks: Tensor) -> Tensor:
    """``(N, H, W) bool`` → ``(N, 4)`` int64 x0, y0, x1, y1 of the first and last pixel; 0s if empty."""
    boxes = []
    for along in (-2, -1):  # columns with a pixel, then rows with a pixel
        hit = masks.any(along)
        size = hit.shape[-1]
        first = hit.to(torch.uint8).argmax(-1)
        last = size - 1 - hit.flip(-1).to(torch.uint8).argmax(-1)
        boxes += [first, last]
    out = torch.stack([boxes[0], boxes[2], boxes[1], boxes[3]], dim=-1)
    return out * masks.flatten(1).any(1, keepdim=True)


def pack_bits(masks: Tensor) -> Tensor:
    """``(N, H, W) bool`` → ``(N, H, ceil(W / 8)) uint8``, 8 pixels a byte."""
    pad = -masks.shape[-1] % 8
    bits = F.pad(masks, (0, pad)).view(*masks.shape[:-1], (masks.shape[-1] + pad) // 8, 8).to(torch.uint8)
    return (bits << torch.arange(7, -1, -1, dtype=torch.uint8, device=masks.device)).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, width: int) -> Tensor:
    """The inverse of `pack_bits`: ``(N, H, ceil(W / 8)) uint8`` → ``(N, H, W) bool``."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    return ((packed[..., None] >> shifts) & 1).flatten(-2)[..., :width].bool()


class SamMaskGenerator:
    """segment-anything's `SamAutomaticMaskGenerator` (``output_mode="binary_mask"``,
    ``min_mask_region_area=0``): a grid of point prompts over the image and over crops of it,
    filtered by predicted IoU and stability, de-duplicated by box NMS within and across crops.

    Args (segment-anything's names and defaults):
        sam: a segment-anything ``Sam`` (its image encoder, prompt encoder and mask decoder are run).
        points_per_side: the grid is points_per_side² points over the image, fewer on crops
            (divided by ``crop_n_points_downscale_factor`` per layer).
        points_per_batch: points decoded at once (memory, not the result).
        pred_iou_thresh, stability_score_thresh: masks at or below / below them are dropped (0: off).
        stability_score_offset: the logit shift of the stability score.
        box_nms_thresh, crop_nms_thresh: the box IoU above which a mask is a duplicate.
        crop_n_layers, crop_overlap_ratio: crop layers run after the whole image, and their overlap.
    """

    def __init__(self, sam: Any, points_per_side: int = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1) -> None:
        self.sam = sam
        self.grids = [point_grid(int(points_per_side / crop_n_points_downscale_factor**i))
                      for i in range(crop_n_layers + 1)]
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> MaskSet:
        """``(H, W, 3) uint8`` RGB → its masks (N may be 0)."""
        height, width = image.shape[:2]
        crops = [self._crop(image, box, layer) for box, layer in
                 crop_boxes(height, width, self.crop_n_layers, self.crop_overlap_ratio)]
        packed = [c.pop("packed") for c in crops]
        found = {key: torch.cat([c[key] for c in crops]) for key in crops[0]}
        keep = torch.arange(len(found["boxes"]), device=found["boxes"].device)
        if len(crops) > 1:  # duplicates across crops: the mask from the smaller crop wins
            crop = found["crop_boxes"]
            scores = 1 / ((crop[:, 2] - crop[:, 0]) * (crop[:, 3] - crop[:, 1]))
            keep = batched_nms(found["boxes"].float(), scores, torch.zeros_like(scores), self.crop_nms_thresh)
        masks = torch.zeros((len(keep), height, width), dtype=torch.bool, device=keep.device)
        which = torch.cat([torch.full((len(p),), i, device=keep.device) for i, p in enumerate(packed)])
        row = torch.cat([torch.arange(len(p), device=keep.device) for p in packed])
        for out, k in enumerate(keep.tolist()):
            x0, y0, x1, y1 = found["crop_boxes"][k].tolist()
            masks[out, y0:y1, x0:x1] = unpack_bits(packed[int(which[k])][int(row[k])], x1 - x0)
        return MaskSet(masks, **{key: value[keep] for key, value in found.items()})

    def _crop(self, image: np.ndarray, crop_box: list[int], layer: int) -> dict[str, Tensor]:
        """The masks of one crop, de-duplicated: packed ``(n, h, ceil(w / 8))`` in the crop's frame,
        the rest in the image's frame (`MaskSet`'s fields)."""
        sam, device = self.sam, self.sam.device
        x0, y0, x1, y1 = crop_box
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        size = (y1 - y0, x1 - x0)
        long_side = sam.image_encoder.img_size
        resized = resized_shape(*size, long_side)
        pixels = np.array(Image.fromarray(crop).resize(resized[::-1], Image.Resampling.BILINEAR))  # as SamPredictor
        pixels_t = torch.as_tensor(pixels, device=device).permute(2, 0, 1).contiguous()[None]
        decoder = _PointDecoder(sam, sam.image_encoder(sam.preprocess(pixels_t)))
        # Low-res rows and columns that the upscaling to the resized image reads (one beyond, at most)
        low_res = 4 * decoder.shape[0]
        factor = long_side // low_res
        rows, cols = (min(low_res, -(-side // factor) + 1) for side in resized)

        points = self.grids[layer] * np.array(size)[None, ::-1]  # (P, 2) x, y in the crop, float64
        prompts = points * (np.array(resized) / np.array(size))[None, ::-1]
        found: dict[str, list[Tensor]] = {"packed": [], "iou_preds": [], "stability": [], "boxes": [], "points": []}
        for start in range(0, len(points), self.points_per_batch):
            coords = torch.as_tensor(prompts[start:start + self.points_per_batch], device=device)[:, None]
            labels = torch.ones(coords.shape[:2], dtype=torch.int, device=device)
            tokens, _ = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            low, iou = decoder(tokens, rows, cols)  # (B, 3, >= rows, >= cols), (B, 3)
            low, iou = low.flatten(0, 1), iou.flatten(0, 1)
            where = torch.as_tensor(points[start:start + self.points_per_batch], device=device).repeat_interleave(3, 0)
            if self.pred_iou_thresh > 0:
                keep = iou > self.pred_iou_thresh
                low, iou, where = low[keep], iou[keep], where[keep]
            batch = self._masks(low[:, None], resized, size, factor, crop_box, image.shape[:2])
            keep = batch.pop("keep")
            found["iou_preds"].append(iou[keep])
            found["points"].append(where[keep])
            for key, value in batch.items():
                found[key].append(value)
        stats = {key: torch.cat(value) for key, value in found.items()}
        keep = batched_nms(stats["boxes"].float(), stats["iou_preds"], torch.zeros_like(stats["iou_preds"]),
                           self.box_nms_thresh)
        stats = {key: value[keep] for key, value in stats.items()}
        offset = torch.tensor([x0, y0], device=device)
        stats["boxes"] = stats["boxes"] + offset.repeat(2)
        stats["points"] = stats["points"] + offset
        stats["crop_boxes"] = torch.tensor([crop_box], device=device).expand(len(keep), -1)
        return stats

    def _masks(self, low: Tensor, resized: tuple[int, int], size: tuple[int, int], factor: int,
               crop_box: list[int], image_size: tuple[int, ...]) -> dict[str, Tensor]:
        """``(n, 1, h, w)`` low-res logits → the masks that pass the stability and crop-edge filters:
        ``keep`` (n,) bool, and for those, ``packed`` masks, ``stability`` and crop-frame ``boxes``."""
        up = F.interpolate(low, (factor * low.shape[-2], factor * low.shape[-1]), mode="bilinear",
                           align_corners=False)
        logits = F.interpolate(up[..., : resized[0], : resized[1]], size, mode="bilinear", align_corners=False)[:, 0]
        threshold, offset = self.sam.mask_threshold, self.stability_score_offset
        stability = (logits > threshold + offset).sum((-2, -1)) / (logits > threshold - offset).sum((-2, -1))
        keep = stability >= self.stability_score_thresh if self.stability_score_thresh > 0 else \
            torch.ones_like(stability, dtype=torch.bool)
        masks = logits[keep] > threshold
        boxes = mask_boxes(masks)
        # Masks that touch a crop's edge inside the image are cut by the crop: dropped
        x0, y0, x1, y1 = crop_box
        image_box = torch.tensor([0, 0, image_size[1], image_size[0]], dtype=torch.float, device=boxes.device)
        crop = torch.tensor(crop_box, dtype=torch.float, device=boxes.device)
        framed = (boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)).float()
        cut = (torch.isclose(framed, crop, atol=20, rtol=0) & ~torch.isclose(framed, image_box, atol=20, rtol=0)).any(1)
        keep[keep.clone()] = ~cut
        return {"keep": keep, "packed": pack_bits(masks[~cut]), "stability": stability[keep], "boxes": boxes[~cut]}


class _PointDecoder:
    """segment-anything's `MaskDecoder` for single-point prompts over one image embedding.

    Equal to ``MaskDecoder(image_embeddings, image_pe, sparse, dense, multimask_output=True)``
    up to float rounding, with its two-way transformer's attention evaluated in a cheaper order
    (see the module's docstring) and its upscaling run as matrix products over channels-last
    tensors, only over the first rows and columns. Attention weights below: W ``(H·d, C)`` split
    into heads ``(H, d, C)``; N image tokens, T prompt tokens, B prompts. Attention weights are
    kept as ``(B, H·T, N)``: a softmax over T then runs along a long inner dimension.
    """

    def __init__(self, sam: Any, embedding: Tensor) -> None:
        """`embedding`: ``(1, C, h, w)`` the image encoder's output."""
        self.decoder: Any = sam.mask_decoder  # duck-typed: segment-anything's module tree
        self.transformer = self.decoder.transformer
        prompt = sam.prompt_encoder
        self.shape = embedding.shape[-2:]
        src = embedding + prompt.no_mask_embed.weight.reshape(1, -1, 1, 1)  # no mask prompt
        self.keys = src.flatten(2).transpose(1, 2).contiguous()  # (1, N, C)
        self.key_pe = prompt.get_dense_pe().flatten(2).transpose(1, 2).contiguous()  # (1, N, C)
        first = self.transformer.layers[0]
        assert first.skip_first_layer_pe, "segment-anything's TwoWayTransformer"
        keys_pe = self.keys + self.key_pe
        # The first layer's keys are the image's alone: its image-side projections, once.
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        self.first_k = _heads(t2i.k_proj(keys_pe), t2i.num_heads)[0].transpose(1, 2).contiguous()  # (H, d, N)
        self.first_v = _heads(t2i.v_proj(self.keys), t2i.num_heads)[0].contiguous()  # (H, N, d)
        self.first_q = _heads(i2t.q_proj(keys_pe), i2t.num_heads)[0].transpose(1, 2).contiguous()  # (H, d, N)
        self.upscaling = [_as_matrix(self.decoder.output_upscaling[i]) for i in (0, 3)]

    def __call__(self, tokens: Tensor, rows: int, cols: int) -> tuple[Tensor, Tensor]:
        """`tokens`: ``(B, 2, C)`` the prompt encoder's point embeddings (point, padding).

        Returns ``(B, 3, 4 ceil(rows / 4), 4 ceil(cols / 4))`` low-resolution mask logits: the top
        left of SAM's ``(B, 3, 4h, 4w)``, and ``(B, 3)`` IoU predictions.
        """
        decoder, transformer = self.decoder, self.transformer
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        query_pe = torch.cat([output_tokens.unsqueeze(0).expand(len(tokens), -1, -1), tokens], dim=1)  # (B, T, C)
        queries, keys = query_pe, self.keys
        keys_pe: Tensor | None = None  # keys + positional encoding, once per layer
        for i, layer in enumerate(transformer.layers):
            if i == 0:
                queries = layer.norm1(layer.self_attn(q=queries, k=queries, v=queries))
                out = self._first_token_to_image(layer.cross_attn_token_to_image, queries + query_pe)
            else:
                q = queries + query_pe
                queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
                keys_pe = keys + self.key_pe
                out = self._token_to_image(layer.cross_attn_token_to_image, queries + query_pe, keys, keys_pe)
            queries = layer.norm2(queries + out)
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = layer.norm4(self._image_to_token(layer.cross_attn_image_to_token, keys, keys_pe,
                                                    queries + query_pe, queries))
        final = transformer.final_attn_token_to_image
        out = self._token_to_image(final, queries + query_pe, keys, keys + self.key_pe)
        queries = transformer.norm_final_attn(queries + out)
        iou = decoder.iou_prediction_head(queries[:, 0])[:, 1:]
        hyper = torch.stack([decoder.output_hypernetworks_mlps[i](queries[:, 1 + i]) for i in (1, 2, 3)], dim=1)
        return self._upscale(keys, hyper, -(-rows // 4), -(-cols // 4)), iou

    def _first_token_to_image(self, attn: Any, q: Tensor) -> Tensor:
        """``attn(q, keys + pe, keys)`` in the first layer: its image side is the same for every prompt.
        `q` ``(B, T, C)`` → ``(B, T, C)``."""
        batch, tokens = q.shape[:2]
        qh = _heads(attn.q_proj(q), attn.num_heads) / math.sqrt(self.first_k.shape[1])  # (B, H, T, d)
        qh = qh.transpose(0, 1).flatten(1, 2)  # (H, B·T, d)
        out = torch.softmax(qh @ self.first_k, dim=-1) @ self.first_v  # (H, B·T, d)
        return attn.out_proj(out.view(-1, batch, tokens, out.shape[-1]).permute(1, 2, 0, 3).flatten(2))

    def _token_to_image(self, attn: Any, q: Tensor, keys: Tensor, keys_pe: Tensor) -> Tensor:
        """``attn(q, keys_pe, keys)`` for a few prompt tokens `q` ``(B, T, C)`` over image tokens
        `keys` and `keys_pe` = keys + positional encoding ``(B, N, C)``.

        softmax(q_h (k W_k,h + b_k,h)ᵀ) = softmax((q_h W_k,h) kᵀ): the bias adds one constant to a row;
        softmax(·) (v W_v,hᵀ + b_v,h) = (softmax(·) v) W_v,hᵀ + b_v,h: the weights of a row sum to 1.
        So no ``(N, C)`` x ``(C, H·d)`` projection of the image tokens.
        """
        heads = attn.num_heads
        d = attn.internal_dim // heads
        qh = _heads(attn.q_proj(q), heads) / math.sqrt(d)  # (B, H, T, d)
        qk = torch.einsum("bhtd,hdc->bhtc", qh, attn.k_proj.weight.view(heads, d, -1)).flatten(1, 2)  # (B, H·T, C)
        weights = torch.softmax(qk @ keys_pe.transpose(1, 2), dim=-1)  # (B, H·T, N)
        pooled = (weights @ keys).view(len(q), heads, -1, keys.shape[-1])  # (B, H, T, C)
        out = torch.einsum("bhtc,hdc->bhtd", pooled, attn.v_proj.weight.view(heads, d, -1))
        return attn.out_proj(_merge(out + attn.v_proj.bias.view(heads, 1, d)))

    def _image_to_token(self, attn: Any, keys: Tensor, keys_pe: Tensor | None, k: Tensor, v: Tensor) -> Tensor:
        """``keys + attn(keys_pe, k, v)``: image tokens ``(B | 1, N, C)`` attend to a few prompt tokens
        `k`, `v` ``(B, T, C)``; `keys_pe` = keys + positional encoding, None in the first layer.

        The output projection is folded into the values: softmax(·) (v_h W_o,hᵀ + b_o / H), ``(T, C)`` per
        head (the weights of a head sum to 1); after the first layer (whose projected image queries are
        the same for every prompt) the query projection is folded into the keys:
        (q W_q,hᵀ + b_q,h) k_hᵀ = q (W_q,hᵀ k_hᵀ) + b_q,h k_hᵀ. So no ``(N, C)`` x ``(C, H·d)`` product.
        """
        heads = attn.num_heads
        d = attn.internal_dim // heads
        batch, tokens = k.shape[:2]
        kh = _heads(attn.k_proj(k), heads) / math.sqrt(d)  # (B, H, T, d)
        if keys_pe is None:
            scores = (kh.transpose(0, 1).flatten(1, 2) @ self.first_q).view(heads, batch, tokens, -1)
            scores = scores.transpose(0, 1)  # (B, H, T, N)
        else:
            folded = torch.einsum("bhtd,hdc->bhtc", kh, attn.q_proj.weight.view(heads, d, -1)).flatten(1, 2)
            bias = torch.einsum("bhtd,hd->bht", kh, attn.q_proj.bias.view(heads, d)).flatten(1)  # (B, H·T)
            scores = torch.baddbmm(bias[..., None], folded, keys_pe.transpose(1, 2))
            scores = scores.view(batch, heads, tokens, -1)
        weights = torch.softmax(scores, dim=2).reshape(batch, heads * tokens, -1)  # (B, H·T, N)
        vh = _heads(attn.v_proj(v), heads)
        values = torch.einsum("bhtd,chd->bhtc", vh, attn.out_proj.weight.view(-1, heads, d))
        values = (values + attn.out_proj.bias / heads).flatten(1, 2)  # (B, H·T, C)
        return torch.baddbmm(keys.expand(batch, -1, -1), weights.transpose(1, 2), values)

    def _upscale(self, keys: Tensor, hyper: Tensor, rows: int, cols: int) -> Tensor:
        """SAM's ``hyper @ output_upscaling(image tokens)`` over the first `rows` x `cols` tokens.

        `keys` ``(B, N, C)``, `hyper` ``(B, 3, C / 8)`` → ``(B, 3, 4 rows, 4 cols)``. Each transposed
        convolution (kernel 2, stride 2) is a product ``(C_in,) → (2, 2, C_out)`` per pixel, so the
        sub-pixels stay in their own dimensions until the three masks are laid out.
        """
        (w1, b1), (w2, b2) = self.upscaling
        _, norm, act1, _, act2 = self.decoder.output_upscaling
        batch = len(keys)
        x = keys.view(batch, *self.shape, -1)[:, :rows, :cols].flatten(1, 2)  # (B, rows·cols, C)
        x = torch.baddbmm(b1, x, w1.expand(batch, -1, -1)).view(-1, w1.shape[1] // 4)  # (B·rows·cols·2·2, C / 4)
        x = act1(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        x = act2(torch.addmm(b2, x, w2)).view(batch, -1, w2.shape[1] // 4)  # (B, rows·cols·2·2·2·2, C / 8)
        masks = (x @ hyper.transpose(1, 2)).view(batch, rows, cols, 2, 2, 2, 2, 3)  # i, j, a, b, c, d: y = 4i + 2a + c
        return masks.permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(batch, 3, 4 * rows, 4 * cols)


def _as_matrix(conv: Any) -> tuple[Tensor, Tensor]:
    """A 2 x 2, stride 2 transposed convolution as ``(C_in, 2·2·C_out)`` weights (sub-pixel row, column,
    channel) and their bias."""
    assert conv.kernel_size == conv.stride == (2, 2), "SAM's output upscaling"
    weight = conv.weight.permute(0, 2, 3, 1).flatten(1)  # (C_in, C_out, 2, 2) → (C_in, 2·2·C_out)
    return weight, conv.bias.repeat(4)


def _heads(x: Tensor, n: int) -> Tensor:
    """``(B, N, H·d)`` → ``(B, H, N, d)``."""
    return x.view(*x.shape[:2], n, -1).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """``(B, H, N, d)`` → ``(B, N, H·d)``."""
    return x.transpose(1, 2).flatten(2)
