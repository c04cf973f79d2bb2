"""OpenAI CLIP from the checkpoint the `clip` package downloads (``ViT-B-16.pt``), in our own
modules, with CLIP's byte-level BPE tokenizer.

The checkpoint is a TorchScript archive (as downloaded) or a plain state dict (``torch.save``
of ``model.state_dict()``); either way its tensors carry OpenAI's key names, and the
architecture is read from their shapes: any width, depth, patch size and grid. The modules
here are written from the architecture's definition (Radford et al., "Learning Transferable
Visual Models From Natural Language Supervision", 2021): pre-LN residual blocks whose
attention holds one ``in_proj`` (q, k, v stacked) and one ``out_proj``, QuickGELU MLPs; the
image tower with a class token, position embeddings, ``ln_pre``, ``ln_post`` and ``proj``; the
text tower causal, pooled at the end-of-text token, projected by ``text_projection``.

The training-free dense methods (rim_bench/stages/pixel) change only the last image block:
`VisionTower.tokens_before_last` runs the blocks before it and `VisionTower.project` the
head after it, so each method is the one function between the two.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import math
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import regex
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rim_bench.core.errors import ConfigError, RimBenchError, one_line
from rim_bench.stages.backbones.positions import resize_positions

# CLIP's image normalization, on 0..255 RGB (the segmentation peers' data preprocessors).
OPENAI_MEAN = (122.771, 116.746, 104.094)
OPENAI_STD = (68.501, 66.632, 70.323)
HEAD_DIM = 64  # OpenAI CLIP's heads are 64 wide: heads = width // 64
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_ENV = "RIM_BENCH_CLIP_BPE"
BPE_FILE = Path(__file__).with_name("clip_vocab") / BPE_NAME  # shipped, with its licence
BPE_MERGES = 49152 - 256 - 2  # merges in CLIP's vocabulary: 49,408 tokens in all
# Extra entries of the TorchScript archive that are not weights (clip.load drops them too).
NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size")


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in its input's dtype, as OpenAI's ``clip``
    package computes it in a float16 model (whose LayerNorm weights stay float32, `to_half`)."""

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight.float(), self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x·σ(1.702 x)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class Mlp(nn.Module):
    """width -> 4·width -> width with QuickGELU (keys ``c_fc``, ``c_proj``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Attention(nn.Module):
    """Multi-head attention with `nn.MultiheadAttention`'s parameter layout (q, k, v rows
    stacked in ``in_proj_weight``), on batch-first tokens (B, N, D)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v of tokens `x` (B, N, D), each (B, heads, N, D / heads)."""
        b, n, _ = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return tuple(t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # type: ignore[return-value]

    def merge(self, heads: Tensor) -> Tensor:
        """out_proj of per-head outputs (B, heads, N, d) -> (B, N, D)."""
        b, _, n, _ = heads.shape
        return self.out_proj(heads.transpose(1, 2).reshape(b, n, -1))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv(x)
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


class Block(nn.Module):
    """Pre-LN residual block: x + attn(ln_1 x), then x + mlp(ln_2 x)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = Mlp(width)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Blocks(nn.Module):
    """The stack of blocks (key ``resblocks``)."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(Block(width, heads) for _ in range(layers))


@dataclass(frozen=True)
class Architecture:
    """A CLIP ViT's sizes, as read from its state dict."""

    width: int
    layers: int
    patch: int
    grid: int  # the pretraining grid: grid x grid patches
    embed_dim: int
    context: int
    vocab: int
    text_width: int
    text_layers: int

    @classmethod
    def of(cls, state: dict[str, Tensor]) -> Architecture:
        """Sizes from tensor shapes (the same reading as OpenAI's ``build_model``)."""
        def layers(prefix: str) -> int:
            start = prefix + "resblocks."
            return len({k[len(start):].split(".")[0] for k in state if k.startswith(start)})

        width, _, patch, _ = state["visual.conv1.weight"].shape
        tokens = state["visual.positional_embedding"].shape[0]
        context, text_width = state["positional_embedding"].shape
        return cls(width=width, layers=layers("visual.transformer."), patch=patch, grid=math.isqrt(tokens - 1),
                   embed_dim=state["text_projection"].shape[1], context=context,
                   vocab=state["token_embedding.weight"].shape[0], text_width=text_width,
                   text_layers=layers("transformer."))


class VisionTower(nn.Module):
    """CLIP's image transformer: patches (B, 3, H, W) -> tokens in the joint space."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        width = arch.width
        self.patch = arch.patch
        self.grid = arch.grid
        self.conv1 = nn.Conv2d(3, width, arch.patch, stride=arch.patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(arch.grid**2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Blocks(width, arch.layers, width // HEAD_DIM)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, arch.embed_dim))

    @property
    def last_block(self) -> Block:
        block = self.transformer.resblocks[-1]
        assert isinstance(block, Block)
        return block

    def positions(self, rows: int, cols: int) -> Tensor:
        """Position embeddings (1 + rows·cols, D) for a rows x cols grid (`resize_positions`)."""
        return resize_positions(self.positional_embedding, rows, cols)

    def tokens_before_last(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """The last block's input (B, 1 + rows·cols, D) for normalized `images` (B, 3, H, W)
        (a remainder under one patch is dropped, as the convolution does) and the grid."""
        x = self.conv1(images.to(self.conv1.weight.dtype))  # clip's encode_image: image.type(self.dtype)
        rows, cols = x.shape[-2:]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x.flatten(2).transpose(1, 2)], dim=1)
        x = self.ln_pre(x + self.positions(rows, cols).to(x.dtype))
        for block in self.transformer.resblocks[:-1]:
            x = block(x)
        return x, (rows, cols)

    def project(self, tokens: Tensor) -> Tensor:
        """ln_post then proj: (B, N, width) -> (B, N, embed_dim)."""
        return self.ln_post(tokens) @ self.proj

    def forward(self, images: Tensor) -> Tensor:
        """Image embeddings (B, embed_dim): the class token after all blocks."""
        x, _ = self.tokens_before_last(images)
        return self.project(self.last_block(x)[:, 0])


class OpenAIClip(nn.Module):
    """Both towers with OpenAI's key names, so a checkpoint's state dict loads as it is."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.visual = VisionTower(arch)
        self.token_embedding = nn.Embedding(arch.vocab, arch.text_width)
        self.positional_embedding = nn.Parameter(torch.zeros(arch.context, arch.text_width))
        self.transformer = Blocks(arch.text_width, arch.text_layers, arch.text_width // HEAD_DIM)
        self.ln_final = LayerNorm(arch.text_width)
        self.text_projection = nn.Parameter(torch.zeros(arch.text_width, arch.embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros(()))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype it runs in: its convolution's (clip's ``CLIP.dtype``)."""
        return self.visual.conv1.weight.dtype

    def encode_text(self, tokens: Tensor) -> Tensor:
        """Text embeddings (B, embed_dim) of token ids (B, context): the end-of-text token
        (the highest id of each row) after the causal transformer."""
        n = tokens.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()  # True: attended; any dtype
        x = self.token_embedding(tokens).to(self.dtype) + self.positional_embedding[:n].to(self.dtype)
        for block in self.transformer.resblocks:
            x = block(x, causal)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection


def to_half(model: OpenAIClip, dtype: torch.dtype = torch.float16) -> OpenAIClip:
    """`model` with the weights OpenAI's ``clip.model.convert_weights`` makes float16 (`clip.load`
    on CUDA) in `dtype`, in place: the convolution's and linear layers' weights and biases, the
    attention's ``in_proj``, ``visual.proj`` and ``text_projection``. LayerNorms, embeddings and
    the logit scale stay float32, cast where they are used, as in ``clip``."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.to(dtype)
        elif isinstance(module, Attention):
            module.in_proj_weight.data = module.in_proj_weight.data.to(dtype)
            module.in_proj_bias.data = module.in_proj_bias.data.to(dtype)
    model.visual.proj.data = model.visual.proj.data.to(dtype)
    model.text_projection.data = model.text_projection.data.to(dtype)
    return model


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The float32 tensors of an OpenAI CLIP checkpoint: a TorchScript archive or a state dict."""
    if not path.is_file():
        raise ConfigError(f"featurizer.clip.model: no file '{path}' (give the ViT-B-16.pt that the clip package "
                          f"downloads, or a torch.save of its state dict)")
    try:
        with warnings.catch_warnings():  # torch 2.9+ calls torch.jit deprecated; the clip package's files need it
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:  # not TorchScript: a pickled state dict
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"featurizer.clip.model: '{path}' is neither a TorchScript archive nor a state dict "
                              f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or "visual.conv1.weight" not in state:
        raise ConfigError(f"featurizer.clip.model: '{path}' holds no OpenAI CLIP ViT weights (no key "
                          f"'visual.conv1.weight'; a ResNet CLIP is not supported)")
    state = {k: v for k, v in state.items() if k not in NOT_WEIGHTS}
    for key, value in state.items():
        if not isinstance(value, Tensor) or not value.is_floating_point():
            kind = f"a {value.dtype} tensor" if isinstance(value, Tensor) else f"a {type(value).__name__}"
            raise ConfigError(f"featurizer.clip.model: '{path}': key '{key}' is {kind}, not float weights "
                              f"(a damaged or foreign file: give the ViT-B-16.pt the clip package downloads)")
        if not torch.isfinite(value).all():
            raise ConfigError(f"featurizer.clip.model: '{path}': key '{key}' holds non-finite values (NaN or inf): "
                              f"the file is damaged or was saved from a diverged model")
    return {k: v.float() for k, v in state.items()}


# The tensors `Architecture.of` reads its sizes from, with their ranks.
SIZED_KEYS = {"visual.conv1.weight": 4, "visual.positional_embedding": 2, "positional_embedding": 2,
              "text_projection": 2, "token_embedding.weight": 2}


def load_openai_clip(path: Path) -> OpenAIClip:
    """An OpenAI-format CLIP checkpoint in our modules, on the CPU in eval mode.

    Raises:
        ConfigError: the file is missing or not an OpenAI CLIP ViT; a key is missing, unexpected,
            of the wrong shape, not a float tensor or not finite (the message names the key).
    """
    state = read_state_dict(path)
    for key, rank in SIZED_KEYS.items():
        if key not in state or state[key].dim() != rank:
            shape = f"shape {tuple(state[key].shape)}" if key in state else "missing"
            raise ConfigError(f"featurizer.clip.model: '{path}': key '{key}' is {shape}, an OpenAI CLIP ViT's has "
                              f"{rank} dimensions (give the ViT-B-16.pt the clip package downloads)")
    model = OpenAIClip(Architecture.of(state))
    expected = model.state_dict()
    for key in sorted(expected.keys() | state.keys()):
        want, got = expected.get(key), state.get(key)
        if want is None or got is None or want.shape != got.shape:
            found = "missing" if got is None else "unexpected" if want is None else f"of shape {tuple(got.shape)}"
            needed = f", the architecture its other keys give needs {tuple(want.shape)}" if want is not None else ""
            raise ConfigError(f"featurizer.clip.model: '{path}': key '{key}' is {found}{needed} "
                              f"(not an OpenAI CLIP ViT state dict)")
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def clip_file_problem(path: Path) -> str | None:
    """What is wrong with an OpenAI CLIP file, as a run would meet it (for `rim-bench plan` and the
    checks before a run): not loadable as CLIP, a tensor misshapen or non-finite (`load_openai_clip`'s
    checks). None when it is sound."""
    try:
        load_openai_clip(path)
    except RimBenchError as e:
        return str(e)
    except Exception as e:  # whatever else a damaged file makes torch raise, on one line
        return (f"featurizer.clip.model: '{path}' cannot be loaded as an OpenAI CLIP file ({type(e).__name__}: "
                f"{one_line(str(e))[:200]}); download it again")
    return None


def find_bpe(explicit: str | Path | None = None) -> Path:
    """CLIP's BPE merges file: `explicit` (the `bpe` key), else ${RIM_BENCH_CLIP_BPE}, else the
    copy that ships with rim-bench (clip_vocab/, see its SOURCES.md)."""
    given = [(Path(p).expanduser(), name) for p, name in ((explicit, "bpe"), (os.environ.get(BPE_ENV), BPE_ENV)) if p]
    for path, name in given:
        if not path.is_file():
            raise ConfigError(f"{name}: CLIP's BPE vocabulary '{path}' not found (give the path of a "
                              f"{BPE_NAME}, or leave it unset for the copy that ships with rim-bench)")
        return path
    if not BPE_FILE.is_file():
        raise ConfigError(f"CLIP's BPE vocabulary '{BPE_FILE}' is missing from this install of rim-bench: "
                          f"reinstall it, or set {BPE_ENV} to a {BPE_NAME}")
    return BPE_FILE


def byte_symbols() -> dict[int, str]:
    """One printable character per byte value 0..255 (GPT-2's and CLIP's reversible map):
    printable Latin-1 bytes stand for themselves, the others for code points from 256 on, in
    this order, which is also the order of the 256 byte tokens in CLIP's vocabulary."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbol = {b: chr(b) for b in keep}
    for i, b in enumerate(b for b in range(256) if b not in symbol):
        symbol[b] = chr(256 + i)
    return symbol


class BpeTokenizer:
    """CLIP's tokenizer: lower-cased words split by CLIP's pattern, bytes to symbols, BPE merges
    by rank; ``<|startoftext|>`` ... ``<|endoftext|>``, zero-padded to the context length.
    Vocabulary: the 256 byte symbols, the same ending a word (``</w>``), one token per merge,
    then the two special tokens. (OpenAI also runs ftfy's text repair first: a no-op on the
    plain ASCII class names and templates used here.)"""

    PATTERN = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
                            r"|[^\s\p{L}\p{N}]+", regex.IGNORECASE)

    def __init__(self, bpe: Path | None, merges: int = BPE_MERGES) -> None:
        """`bpe`: the merges file; None: no merges, a token per byte (the tiny test vocabulary)."""
        lines = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")[1:merges + 1] if bpe else []
        pairs = [tuple(line.split()) for line in lines if line]
        self.symbols = byte_symbols()
        bytes_ = list(self.symbols.values())
        vocab = bytes_ + [s + "</w>" for s in bytes_] + ["".join(p) for p in pairs]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.key = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]  # the merges: what tokens come out
        self.ranks = {pair: i for i, pair in enumerate(pairs)}
        self.word_ids = lru_cache(maxsize=100_000)(self._word_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def _word_ids(self, word: str) -> tuple[int, ...]:
        parts = [self.symbols[b] for b in word.encode("utf-8")]
        parts[-1] += "</w>"
        while len(parts) > 1:
            ranked = [(self.ranks.get(pair, math.inf), i) for i, pair in enumerate(zip(parts, parts[1:]))]
            rank, i = min(ranked)
            if rank == math.inf:
                break
            first, second = parts[i], parts[i + 1]
            merged: list[str] = []
            j = 0
            while j < len(parts):  # merge every occurrence of the pair, left to right
                if j + 1 < len(parts) and parts[j] == first and parts[j + 1] == second:
                    merged.append(first + second)
                    j += 2
                else:
                    merged.append(parts[j])
                    j += 1
            parts = merged
        return tuple(self.ids[p] for p in parts)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without the start and end tokens."""
        clean = " ".join(html.unescape(html.unescape(text)).split()).lower()
        return [i for word in self.PATTERN.findall(clean) for i in self.word_ids(word)]

    def __call__(self, texts: list[str], context: int = 77) -> Tensor:
        """Token ids (len(texts), context), zero-padded.

        Raises:
            ConfigError: a text is longer than the context.
        """
        out = torch.zeros(len(texts), context, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.ids["<|startoftext|>"], *self.encode(text), self.ids["<|endoftext|>"]]
            if len(ids) > context:
                raise ConfigError(f"text '{text}' has {len(ids)} tokens, more than CLIP's context of {context}: "
                                  f"shorten the class name")
            out[row, :len(ids)] = torch.tensor(ids)
        return out


def random_state_dict(arch: Architecture, seed: int = 0) -> dict[str, Tensor]:
    """A random-weight CLIP of size `arch` with OpenAI's key names, for tests and benchmarks:
    weights ~ N(0, width^-0.5) as OpenAI initializes them, LayerNorms near identity."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in OpenAIClip(arch).state_dict().items():
        if name.endswith("logit_scale"):
            state[name] = torch.tensor(math.log(100.0))
        elif ".ln_" in name or name.startswith(("ln_final", "visual.ln_")):
            base = 1.0 if name.endswith("weight") else 0.0
            state[name] = base + 0.1 * torch.randn(tensor.shape, generator=generator)
        else:
            scale = tensor.shape[-1] ** -0.5 if tensor.dim() > 1 else 0.1
            state[name] = scale * torch.randn(tensor.shape, generator=generator)
    return state
