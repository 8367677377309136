"""The words a model was trained on, saved with it, so a prompt using others can be flagged.

A model trained only on the scenes grammar has never seen "cat": the CLIP tokenizer still turns it
into tokens and the pipeline samples, but the text encoder's states for it are untrained, so the
image shows whatever those states happen to steer towards. ``vocabulary.json`` in a pipeline (or
LoRA) folder lists the lower-case words of every training caption; :func:`unknown_words` names a
prompt's words outside it, and the CLI warns with them. Folders without the file (a Stable
Diffusion download, say) are not checked.

    {"words": ["a", "above", ...], "source": "the scenes grammar (shapes: circle, square, triangle)"}
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

FILE_NAME = "vocabulary.json"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")  # lower-case words; punctuation around them is not part of them


def words_of(text: str) -> list[str]:
    """The lower-case words of ``text`` in order: ``"A red circle, left of..."`` → a, red, circle, left, of."""
    return _WORD.findall(text.lower())


def grammar_words(shapes: Iterable[str] | None = None) -> set[str]:
    """Every word the procedural scenes grammar (:mod:`crossattn.data.captions`) can write, with
    ``shapes`` (default: the default model's three) as its shape words."""
    from ..data.captions import ARTICLES, COLOURS, POSITIONS, RELATIONS, SHAPES, check_shapes, format_caption

    shapes = check_shapes(tuple(shapes)) if shapes is not None else SHAPES
    colour = next(iter(COLOURS))
    captions = [format_caption([(colour, shapes[0])], position) for position in POSITIONS]
    captions += [format_caption([(colour, shapes[0])] * 2, relation=relation) for relation in RELATIONS]
    words = {w for caption in captions for w in words_of(caption)}
    return words | set(COLOURS) | set(shapes) | set(ARTICLES)  # "an" before orange


def dataset_words(dataset) -> set[str] | None:
    """The words of a training dataset's captions, or None when they cannot be listed cheaply.

    ``ShapesDataset`` (anything with ``shapes``): its grammar; an image folder (``records`` with
    ``text``): its captions; a ``Subset``-like wrapper: its ``dataset``'s; a ``ConcatDataset``: its
    ``datasets``' together; a ``Dataset`` of up to 10,000 items: each item's ``"text"``.
    """
    if hasattr(dataset, "shapes"):  # with counting scenes (issue 40) also the numbers and plurals
        from ..data.captions import counting_words

        extra = counting_words(dataset.shapes) if getattr(dataset, "counting", 0) > 0 else set()
        return grammar_words(dataset.shapes) | extra
    if hasattr(dataset, "records"):
        return {w for record in dataset.records for w in words_of(record.text)}
    if hasattr(dataset, "dataset"):
        return dataset_words(dataset.dataset)
    if hasattr(dataset, "datasets"):  # ConcatDataset (fine-tuning data + prior images)
        parts = [dataset_words(d) for d in dataset.datasets]
        return None if any(p is None for p in parts) else set().union(*parts)
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__") and len(dataset) <= 10_000:
        return {w for i in range(len(dataset)) for w in words_of(dataset[i]["text"])}
    return None


def write_vocabulary(
    folder: str | Path, captions_or_words: Iterable[str], source: str = "", inherit_from: str | Path | None = None
) -> Path:
    """Write ``folder/vocabulary.json``: the words of ``captions_or_words`` (captions are split into
    words), plus those of ``inherit_from``'s vocabulary when given (fine-tuning keeps the words the
    starting model knew). Written atomically."""
    from ..files import atomic_write_json

    words = {w for text in captions_or_words for w in words_of(text)}
    if inherit_from is not None:
        words |= load_vocabulary(inherit_from) or set()
    if not words:
        raise ValueError(f"no words to write to {Path(folder) / FILE_NAME}; pass captions or words")
    return atomic_write_json(Path(folder) / FILE_NAME, {"words": sorted(words), "source": source})


def write_training_vocabulary(folder: str | Path, dataset, init_from: str | Path | None = None) -> Path | None:
    """What a training run's final export calls: ``folder/vocabulary.json`` from the dataset's
    captions (:func:`dataset_words`) plus the starting model's words (``init_from``, a pipeline or
    run folder); nothing (None) when the captions cannot be listed and there is no starting vocabulary."""
    from .loading import check_model_folder

    start = check_model_folder(init_from) if init_from is not None else None
    words = dataset_words(dataset)
    if words is None and load_vocabulary(start) is None:
        return None
    source = f"training captions ({type(dataset).__name__})" + (f" + {start}" if start is not None else "")
    return write_vocabulary(folder, sorted(words or ()), source=source, inherit_from=start)


def load_vocabulary(folder: str | Path | None) -> set[str] | None:
    """The words in ``folder/vocabulary.json``; None when the folder has no such file."""
    if folder is None:
        return None
    path = Path(folder) / FILE_NAME
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    words = data.get("words") if isinstance(data, dict) else None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"{path} must hold {{'words': [strings]}}, got {type(data).__name__}")
    return set(words)


def unknown_words(prompt: str, vocabulary: set[str]) -> list[str]:
    """The words of ``prompt`` outside ``vocabulary``, each once, in prompt order."""
    return list(dict.fromkeys(w for w in words_of(prompt) if w not in vocabulary))


def warn_unknown_words(prompts: Iterable[str], vocabulary: set[str] | None) -> list[str]:
    """One warning per distinct prompt that uses words outside ``vocabulary`` (None: no check),
    naming them; returns every unknown word, each once."""
    if vocabulary is None:
        return []
    found: dict[str, None] = {}
    for prompt in dict.fromkeys(prompts):
        unknown = unknown_words(prompt, vocabulary)
        if unknown:
            warnings.warn(
                f"prompt {prompt!r} uses words the model never saw in training: {', '.join(unknown)}; "
                "they are sampled from untrained text states",
                stacklevel=2,
            )
            found.update(dict.fromkeys(unknown))
    return list(found)


def model_vocabulary(model: str | Path | None, lora: str | Path | None = None) -> set[str] | None:
    """The vocabulary of the model a command loads (``--model``, default: the shipped one) plus its
    LoRA's; None when the model folder has none (nothing to check against)."""
    from .loading import PRETRAINED_DIR, check_lora_folder, check_model_folder, has_default_model

    if model is None and not has_default_model():
        return None
    words = load_vocabulary(check_model_folder(model) if model is not None else PRETRAINED_DIR)
    if words is not None and lora is not None:
        words |= load_vocabulary(check_lora_folder(lora)) or set()
    return words
