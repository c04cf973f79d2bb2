"""The peers' text side: each query name through the 80 OpenAI ImageNet templates, each
prompt's embedding normalized, averaged, normalized again; cached on disk by model, templates
and names, so a second run reads them instead of running the text tower again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from rim_bench.core.cache_files import DamagedCacheError, load_tensors, save_tensors
from rim_bench.core.errors import DataError
from rim_bench.core.io import set_aside
from rim_bench.data.classes import utf8_text
from rim_bench.stages.backbones.openai_clip import BpeTokenizer, OpenAIClip

TEMPLATES_FILE = Path(__file__).with_name("imagenet_templates.txt")
CLASSES_DIR = Path(__file__).with_name("classes")


def imagenet_templates(path: Path = TEMPLATES_FILE) -> list[str]:
    """The prompt templates, '{}' for the name (lines starting with '#' are comments)."""
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def read_class_file(path: Path, separator: str) -> tuple[list[str], list[int]]:
    """Query names and the class index of each, read as the peers read their files: one class
    a line, names split on `separator`, newlines removed (other spaces kept).

    Raises:
        DataError: the file is missing or empty, has a blank line, or a name with no letter or
            digit (``,,,`` split on ``,``: four empty names).
    """
    if not path.is_file():
        raise DataError(f"class file '{path}' not found")
    names: list[str] = []
    classes: list[int] = []
    for index, line in enumerate(utf8_text(path).splitlines()):
        if not line.strip():
            raise DataError(f"class file '{path}': line {index + 1} is empty (one class a line, no blank lines)")
        for name in line.split(separator):
            if not any(c.isalnum() for c in name):
                raise DataError(f"class file '{path}': line {index + 1} ({line!r}) gives the name {name!r}, which "
                                f"has no letter or digit (names on a line are split on {separator!r})")
            names.append(name)
            classes.append(index)
    if not names:
        raise DataError(f"class file '{path}' is empty (one class a line)")
    return names, classes


@torch.no_grad()
def text_embeddings(model: OpenAIClip, tokenizer: BpeTokenizer, names: list[str], templates: list[str],
                    batch: int = 400) -> Tensor:
    """Unit embeddings (Q, D) of `names`: the normalized mean of the normalized template prompts,
    on the model's device and in its dtype (as the peers: float16 in a float16 model), with a
    progress bar (names x templates).

    Each batch runs at the token length of its longest prompt, not CLIP's full context (the
    peers' prompts use at most 14 of 77 positions): the causal mask makes the end-of-text token,
    where a prompt is pooled, independent of every position after it (same to 1e-6)."""
    prompts = [t.replace("{}", name) for name in names for t in templates]
    tokens = tokenizer(prompts, model.arch.context)
    lengths = tokens.argmax(dim=-1) + 1  # through the end-of-text token, CLIP's highest id
    device = model.token_embedding.weight.device
    embedded = []
    with tqdm(total=len(prompts), desc=f"text embeddings ({len(names)} names x {len(templates)} templates)",
              unit="prompt", leave=False) as bar:
        for i in range(0, len(prompts), batch):
            part = tokens[i:i + batch, :int(lengths[i:i + batch].max())].to(device)
            embedded.append(F.normalize(model.encode_text(part), dim=-1))
            bar.update(len(part))
    return F.normalize(torch.cat(embedded).view(len(names), len(templates), -1).mean(1), dim=-1)


def text_cache_key(model_key: str, tokenizer: BpeTokenizer, templates: list[str], names: list[str],
                   dtype: torch.dtype = torch.float32) -> str:
    """What the text embeddings depend on, and nothing else: the weights (`model_key`), the
    tokenizer's vocabulary, the templates, the names and the dtype the text tower ran in (left
    out at float32). No method setting: peers on one CLIP file with the same names share it."""
    parts: list[object] = [model_key, tokenizer.key, templates, names]
    if dtype != torch.float32:
        parts.append(str(dtype).removeprefix("torch."))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def cached_text_embeddings(model: OpenAIClip, tokenizer: BpeTokenizer, names: list[str], templates: list[str],
                           model_key: str, cache_dir: Path | None) -> Tensor:
    """`text_embeddings`, read from `cache_dir` when the same model (`model_key`, e.g. the
    checkpoint's digest), vocabulary, templates, names and dtype were embedded before
    (`text_cache_key`); written there atomically otherwise (an entry records the key it was made for, and
    is read for that key alone). No cache without `cache_dir`."""
    if cache_dir is None:
        return text_embeddings(model, tokenizer, names, templates)
    made_for = text_cache_key(model_key, tokenizer, templates, names, model.dtype)
    path = Path(cache_dir) / f"text-{made_for}.safetensors"
    if path.is_file():
        try:
            return load_tensors(path, made_for=made_for)[0]["embeddings"].to(model.token_embedding.weight.device)
        except DamagedCacheError as e:
            set_aside(path, e)
    embeddings = text_embeddings(model, tokenizer, names, templates)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, {"embeddings": embeddings.cpu()}, {"model": model_key, "names": json.dumps(names)},
                 made_for=made_for)
    return embeddings
