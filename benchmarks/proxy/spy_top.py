"""Summarise a py-spy raw (collapsed-stack) profile: the functions with the most samples.

    .venv/bin/python benchmarks/proxy/spy_top.py DIR/kalkan.txt [--self] [--top 30] [--grep kalkan]

Without --self a function counts when it is anywhere on the stack (inclusive time); with --self
only when it is the innermost frame.  Percentages are of all samples of that profile.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--self", action="store_true", dest="self_only")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--grep", default="", help="only frames whose text contains this")
    args = parser.parse_args()
    counts: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack:
            continue
        samples = int(number)
        total += samples
        frames = stack.split(";")
        chosen = frames[-1:] if args.self_only else set(frames)
        for frame in chosen:
            if args.grep in frame:
                counts[frame] += samples
    print(f"{total} samples")
    for frame, samples in counts.most_common(args.top):
        print(f"{100 * samples / total:6.2f}%  {frame}")


if __name__ == "__main__":
    main()
