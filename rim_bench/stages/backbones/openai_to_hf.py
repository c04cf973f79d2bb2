"""OpenAI CLIP checkpoints (``ViT-B-16.pt``) as transformers' `CLIPModel` and `CLIPTokenizer`.

The CLIP baselines run transformers' CLIP; this lets them take the file the `clip` package
downloads (TorchScript or a plain state dict, read by `openai_clip.read_state_dict`), its
architecture read from the tensor shapes. The two layouts hold the same tensors: OpenAI's
``attn.in_proj`` stacks q, k, v row-wise where transformers keeps ``q_proj``, ``k_proj`` and
``v_proj``, and OpenAI's projections are (in, out) matrices where transformers' are `nn.Linear`
weights (out, in). The tokenizer is CLIP's BPE vocabulary in `BpeTokenizer`'s order.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from torch import Tensor
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from rim_bench.core.errors import ConfigError, one_line
from rim_bench.stages.backbones.openai_clip import HEAD_DIM, Architecture, BpeTokenizer, find_bpe, read_state_dict

# OpenAI's names inside a residual block -> transformers' (the attention's in_proj is split apart).
BLOCK_NAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
               "attn.out_proj": "self_attn.out_proj"}
# OpenAI's names outside the blocks -> transformers' (the two projections are transposed).
TOWER_NAMES = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
PROJECTIONS = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
TOWERS = {"visual.transformer.resblocks.": "vision_model.encoder.layers.",
          "transformer.resblocks.": "text_model.encoder.layers."}


def hf_config(arch: Architecture) -> CLIPConfig:
    """transformers' config of the CLIP of size `arch`: QuickGELU MLPs 4x wide, 64-wide heads;
    the text tower pools at the first ``<|endoftext|>``, the last id of CLIP's vocabulary."""
    eot = arch.vocab - 1
    text = dict(vocab_size=arch.vocab, hidden_size=arch.text_width, intermediate_size=4 * arch.text_width,
                num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_width // HEAD_DIM,
                max_position_embeddings=arch.context, hidden_act="quick_gelu", bos_token_id=eot - 1,
                eos_token_id=eot, pad_token_id=eot)
    vision = dict(hidden_size=arch.width, intermediate_size=4 * arch.width, num_hidden_layers=arch.layers,
                  num_attention_heads=arch.width // HEAD_DIM, image_size=arch.patch * arch.grid,
                  patch_size=arch.patch, hidden_act="quick_gelu")
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch.embed_dim)


def hf_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """OpenAI's CLIP tensors under transformers' `CLIPModel` names (KeyError on a missing one)."""
    out = {hf: state[name] for name, hf in TOWER_NAMES.items()}
    out.update({hf: state[name].T.contiguous() for name, hf in PROJECTIONS.items()})
    for name, tensor in state.items():
        tower = next((t for t in TOWERS if name.startswith(t)), None)
        if tower is None:
            continue
        layer, rest = name[len(tower):].split(".", 1)
        prefix = f"{TOWERS[tower]}{layer}."
        if rest.startswith("attn.in_proj_"):  # q, k, v stacked row-wise: (3 width, ...)
            kind = rest.rsplit("_", 1)[1]  # weight | bias
            for part, chunk in zip("qkv", tensor.chunk(3)):
                out[f"{prefix}self_attn.{part}_proj.{kind}"] = chunk.contiguous()
        else:
            module, kind = rest.rsplit(".", 1)
            out[f"{prefix}{BLOCK_NAMES[module]}.{kind}"] = tensor
    return out


def load_openai_as_hf(path: Path) -> CLIPModel:
    """An OpenAI CLIP checkpoint as transformers' `CLIPModel`, on the CPU in eval mode."""
    state = read_state_dict(path)
    try:
        model = CLIPModel(hf_config(Architecture.of(state)))
        model.load_state_dict(hf_state_dict(state))
    except (KeyError, RuntimeError) as e:
        raise ConfigError(f"featurizer.clip.model: '{path}' is not an OpenAI CLIP ViT state dict "
                          f"({type(e).__name__}: {one_line(str(e))[:400]})") from None
    return model.eval()


def bpe_clip_tokenizer(bpe: Path | None = None, context: int = 77) -> CLIPTokenizer:
    """transformers' `CLIPTokenizer` over CLIP's BPE file (`find_bpe` finds it when None), with
    `BpeTokenizer`'s vocabulary; it pads with ``<|endoftext|>``, which the causal text tower
    never attends to from the pooled token."""
    bpe_tokenizer = BpeTokenizer(bpe or find_bpe())
    merges = sorted(bpe_tokenizer.ranks, key=bpe_tokenizer.ranks.__getitem__)
    with tempfile.TemporaryDirectory(prefix="rim-bench-clip-bpe-") as folder:
        vocab, merges_file = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
        vocab.write_text(json.dumps(bpe_tokenizer.ids))
        merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
        return CLIPTokenizer(str(vocab), str(merges_file), model_max_length=context, pad_token="<|endoftext|>")
