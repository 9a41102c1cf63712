"""Datasets: registry of sources -> canonical rows and splits, tokenisation to parquet, loading back.

Names are imported lazily (PEP 562): `import wattpeft.data.hub` must not pull in torch,
pandas and transformers, because config validation runs while Snakemake parses.
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports

_EXPORTS = {
    "loading": ("IGNORE_INDEX", "SPLITS", "TASKS", "TokenisedSplit", "load_split", "make_collator",
                "make_prompt_collator", "pad_sequences", "read_manifest"),
    "hub": ("HUB_DATASETS",),
    "registry": ("DatasetError", "DatasetRows", "dataset_input_paths", "load_dataset_rows"),
    "tokenise": ("load_tokenizer", "pad_token_id", "tokenise_dataset", "tokenise_rows"),
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
