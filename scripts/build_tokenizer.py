"""Build the CLIP BPE tokenizer files shipped in ``src/crossattn/pretrained/tokenizer``.

The source is OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), which the PyPI package
``clip-anytorch`` ships. Get it without installing that package (it pulls in torchvision)::

    pip download --no-deps clip-anytorch -d /tmp/clip
    unzip -o -j /tmp/clip/clip_anytorch-*.whl clip/bpe_simple_vocab_16e6.txt.gz -d /tmp/clip
    python scripts/build_tokenizer.py /tmp/clip/bpe_simple_vocab_16e6.txt.gz

With no argument the script does the download itself (``pip download``, PyPI only).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from crossattn.models.tokenizer import default_tokenizer_dir, load_tokenizer, write_tokenizer_files


def fetch_bpe(work: Path) -> Path:
    """Download clip-anytorch's wheel (no dependencies) and extract the merges file from it."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "clip-anytorch", "-d", str(work)]
    subprocess.run(cmd, check=True)
    wheel = next(work.glob("clip_anytorch-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        target = work / "bpe_simple_vocab_16e6.txt.gz"
        target.write_bytes(zf.read("clip/bpe_simple_vocab_16e6.txt.gz"))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bpe", nargs="?", help="path to bpe_simple_vocab_16e6.txt.gz (downloaded if omitted)")
    parser.add_argument("--out", default=str(default_tokenizer_dir()), help="output folder (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bpe = Path(args.bpe) if args.bpe else fetch_bpe(Path(tmp))
        out = write_tokenizer_files(bpe, args.out)
    tok = load_tokenizer(out)
    print(f"wrote {out} ({len(tok)} tokens)")
    print("check:", tok("a photograph of an astronaut riding a horse").input_ids)


if __name__ == "__main__":
    main()
