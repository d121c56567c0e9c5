"""Generate the benchmark tree: N files whose sizes are drawn (seeded) from this
machine's real /usr, laid out like a program folder (nested dirs of ~40 entries),
with ~5 % symlinks.  The tree stays out of git (it goes under /var/tmp by default).

    python benchmarks/integrity/make_tree.py /var/tmp/kalkan-bench-tree 64000
"""

from __future__ import annotations

import os
import random
import sys


def real_sizes(limit: int = 200_000) -> list[int]:
    sizes = []
    for dirpath, _dirs, files in os.walk("/usr"):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_mode & 0o170000) == 0o100000:
                sizes.append(st.st_size)
            if len(sizes) >= limit:
                return sizes
    return sizes


def main() -> None:
    root, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 64000
    if os.path.exists(os.path.join(root, ".complete")):
        print(f"{root} already generated")
        return
    rng = random.Random(6)
    sizes = real_sizes()
    blob = os.urandom(64 << 20)  # files are slices of this at random offsets (cheap, still distinct)
    total = 0
    for i in range(count):
        d = os.path.join(root, f"d{i // 1600:02d}", f"s{(i // 40) % 40:02d}")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"f{i:06d}")
        if rng.random() < 0.05 and i > 0:
            os.symlink(f"f{i - 1:06d}", path)
            continue
        size = min(rng.choice(sizes), len(blob) - 64)
        off = rng.randrange(0, len(blob) - size)
        with open(path, "wb") as handle:
            handle.write(blob[off : off + size] + i.to_bytes(8, "little"))
        os.chmod(path, 0o755 if rng.random() < 0.2 else 0o644)
        total += size
    open(os.path.join(root, ".complete"), "w").close()
    print(f"{count} entries, {total / 1e9:.2f} GB under {root}")


if __name__ == "__main__":
    main()
