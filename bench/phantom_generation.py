"""How long one default phantom (96 x 96 x 64 voxels) takes to generate: a printed figure.

The test suite times nothing (a loaded CI machine made a timed assertion fail); this script
prints the figure instead, with the target the generator was written to (about 2 s for the
default case on a 2-core CPU, so that ``volsam phantom --cases 100`` takes minutes).

    python bench/phantom_generation.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_SECONDS = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from volsam.phantoms import make_phantom

    make_phantom(0)  # warm-up: imports and caches
    seconds = []
    for seed in range(1, args.repeats + 1):
        started = time.perf_counter()
        image, _, _ = make_phantom(seed)
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    print(f"default phantom {'x'.join(map(str, image.shape_ijk))}: median {median:.2f} s over {args.repeats} "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f}); target {TARGET_SECONDS:.1f} s: "
          f"{median / TARGET_SECONDS:.2f}x of it")


if __name__ == "__main__":
    main()
