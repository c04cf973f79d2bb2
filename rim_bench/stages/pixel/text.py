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
        DataError: the file is missing or has a blank line.
    """
    if not path.is_file():
        raise DataError(f"class file '{path}' not found")
    names: list[str] = []
    classes: list[int] = []
    for index, line in enumerate(utf8_text(path).splitlines()):
        if not line.strip():
            raise DataError(f"class file '{path}': line {index + 1} is empty (one class a line, no blank lines)")
        for name in line.split(separator):
            names.append(name)
            classes.append(index)
    return names, classes


@torch.no_grad()
def text_embeddings(model: OpenAIClip, tokenizer: BpeTokenizer, names: list[str], templates: list[str],
                    batch: int = 400) -> Tensor:
    """Unit embeddings (Q, D) of `names`: the normalized mean of the normalized template prompts."""
    prompts = [t.replace("{}", name) for name in names for t in templates]
    tokens = tokenizer(prompts, model.arch.context)
    embedded = torch.cat([F.normalize(model.encode_text(tokens[i:i + batch]), dim=-1)
                          for i in range(0, len(prompts), batch)])
    return F.normalize(embedded.view(len(names), len(templates), -1).mean(1), dim=-1)


def cached_text_embeddings(model: OpenAIClip, tokenizer: BpeTokenizer, names: list[str], templates: list[str],
                           model_key: str, cache_dir: Path | None) -> Tensor:
    """`text_embeddings`, read from `cache_dir` when the same model (`model_key`, e.g. the
    checkpoint's digest), templates and names were embedded before; written there atomically
    otherwise (an entry records the whole key it was made for, and is read for that key alone).
No cache without `cache_dir`."""
    if cache_dir is None:
        return text_embeddings(model, tokenizer, names, templates)
    made_for = hashlib.sha256(json.dumps([model_key, templates, names]).encode()).hexdigest()
    path = Path(cache_dir) / f"text-{made_for[:32]}.safetensors"
    if path.is_file():
        try:
            return load_tensors(path, made_for=made_for)[0]["embeddings"]
        except DamagedCacheError as e:
            set_aside(path, e)
    embeddings = text_embeddings(model, tokenizer, names, templates)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, {"embeddings": embeddings}, {"model": model_key, "names": json.dumps(names)}, made_for=made_for)
    return embeddings
