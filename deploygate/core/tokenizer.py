"""The tokenizer policy: which files make up a tokenizer, and whose tokenizer a pushed model gets.

One list for the merge (adapters/lora_merge.py) and the Hub folder (service/ship.py). The
fine-tune's own tokenizer wins: the adapter folder's, else the training run's `tokenizer` folder
(the E-commerce-Chatbot logs it there) or the MLflow transformers flavor's `components/tokenizer`;
only without one does the base model's go with the merged weights. Paths are given as arguments;
nothing is read but whether a file is there.
"""

from __future__ import annotations

from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
# The files whose presence says "this directory carries its own tokenizer".
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def has_tokenizer(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in TOKENIZER_MARKERS)


def fine_tune_tokenizer(*roots: Path) -> Path | None:
    """The fine-tune's own tokenizer folder near any of `roots` (the adapter folder first), or None."""
    for root in roots:
        for folder in (
            root,
            root / "tokenizer",
            root / "components" / "tokenizer",
            root.parent / "tokenizer",
        ):
            if has_tokenizer(folder):
                return folder
    return None


def tokenizer_files(folder: Path) -> list[str]:
    """The tokenizer files `folder` holds, in the list's order."""
    return [name for name in TOKENIZER_FILES if (folder / name).is_file()]
