"""Which token each text key of the denoiser's attention stands for, and which encoder made it.

- U-Net pipelines (SD-1.5, SDXL, crossattn): the keys are the CLIP tokens of the prompt (SDXL's two
  CLIP encoders are joined along the features, so one token list names both).
- SD3: the keys are the CLIP tokens padded to the CLIP tokenizer's length (CLIP-L and CLIP-G joined
  along the features), then the T5 tokens padded to ``max_sequence_length``; a folder saved without
  T5 feeds zeros there (tokens ``<pad>``, encoder ``none``).
- Flux: the keys are the T5 tokens padded to ``max_sequence_length`` (CLIP gives only the pooled vector).
- PixArt-Σ: the T5 tokens padded to ``max_sequence_length`` (the pads are masked out of ``attn2``).
- Qwen-Image: the Qwen2.5-VL tokens of the prompt in its chat template, less the template's first
  ``prompt_template_encode_start_idx`` tokens (system turn), then the template's closing tokens; pads masked.
- Flux.2 (Klein): the Qwen3 tokens of the prompt in its chat template, padded to ``max_sequence_length``.
- Flux.2 [dev]: the Mistral tokens of its system message and the prompt in its chat template, padded likewise.
- Sana: ``<bos>`` and the last Gemma tokens of its instruction + the prompt (:func:`_gemma`); pads masked.

LLM templates wrap the prompt in tokens of their own (``<|im_start|>``, ``user``, ``assistant``...): they are
keys like any other but no word of the prompt, so their encoder is ``none`` (:data:`NO_ENCODER`) and
:func:`~crossattn.attention.words.merge_words` leaves them out; a token is the prompt's when its character
offsets lie inside the prompt's span of the templated text.

Tokens are the tokenizer's own pieces (``</w>``-ending BPE for CLIP, ``▁``-starting SentencePiece for
T5); :func:`crossattn.attention.words.merge_words` joins them into words per encoder.
"""

from __future__ import annotations

from .words import NO_ENCODER  # noqa: F401 (the encoder of keys that are no prompt token: SD3's zeros, templates)


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
    """``(tokens, encoders)`` of ``prompt``: the keys' tokens, and for joint and LLM-encoded models each one's
    encoder (None for CLIP-read U-Net models, whose keys are all the CLIP tokenizer's). ``pipe``: the pipeline
    (None for a bare denoiser); ``text_length``: the attention's text keys. ``(None, None)`` when the prompt or a
    tokenizer is unknown."""
    if prompt is None:
        return None, None
    layout = LAYOUTS.get(_layout_name(pipe)) if pipe is not None else None
    if layout is not None:
        return layout(pipe, prompt, text_length)
    if joint or tokenizer is None:  # a bare transformer has no tokenizers
        return None, None
    return clip_tokens(tokenizer, prompt), None


def _layout_name(pipe) -> str | None:
    from .families import family_of
    from .install import denoiser_of

    family = family_of(denoiser_of(pipe))
    return None if family is None else family.tokens


def _t5_only(pipe, prompt: str, text_length: int | None):
    """Flux: T5 tokens (``tokenizer_2``) padded to the keys' length."""
    t5 = t5_tokens(pipe.tokenizer_2, prompt, text_length or pipe.tokenizer_2.model_max_length)
    return t5, ["t5"] * len(t5)


def templated_tokens(tokenizer, text: str, span: tuple[int, int], encoder: str, length: int | None = None, **options):
    """The tokens of ``text`` (a template around the prompt at characters ``span``): ``(tokens, encoders)``, the
    prompt's tokens named ``encoder`` and the template's :data:`NO_ENCODER`; padded to ``length`` when given.
    ``options`` go to the tokenizer's call (``padding_side``)."""
    padding = "max_length" if length else False
    enc = tokenizer(text, padding=padding, max_length=length, truncation=length is not None,
                    return_offsets_mapping=True, **options)  # fmt: skip
    tokens = tokenizer.convert_ids_to_tokens(enc.input_ids)
    starts = [a + len(text[a:b]) - len(text[a:b].lstrip()) for a, b in enc.offset_mapping]  # past a leading space
    inside = [span[0] <= a and b <= span[1] and a < b for a, (_, b) in zip(starts, enc.offset_mapping, strict=True)]
    return tokens, [encoder if i else NO_ENCODER for i in inside]


def _qwen_image(pipe, prompt: str, text_length: int | None):
    """Qwen-Image: the templated prompt's tokens after the system turn, padded (masked) to the keys' length."""
    template, drop = pipe.prompt_template_encode, pipe.prompt_template_encode_start_idx
    start = template.index("{}")
    tokens, encoders = templated_tokens(pipe.tokenizer, template.format(prompt), (start, start + len(prompt)), "qwen")
    tokens, encoders = (
        tokens[drop : drop + pipe.tokenizer_max_length],
        encoders[drop : drop + pipe.tokenizer_max_length],
    )
    pad = max(0, (text_length or len(tokens)) - len(tokens))
    return (tokens + ["<pad>"] * pad)[: text_length or None], (encoders + [NO_ENCODER] * pad)[: text_length or None]


def _chat(pipe, prompt: str, text_length: int | None):
    """Flux.2 Klein: the prompt in the tokenizer's chat template (a user turn, no thinking), padded to the keys'
    length (the pipeline's ``max_sequence_length``)."""
    message = [{"role": "user", "content": prompt}]
    text = pipe.tokenizer.apply_chat_template(
        message, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    start = text.rfind(prompt)
    return templated_tokens(pipe.tokenizer, text, (start, start + len(prompt)), "qwen", text_length)


def _mistral(pipe, prompt: str, text_length: int | None):
    """Flux.2 [dev]: the Mistral tokens of its system message and the prompt in the tokenizer's chat template,
    padded to the keys' length, as ``Flux2Pipeline`` builds them (diffusers' ``format_input``: ``[IMG]`` taken out
    of the prompt). The tokenizer is a ``PixtralProcessor`` (its ``tokenizer`` the text one) or the text tokenizer
    itself; the template starts with ``<s>``, so no special token is added again, as the processor does."""
    from diffusers.pipelines.flux2.pipeline_flux2 import format_input

    messages = format_input([prompt], system_message=pipe.system_message)[0]
    text = pipe.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    cleaned = messages[-1]["content"][0]["text"]
    start = text.rfind(cleaned)
    tokenizer = getattr(pipe.tokenizer, "tokenizer", pipe.tokenizer)
    span = (start, start + len(cleaned))
    return templated_tokens(tokenizer, text, span, "mistral", text_length, add_special_tokens=False)


def _pixart(pipe, prompt: str, text_length: int | None):
    """PixArt-Σ: T5 tokens of the prompt as the pipeline cleans it (lower-cased, stripped), padded (masked)."""
    t5 = t5_tokens(pipe.tokenizer, prompt.lower().strip(), text_length or pipe.tokenizer.model_max_length)
    return t5, ["t5"] * len(t5)


def _gemma(pipe, prompt: str, text_length: int | None):
    """Sana: Gemma tokens of its complex human instruction + the prompt (lower-cased, stripped), padded to the
    instruction's length + ``max_sequence_length`` − 2; the keys are ``<bos>`` and the last ``max_sequence_length``
    − 1 of them (Sana's ``select_index``, section 3.1 of Xie et al., "SANA", ICLR 2025)."""
    import inspect

    default = inspect.signature(type(pipe).__call__).parameters.get("complex_human_instruction")
    instruction = "\n".join(default.default or []) if default is not None else ""
    length = text_length or 300
    total = len(pipe.tokenizer.encode(instruction)) + length - 2 if instruction else length
    text = instruction + prompt.lower().strip()
    span = (len(instruction), len(text))
    tokens, encoders = templated_tokens(pipe.tokenizer, text, span, "gemma", total, padding_side="right")
    index = [0, *range(len(tokens) - length + 1, len(tokens))]  # (length,)
    return [tokens[i] for i in index], [encoders[i] for i in index]


def _sd3_or_flux(pipe, prompt: str, text_length: int | None):
    return joint_tokens(pipe, prompt, text_length)


#: a family's ``tokens`` (crossattn.attention.families) → ``(pipe, prompt, text keys) -> (tokens, encoders)``
LAYOUTS = {
    "sd3": _sd3_or_flux,
    "flux": _t5_only,
    "t5": _pixart,
    "qwen-image": _qwen_image,
    "chat": _chat,
    "mistral": _mistral,
    "gemma": _gemma,
}


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
