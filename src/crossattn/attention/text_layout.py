"""Which token each text key of the denoiser's attention stands for, and which encoder made it.

- U-Net pipelines (SD-1.5, SDXL, crossattn): the keys are the CLIP tokens of the prompt (SDXL's two
  CLIP encoders are joined along the features, so one token list names both).
- SD3: the keys are the CLIP tokens padded to the CLIP tokenizer's length (CLIP-L and CLIP-G joined
  along the features), then the T5 tokens padded to ``max_sequence_length``; a folder saved without
  T5 feeds zeros there (tokens ``<pad>``, encoder ``none``).
- Flux: the keys are the T5 tokens padded to ``max_sequence_length`` (CLIP gives only the pooled vector).

Tokens are the tokenizer's own pieces (``</w>``-ending BPE for CLIP, ``▁``-starting SentencePiece for
T5); :func:`crossattn.attention.words.merge_words` joins them into words per encoder.
"""

from __future__ import annotations

#: encoder name of the keys SD3 fills with zeros when its folder has no T5
NO_ENCODER = "none"


def clip_tokens(tokenizer, prompt: str, pad: bool = False) -> list[str]:
    """The CLIP tokens of ``prompt`` as the pipeline makes them (cut at the tokenizer's length; padded to it with ``pad``)."""
    length = tokenizer.model_max_length
    padding = "max_length" if pad else False
    ids = tokenizer(prompt, padding=padding, max_length=length, truncation=True).input_ids
    return tokenizer.convert_ids_to_tokens(ids)


def t5_tokens(tokenizer, prompt: str, length: int) -> list[str]:
    """The T5 tokens of ``prompt``, padded to ``length`` (as SD3's and Flux's pipelines pad them)."""
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True, add_special_tokens=True).input_ids
    return tokenizer.convert_ids_to_tokens(ids)


def joint_tokens(pipe, prompt: str, text_length: int) -> tuple[list[str], list[str]]:
    """Tokens and their encoders, one per text key of an SD3 or Flux pipeline's joint attention;
    ``text_length``: how many text keys there are (the T5 part is what the CLIP part leaves)."""
    if hasattr(pipe, "tokenizer_3"):  # SD3: CLIP (padded), then T5 (or zeros)
        clip = clip_tokens(pipe.tokenizer, prompt, pad=True)
        length = text_length - len(clip)
        if pipe.tokenizer_3 is not None and getattr(pipe, "text_encoder_3", None) is not None:
            t5, t5_name = t5_tokens(pipe.tokenizer_3, prompt, length), "t5"
        else:
            t5, t5_name = ["<pad>"] * length, NO_ENCODER
        return clip + t5, ["clip"] * len(clip) + [t5_name] * len(t5)
    t5 = t5_tokens(pipe.tokenizer_2, prompt, text_length)  # Flux
    return t5, ["t5"] * len(t5)


def prompt_tokens(pipe, tokenizer, prompt: str | None, joint: bool, text_length: int | None):
    """``(tokens, encoders)`` of ``prompt``: the keys' tokens, and for joint models each one's encoder
    (None for U-Net models, whose keys are all the CLIP tokenizer's). ``pipe``: the pipeline (None for
    a bare denoiser); ``text_length``: the joint attention's text keys. ``(None, None)`` when the prompt or
    a tokenizer is unknown."""
    if prompt is None:
        return None, None
    if joint:  # a bare transformer has no tokenizers
        return joint_tokens(pipe, prompt, text_length) if pipe is not None else (None, None)
    if tokenizer is None:
        return None, None
    return clip_tokens(tokenizer, prompt), None


def prompt_words(pipe, prompt: str) -> list[str]:
    """The words of ``prompt`` as the pipeline's denoiser reads them (at its call's default T5 length)."""
    import inspect

    from .install import denoiser_of
    from .layers import is_joint
    from .words import primary_words

    length = inspect.signature(type(pipe).__call__).parameters.get("max_sequence_length")
    length = None if length is None else length.default  # T5's length; SD3's CLIP tokens come first
    if length is not None and hasattr(pipe, "tokenizer_3"):
        length += pipe.tokenizer.model_max_length
    tokens, encoders = prompt_tokens(pipe, pipe.tokenizer, prompt, is_joint(denoiser_of(pipe)), length)
    return [word for word, _ in primary_words(tokens or [], encoders)]
