"""Text references for the cross-modal CLIP baselines: class names embedded by CLIP's text tower.

Each name on a class's line (the class name and its synonyms) becomes one reference: the
mean of its prompts' unit-norm embeddings over the templates, renormalized (CLIP's prompt
ensembling, Radford et al. 2021, section 3.1.4). With ``aggregation: max`` a region takes
the class of its best-matching name. The featurizer must be ``clip``, so that regions and
references share CLIP's joint space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rim_bench.core.errors import ConfigError, ParamError
from rim_bench.core.protocols import ReferenceSource
from rim_bench.core.registry import REFERENCE_SOURCES
from rim_bench.core.types import BuildContext, ReferenceBank

# CLIP's 7-template ImageNet ensemble (openai/CLIP, notebooks/Prompt_Engineering_for_ImageNet.ipynb).
TEMPLATES = ["itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
             "a {} in a video game.", "art of the {}.", "a photo of the small {}."]


@REFERENCE_SOURCES.register("clip_text")
class ClipTextReferences(ReferenceSource):
    """One text reference per class name or synonym, ensembled over prompt templates.

    Args:
        templates: prompt templates with one ``{}`` for the name.
        synonyms: use every name on a class's line; false uses the class name only.
    """

    def __init__(self, templates: list[str] = TEMPLATES, synonyms: bool = True) -> None:
        templates = list(templates)
        if not templates:
            raise ParamError("templates", "is empty: give at least one template, e.g. ['a photo of a {}.']")
        bad = [t for t in templates if t.count("{}") != 1]
        if bad:
            raise ParamError("templates", f"{bad[0]!r} must hold exactly one '{{}}' where the class name goes")
        self.templates = templates
        self.synonyms = self.uses_synonyms = synonyms

    def cache_spec(self, class_names: list[str]) -> dict:
        return {}  # templates and names are in the config and the vocabulary, both in the key

    def build(self, ctx: BuildContext) -> ReferenceBank:
        """Embed every (name, template) prompt and average per name."""
        encode = getattr(ctx.featurizer, "encode_text", None)
        if encode is None:
            raise ConfigError("references.name=clip_text needs a CLIP featurizer (featurizer.name=clip), so that "
                              "regions and text references share CLIP's joint space")
        names = [(class_id, name) for class_id, line in enumerate(ctx.classes)
                 for name in dict.fromkeys(line if self.synonyms else line[:1])]
        features = []
        with ctx.timer("text embedding"):
            for _, name in names:
                prompts = encode([t.format(name) for t in self.templates])  # (templates, D)
                features.append(F.normalize(prompts.mean(0), dim=0).cpu())
        subcategories = [f"{ctx.classes[c][0]}/{name}" for c, name in names]
        return ReferenceBank(
            features=torch.stack(features).float(),
            class_ids=torch.tensor([c for c, _ in names], dtype=torch.long),
            subcategory_ids=torch.arange(len(names)),
            class_names=ctx.class_names,
            subcategory_names=subcategories,
            meta=[{"text": name, "templates": len(self.templates)} for _, name in names],
        )
