"""The stages of the method: backbones, region proposals, dense features, references,
matching, the segmenter (with its background rules).

Each imports `rim_bench.core`, `rim_bench.data` and `stages.backbones` only, never another stage.
"""
