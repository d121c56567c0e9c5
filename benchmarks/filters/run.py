"""Filters benchmark: Kalkan's decision vs squidGuard vs a plain Python set, side by side.

    .venv/bin/python benchmarks/filters/run.py [--urls 100000] [--synthetic 4000000]

Everything is built under benchmarks/filters/work/ (git-ignored).  Measures, in one run:
1. decisions per second on one core, canonicalisation included, for a stream of unique
   URLs and for a browsing trace with locality, for Kalkan `decide()`, squidGuard 1.6
   (stdin redirector protocol, same UT1 domain + URL lists, no regular expressions) and a
   plain Python set lookup;
2. index size per entry and load time at the UT1 size and at N synthetic domains, against
   a Python set of the same domains; false-positive rate of the 64-bit hashed keys;
3. agreement between Kalkan's and squidGuard's block decisions, with every kind of
   disagreement counted and explained by example.
Prints a JSON summary and writes it to work/results.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from filters.canonical import canonicalize  # noqa: E402
from filters.categories import UT1_MAP  # noqa: E402
from filters.decision import decide  # noqa: E402
from filters.importers import _ut1_folder  # noqa: E402
from filters.index import CategoryIndex, Source, compile_index  # noqa: E402
from filters.policy import FilterPolicy  # noqa: E402

WORK = Path(__file__).resolve().parent / "work"
UT1 = REPO.parent / "shared" / "data" / "ut1"
AT = "2025-03-03T10:15:00+06:00"


def machine() -> dict:
    lines = open("/proc/cpuinfo").read().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "date": time.strftime("%Y-%m-%d %H:%M"),
            "python": platform.python_version(), "load_avg_at_start": os.getloadavg()}


def ut1_folders() -> dict[Path, str]:
    """Distinct real UT1 folders that Kalkan imports, → a name for squidGuard."""
    out: dict[Path, str] = {}
    for name in sorted(UT1_MAP):
        folder = _ut1_folder(UT1, name)
        if folder is not None and folder not in out:
            out[folder] = folder.name.replace("-", "_")
    return out


def read_entries(folders) -> tuple[list[str], list[str]]:
    domains, urls = [], []
    for folder in folders:
        for kind, bucket in (("domains", domains), ("urls", urls)):
            f = folder / kind
            if f.is_file():
                with f.open(encoding="utf-8", errors="replace") as fh:
                    bucket.extend(line.strip() for line in fh if line.strip())
    return domains, urls


# ------------------------------------------------------------------ URL streams


def unique_stream(domains, urls, n, rng) -> list[str]:
    """Unique URLs: ~30 % on a listed domain or URL, the rest on unlisted hosts."""
    out = set()
    while len(out) < n:
        r = rng.random()
        if r < 0.22:
            d = rng.choice(domains)
            sub = rng.choice(["", "www.", "m.", "cdn1."])
            out.add(f"http://{sub}{d}/p/{rng.randrange(10**9)}.html?x={rng.randrange(100)}")
        elif r < 0.30:
            u = rng.choice(urls)
            out.add(f"http://{u}/{rng.randrange(10**6)}")
        else:
            out.add(f"http://site{rng.randrange(10**9)}.example{rng.randrange(50)}.kg/a/{rng.randrange(10**6)}"
                    f"/img.png?v={rng.randrange(1000)}")
    lst = list(out)
    rng.shuffle(lst)
    return lst


def mixed_case_stream(urls, n, rng) -> list[tuple[str, str]]:
    """(mixed, plain) pairs: URL-list entries asked with their letters' case flipped at random
    (host and path; many servers ignore case, so this is the same page) and, for entries with a
    query, with another parameter before or after theirs (the same page with more parameters).
    `plain` is the entry's own spelling with the same suffix: what a case-insensitive,
    parameter-aware filter must decide alike."""
    out = []
    with_query = [u for u in urls if "?" in u]
    while len(out) < n:
        if with_query and rng.random() < 0.25:
            u = rng.choice(with_query)
            extra = f"zz{rng.randrange(100)}=1"
            after = rng.random() < 0.5
            plain = f"http://{u}&{extra}" if after else f"http://{u.replace('?', f'?{extra}&', 1)}"
            mixed = plain
        else:
            u = rng.choice(urls)
            plain = f"http://{u}/{rng.randrange(10**6)}"
            mixed = "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c for c in plain[7:])
            mixed = "http://" + mixed
        out.append((mixed, plain))
    return out


def run_mixed(args) -> None:
    """Only the mixed-case stream: Kalkan now, Kalkan before (a checkout), squidGuard."""
    rng = random.Random(args.seed)
    folders = ut1_folders()
    domains, urls = read_entries(folders)
    kidx = WORK / "ut1.kidx"
    compile_index([Source(str(UT1), "ut1")], kidx)
    index = CategoryIndex.open(kidx)
    policy = kalkan_policy(index.table.ids)
    from datetime import datetime

    at = datetime.fromisoformat(AT)
    pairs = mixed_case_stream(urls, args.urls, rng)
    mixed = [m for m, _ in pairs]
    lowered = [m[:7] + m[7:].lower() for m in mixed]  # what squidGuard compares (it lowers the URL)
    _, k_mixed = run_kalkan(policy, index, mixed, at)
    _, k_lower = run_kalkan(policy, index, lowered, at)
    conf = setup_squidguard(folders)
    _, _, sg_mixed = run_squidguard(conf, mixed)
    before = None
    if args.before:
        script = (
            "import json, sys; from datetime import datetime\n"
            "from filters.decision import decide\n"
            "from filters.index import CategoryIndex, Source, compile_index\n"
            "from filters.policy import FilterPolicy\n"
            f"compile_index([Source({str(UT1)!r}, 'ut1')], {str(WORK / 'ut1-before.kidx')!r})\n"
            f"index = CategoryIndex.open({str(WORK / 'ut1-before.kidx')!r})\n"
            "policy = FilterPolicy.from_bundle({'filtering': {'unsupervised': {'bench': 'open'}, "
            "'safe_search': False, 'category_actions': {'bench': {c: 'block' for c in index.table.ids}}}, "
            "'groups': [{'name': 'bench', 'kind': 'student'}], 'default_group': 'bench'})\n"
            f"at = datetime.fromisoformat({AT!r})\n"
            "urls = json.load(sys.stdin)\n"
            "print(json.dumps([decide(policy, index, url=u, group='bench', at=at).action == 'block'\n"
            "                  for u in urls]))\n"
        )
        res = subprocess.run([sys.executable, "-c", script], input=json.dumps(mixed), capture_output=True,
                             text=True, cwd=args.before, check=True)
        before = json.loads(res.stdout)
    n = len(mixed)
    print(f"machine: {machine()}; {n} mixed-case / extra-parameter URLs from UT1's URL lists "
          f"({sum('&zz' in m or '?zz' in m for m in mixed)} with an extra parameter)")
    print()
    print("| engine | blocks (of the mixed stream) | blocks the lowered twin | agrees with squidGuard |")
    print("| --- | --- | --- | --- |")
    agree = sum(a == b for a, b in zip(k_mixed, sg_mixed, strict=True)) / n
    print(f"| Kalkan (this tree) | {sum(k_mixed)} | {sum(k_lower)} | {agree:.2%} |")
    if before is not None:
        agree_b = sum(a == b for a, b in zip(before, sg_mixed, strict=True)) / n
        print(f"| Kalkan (before: {args.before}) | {sum(before)} | – | {agree_b:.2%} |")
    print(f"| squidGuard 1.6 | {sum(sg_mixed)} | – | – |")
    kinds: dict[str, list[str]] = {}
    for u, k, s in zip(mixed, k_mixed, sg_mixed, strict=True):
        if k != s:
            kinds.setdefault("Kalkan blocks, squidGuard allows" if k else "squidGuard blocks, Kalkan allows",
                             []).append(u)
    for why, found in kinds.items():
        print(f"\n{why}: {len(found)}; e.g. " + ", ".join(found[:5]))


def trace_stream(domains, n, rng) -> list[str]:
    """Page loads: each asks about its own host and a few CDN/ads hosts dozens of times."""
    cdns = [f"cdn{i}.static.example.net" for i in range(20)]
    cdns += ["fonts.gstatic.com", "www.google-analytics.com"]
    out = []
    while len(out) < n:
        if rng.random() < 0.2:
            host = "www." + rng.choice(domains)
        else:
            host = f"www.news{rng.randrange(300)}.example.kg"
        page_hosts = [host] + rng.sample(cdns, 3)
        for _ in range(40):
            h = rng.choice(page_hosts) if rng.random() < 0.6 else host
            out.append(f"https://{h}/assets/{rng.randrange(5000)}/file{rng.randrange(100)}.js")
    return out[:n]


# ------------------------------------------------------------------ engines


def kalkan_policy(categories) -> FilterPolicy:
    return FilterPolicy.from_bundle({"filtering": {
        "unsupervised": {"bench": "open"}, "safe_search": False,
        "category_actions": {"bench": {c: "block" for c in categories}}},
        "groups": [{"name": "bench", "kind": "student"}], "default_group": "bench"})


def run_kalkan(policy, index, stream, at) -> tuple[float, list[bool]]:
    gc.collect()
    t = time.perf_counter()
    blocked = [decide(policy, index, url=u, group="bench", at=at).action == "block" for u in stream]
    return time.perf_counter() - t, blocked


class PythonSet:
    """The plain baseline: two Python sets of strings, squidGuard-like matching."""

    def __init__(self, domains, urls):
        self.domains = {d.lower() for d in domains}
        self.urls = {u.lower().rstrip("/") for u in urls}

    def blocked(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        labels = host.split(".")
        for i in range(len(labels) - 1):
            if ".".join(labels[i:]) in self.domains:
                return True
        path = parts.path
        for i in range(len(labels) - 1):
            h = ".".join(labels[i:])
            p = path
            while p:
                if h + p in self.urls:
                    return True
                p = p[: p.rfind("/")] if "/" in p else ""
        return False


def setup_squidguard(folders: dict[Path, str]) -> Path:
    db = WORK / "sgdb"
    if db.exists():
        shutil.rmtree(db)
    (WORK / "sglog").mkdir(parents=True, exist_ok=True)
    dests = []
    for folder, name in folders.items():
        (db / name).mkdir(parents=True)
        lines = []
        for kind in ("domains", "urls"):
            if (folder / kind).is_file():
                shutil.copy(folder / kind, db / name / kind)
                lines.append(f"  {'domainlist' if kind == 'domains' else 'urllist'} {name}/{kind}")
        dests.append(f"dest {name} {{\n" + "\n".join(lines) + "\n}")
    conf = WORK / "squidguard.conf"
    names = " ".join(f"!{n}" for n in folders.values())
    conf.write_text(f"dbhome {db}\nlogdir {WORK / 'sglog'}\n" + "\n".join(dests) +
                    f"\nacl {{\n  default {{\n    pass {names} all\n"
                    "    redirect http://blocked.kalkan/?c=%t\n  }\n}\n")
    # Compile squidGuard's Berkeley DB files, as a production install does.
    # (squidGuard -C exits with 255 even when it succeeded; the .db files are checked below)
    subprocess.run(["squidGuard", "-c", str(conf), "-C", "all"], capture_output=True)
    assert list(db.glob("*/domains.db")), "squidGuard -C all made no .db files"
    return conf


def run_squidguard(conf: Path, stream) -> tuple[float, float, list[bool]]:
    """(startup seconds, seconds for the stream after startup, blocked per URL)."""
    def feed(urls):
        data = "".join(f"{u} 10.0.0.1/- - GET\n" for u in urls).encode()
        t = time.perf_counter()
        # squidGuard 1.6 exits with 255 at end of input when it uses .db files; the answers are checked
        res = subprocess.run(["squidGuard", "-c", str(conf)], input=data, capture_output=True)
        return time.perf_counter() - t, res.stdout.decode(errors="replace").splitlines()

    startup, _ = min((feed(stream[:1]) for _ in range(2)), key=lambda x: x[0])
    total, lines = feed(stream)
    assert len(lines) == len(stream), (len(lines), len(stream))
    return startup, total - startup, [line.startswith("OK") for line in lines]


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------ agreement


def explain_disagreement(url: str, index: CategoryIndex, sg: bool) -> str:
    """A coarse class for one disagreement; examples are printed for a person to read."""
    match = index.lookup(canonicalize(url))
    if sg:
        return "squidGuard blocks, Kalkan allows"
    kinds = sorted({"url entry" if "/" in e else "domain entry" for e in match.expressions})
    return f"Kalkan blocks ({', '.join(kinds)}), squidGuard allows"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", type=int, default=100_000)
    ap.add_argument("--synthetic", type=int, default=4_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ut1", type=Path, default=None, help="the UT1 lists (default ../shared/data/ut1)")
    ap.add_argument("--mixed-case", action="store_true", dest="mixed",
                    help="only the mixed-case / extra-parameter stream (issue 9), with --urls of them")
    ap.add_argument("--before", type=Path, default=None,
                    help="with --mixed-case: a checkout of an older Kalkan decides the same stream")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.ut1:
        global UT1
        UT1 = args.ut1
    if args.mixed:
        run_mixed(args)
        return
    rng = random.Random(args.seed)
    result: dict = {"machine": machine(), "args": vars(args)}
    folders = ut1_folders()
    domains, urls = read_entries(folders)
    result["lists"] = {"folders": len(folders), "domain_lines": len(domains), "url_lines": len(urls)}

    # --- index at UT1 size
    kidx = WORK / "ut1.kidx"
    stats = compile_index([Source(str(UT1), "ut1")], kidx)
    t = time.perf_counter()
    index = CategoryIndex.open(kidx)
    load = time.perf_counter() - t
    t = time.perf_counter()
    baseline = PythonSet(domains, urls)
    set_load = time.perf_counter() - t
    result["ut1_index"] = {"keys": stats.keys, "bytes": stats.bytes,
                           "bytes_per_entry": stats.bytes / stats.keys,
                           "load_ms": load * 1000, "compile_s": stats.seconds,
                           "python_set_build_s": set_load}

    policy = kalkan_policy(index.table.ids)
    from datetime import datetime

    at = datetime.fromisoformat(AT)
    conf = setup_squidguard(folders)
    streams = {"unique": unique_stream(domains, urls, args.urls, rng),
               "trace": trace_stream(domains, args.urls, rng)}
    result["throughput"] = {}
    agreement = {}
    for name, stream in streams.items():
        index = CategoryIndex.open(kidx)  # fresh: no warm host cache from the previous stream
        k_time, k_blocked = run_kalkan(policy, index, stream, at)
        t = time.perf_counter()
        s_blocked = [baseline.blocked(u) for u in stream]
        set_time = time.perf_counter() - t
        sg_start, sg_time, sg_blocked = run_squidguard(conf, stream)
        n = len(stream)
        result["throughput"][name] = {
            "urls": n, "kalkan_per_s": n / k_time, "squidguard_per_s": n / sg_time,
            "squidguard_startup_s": sg_start, "python_set_per_s": n / set_time,
            "kalkan_vs_squidguard": (n / k_time) / (n / sg_time),
            "kalkan_blocked": sum(k_blocked), "squidguard_blocked": sum(sg_blocked),
            "python_set_blocked": sum(s_blocked),
        }
        kinds: dict[str, list] = {}
        for u, k, s in zip(stream, k_blocked, sg_blocked, strict=True):
            if k != s:
                why = explain_disagreement(u, index, s)
                matched = ", ".join(index.lookup(canonicalize(u)).expressions) or "-"
                kinds.setdefault(why, []).append(f"{u}  (Kalkan matched: {matched})")
        same = sum(k == s for k, s in zip(k_blocked, sg_blocked, strict=True))
        agreement[name] = {"agree": same / n,
                           "disagreements": {k: {"count": len(v), "examples": v[:6]}
                                             for k, v in kinds.items()}}
    result["agreement"] = agreement

    # --- index at N synthetic domains vs a Python set
    n = args.synthetic
    synth = WORK / f"synthetic-{n}.txt"
    if not synth.exists():
        with open(synth, "w") as fh:
            r = random.Random(1)
            for i in range(n):
                fh.write(f"s{i}x{r.randrange(10**9)}.example{i % 97}.com\n")
    skidx = WORK / f"synthetic-{n}.kidx"
    t = time.perf_counter()
    sstats = compile_index([Source(str(synth), "plain", ("games",))], skidx)
    compile_s = time.perf_counter() - t
    loads = []
    for _ in range(5):
        t = time.perf_counter()
        sidx = CategoryIndex.open(skidx)
        loads.append(time.perf_counter() - t)
    # first lookups after load (page faults included)
    t = time.perf_counter()
    probe = [f"http://s{i}x0.example{i % 97}.com/" for i in range(1000)]
    for u in probe:
        sidx.categories_of(u)
    first_lookups_ms = (time.perf_counter() - t) * 1000
    # false positives: names that are not in the list
    fp_n = 1_000_000
    t = time.perf_counter()
    fps = sum(1 for i in range(fp_n) if sidx._expr_mask(f"absent{i}.example.org"))
    fp_time = time.perf_counter() - t
    gc.collect()
    before = current_rss()
    t = time.perf_counter()
    with open(synth) as fh:
        pyset = {line.strip() for line in fh}
    set_load = time.perf_counter() - t
    set_bytes = current_rss() - before
    del pyset
    result["synthetic_index"] = {
        "domains": n, "keys": sstats.keys, "bytes": sstats.bytes,
        "bytes_per_entry": sstats.bytes / sstats.keys,
        "load_ms_best": min(loads) * 1000, "load_ms_worst": max(loads) * 1000, "compile_s": compile_s,
        "first_1000_lookups_ms": first_lookups_ms,
        "false_positives": fps, "false_positive_probes": fp_n, "fp_probe_per_s": fp_n / fp_time,
        "python_set_load_s": set_load, "python_set_bytes_per_entry": set_bytes / n,
    }
    result["load_avg_at_end"] = os.getloadavg()
    (WORK / "results.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
