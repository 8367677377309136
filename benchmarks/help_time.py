"""``crossattn --help`` wall time (median of N fresh processes); target < 0.5 s.

Also says whether importing the CLI pulled in torch or diffusers (it must not).

    python benchmarks/help_time.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "crossattn", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    probe = "import sys, crossattn.cli as c; c.build_parser(); print(sorted({'torch', 'diffusers'} & set(sys.modules)))"
    heavy = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.strip()
    print(
        f"crossattn --help: median {statistics.median(times) * 1000:.0f} ms over {args.repeats} runs "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); target < 500 ms"
    )
    print(f"heavy modules imported by the CLI: {heavy}")


if __name__ == "__main__":
    main()
