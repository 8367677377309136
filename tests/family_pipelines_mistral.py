"""A tiny random ``Flux2Pipeline`` (Flux.2 [dev]: a guidance-distilled Flux.2 transformer over a Mistral Small 3 text
encoder), built offline for fixtures; :mod:`tests.family_pipelines` lists it as ``flux2-dev``.

Its tokenizer is Mistral's Tekken as transformers converts it (``integrations/mistral``: byte-level BPE after Tekken's
split pattern, ``Ġ`` word starts, ``<s>``/``[INST]``/``[SYSTEM_PROMPT]`` specials) over the byte-level vocabulary of
:func:`tests.family_pipelines_2026._qwen2_vocab` (trained once a session on the test prompts: ``triangle`` stays two
pieces), with a chat template that renders system and user turns as Mistral Small 3's does. The real folder's
``tokenizer`` is a ``PixtralProcessor`` around that tokenizer; transformers builds one only with torchvision (not
installed here), and ``Flux2Pipeline`` calls only its ``apply_chat_template``, which for text renders the template
and runs the text tokenizer without adding specials (the template starts with ``<s>``), as the bare tokenizer's does.
"""

from __future__ import annotations

import torch

from .family_pipelines import _ready
from .family_pipelines_2026 import _qwen2_vocab, tiny_flux2_pipeline

#: Tekken's pre-tokenizer split (Mistral Small 3's ``tekken.json`` ``pattern``): letters with their leading
#: non-letter, each digit alone, punctuation runs, line breaks and spaces
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
MISTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
                    "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]  # fmt: skip
#: Mistral Small 3's chat template for text turns: ``<s>[SYSTEM_PROMPT]…[/SYSTEM_PROMPT][INST]…[/INST]``
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% set text = m['content'] if m['content'] is string else m['content'][0]['text'] %}"
    "{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif m['role'] == 'user' %}[INST]{{ text }}[/INST]{% endif %}{% endfor %}"
)


def mistral_tokenizer():
    """Tekken as transformers converts it (see the module's text), ``<pad>`` for padding, right-padded."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _qwen2_vocab()
    bpe = Tokenizer(models.BPE(dict(vocab), list(merges), fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(TEKKEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=1024,
    )  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": MISTRAL_SPECIALS[3:]})
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


def mistral3_encoder(tokenizer, hidden: int = 16, layers: int = 30):
    """A tiny ``Mistral3ForConditionalGeneration``: Flux.2 [dev] stacks the hidden states 10, 20 and 30 (so 30
    layers of width 16: text width 48); a one-layer Pixtral vision tower it never uses."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    text = dict(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=None,
    )  # fmt: skip
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=8,
                  image_size=16, patch_size=4)  # fmt: skip
    image_token = tokenizer.convert_tokens_to_ids("[IMG]")
    config = Mistral3Config(text_config=text, vision_config=vision, image_token_index=image_token)
    return Mistral3ForConditionalGeneration(config)


def tiny_flux2_dev_pipeline():
    """``Flux2Pipeline``: :func:`tests.family_pipelines_2026.tiny_flux2_pipeline`'s transformer config and VAE with
    ``guidance_embeds`` on (Flux.2 [dev] is guidance-distilled), over :func:`mistral3_encoder` and
    :func:`mistral_tokenizer`. Sizes: multiples of 4."""
    from diffusers import Flux2Pipeline, Flux2Transformer2DModel

    klein = tiny_flux2_pipeline()
    torch.manual_seed(1)
    config = {k: v for k, v in klein.transformer.config.items() if not k.startswith("_")}
    transformer = Flux2Transformer2DModel.from_config({**config, "guidance_embeds": True})
    tokenizer = mistral_tokenizer()
    pipe = Flux2Pipeline(
        scheduler=klein.scheduler,
        vae=klein.vae,
        text_encoder=mistral3_encoder(tokenizer),
        tokenizer=tokenizer,
        transformer=transformer,
    )
    return _ready(pipe)
