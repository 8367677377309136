"""The token grounding loss: word masks become token masks, the loss prefers attention on the
object, its gradient reaches the attention, and the recording processors are always put back."""

from __future__ import annotations

import pytest
import torch

from crossattn.attention.record import record_cross_attention
from crossattn.data.shapes import ShapesDataset
from crossattn.training.batching import CaptionCollate
from crossattn.training.grounding_loss import TokenMasks, grounding_loss

from .conftest import generator


def test_word_masks_land_on_their_tokens(tiny_pipe):
    caption = "a red circle left of a blue square"  # one BPE token per word: word i is token i + 1
    words = torch.zeros(8, 4, 4, dtype=torch.uint8)
    words[1, 0, 0] = words[2, 0, 0] = 1  # red circle
    words[6, 3, 3] = words[7, 3, 3] = 1  # blue square
    out = TokenMasks(tiny_pipe.tokenizer, 16)(caption, words)
    assert out.shape == (16, 4, 4)
    assert [int(out[t].sum()) for t in range(10)] == [0, 0, 1, 1, 0, 0, 0, 1, 1, 0]
    assert out[2, 0, 0] == 1 and out[8, 3, 3] == 1
    cut = TokenMasks(tiny_pipe.tokenizer, 4)(caption, words)  # truncated: the end token stays clear
    assert [int(cut[t].sum()) for t in range(4)] == [0, 0, 1, 0]


def test_collate_gives_token_masks_from_scenes(tiny_pipe):
    data = ShapesDataset(4, resolution=16, seed=0, with_masks=True)
    batch = CaptionCollate(tiny_pipe.tokenizer, 16)([data[i] for i in range(4)])
    assert batch["token_masks"].shape == (4, 16, 16, 16)
    scene = data.scene(0)
    for word, mask in scene.word_masks.items():
        assert torch.equal(batch["token_masks"][0, word + 1], torch.from_numpy(mask.astype("uint8")))
    assert "word_masks" not in ShapesDataset(1, resolution=16)[0]


def test_loss_prefers_attention_on_the_object():
    masks = torch.zeros(1, 3, 4, 4)
    masks[0, 1, :2, :2] = 1  # token 1 names the top-left object
    weights = torch.ones(1)

    def probs(token_1_map):  # (1 head, 16 pixels, 3 tokens), rows sum to 1
        p = torch.full((1, 16, 3), 0.0)
        p[0, :, 1] = token_1_map.flatten()
        p[0, :, 0] = 1 - p[0, :, 1]
        return [(p, 1)]

    on_object = torch.zeros(4, 4)
    on_object[:2, :2] = 0.9
    uniform = torch.full((4, 4), 0.3)
    assert grounding_loss(probs(on_object), masks, weights) < grounding_loss(probs(uniform), masks, weights)
    assert grounding_loss(probs(uniform), masks * 0, weights) == 0
    assert grounding_loss(probs(uniform), masks, weights * 0) == 0


def test_gradient_moves_attention_onto_the_masks(tiny_pipe):
    unet = tiny_pipe.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    data = ShapesDataset(4, resolution=16, seed=1, with_masks=True)
    batch = CaptionCollate(tiny_pipe.tokenizer, 16)([data[i] for i in range(4)])
    with torch.no_grad():
        text = tiny_pipe.text_encoder(batch["input_ids"])[0]  # (B, T, D)
    x = torch.randn(4, 3, 16, 16, generator=generator(0))
    t = torch.full((4,), 10)
    params = [p for n, p in unet.named_parameters() if "attn2.to_q" in n or "attn2.to_k" in n]
    opt = torch.optim.Adam(params, lr=3e-2)
    losses = []
    try:
        for _ in range(25):
            with record_cross_attention(unet) as records:
                unet(x, t, encoder_hidden_states=text)
            loss = grounding_loss(records, batch["token_masks"], torch.ones(4))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        unet.load_state_dict(before)  # the session-wide tiny pipeline stays as it was
    assert losses[-1] < 0.8 * losses[0], losses


def test_recording_processors_are_put_back_after_an_error(tiny_pipe):
    unet = tiny_pipe.unet
    saved = dict(unet.attn_processors)
    text = torch.zeros(2, 16, tiny_pipe.text_encoder.config.hidden_size)
    with pytest.raises(RuntimeError, match="boom"), record_cross_attention(unet) as records:
        unet(torch.zeros(2, 3, 16, 16), torch.tensor([1, 2]), encoder_hidden_states=text)
        assert records and all(p.shape[-1] == 16 and p.requires_grad for p, _ in records)
        raise RuntimeError("boom")
    assert all(unet.attn_processors[k] is v for k, v in saved.items())
