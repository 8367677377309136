"""The shipped tokenizer files are the real CLIP BPE: Stable Diffusion's ids, 49,408 tokens."""

from __future__ import annotations

import gzip

import pytest

from crossattn.models.tokenizer import BOS_TOKEN, EOS_TOKEN, build_vocab, load_tokenizer, read_merges

SD_IDS = {
    "a photograph of an astronaut riding a horse": [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407],
    "a red circle left of a blue square": [49406, 320, 736, 7117, 1823, 539, 320, 1746, 3999, 49407],
}


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("text", list(SD_IDS))
def test_stable_diffusion_ids(text, fast):
    tokenizer = load_tokenizer(fast=fast)
    assert tokenizer(text).input_ids == SD_IDS[text]


def test_vocabulary_size_and_special_tokens():
    tokenizer = load_tokenizer()
    assert len(tokenizer) == 49408
    assert tokenizer.convert_tokens_to_ids([BOS_TOKEN, EOS_TOKEN]) == [49406, 49407]
    assert tokenizer.pad_token == EOS_TOKEN


def test_max_length_override_pads_and_truncates():
    tokenizer = load_tokenizer(max_length=8)
    ids = tokenizer("one two three four five six seven eight nine", padding="max_length", truncation=True).input_ids
    assert len(ids) == 8 and ids[0] == 49406 and ids[-1] == 49407


def test_vocab_order_follows_clip(tmp_path):
    """Bytes, bytes+</w>, one token per merge, then the two special tokens."""
    merges = ["a b", "ab c</w>"]
    vocab = build_vocab(merges)
    assert len(vocab) == 512 + 2 + 2
    assert vocab["ab"] == 512 and vocab["abc</w>"] == 513
    assert vocab[BOS_TOKEN] == 514 and vocab[EOS_TOKEN] == 515
    assert vocab["a"] == ord("a") - ord("!") and vocab["a</w>"] == 256 + vocab["a"]


def test_read_merges_rejects_a_short_file(tmp_path):
    path = tmp_path / "bpe.txt.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("#version\na b\n")
    with pytest.raises(ValueError, match="merges"):
        read_merges(path)


def test_missing_tokenizer_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        load_tokenizer(tmp_path)
