"""Benchmark-only mitmproxy script: cProfile the proxy's event loop while it runs.

    mitmdump -s benchmarks/proxy/profile_addon.py --set bench_profile=/tmp/kalkan.prof …

The profile is written when mitmdump stops (SIGTERM); read it with
`python -m pstats /tmp/kalkan.prof` (`sort tottime`, `stats 40`).  `run.py --profile DIR`
loads it into the Kalkan and the bare mitmdump alike, so their profiles compare.
"""

import cProfile

from mitmproxy import ctx


class ProfileLoop:
    def __init__(self) -> None:
        self.profiler: cProfile.Profile | None = None

    def load(self, loader) -> None:
        loader.add_option("bench_profile", str, "", "Write a cProfile of the event loop here at exit.")

    def running(self) -> None:
        if ctx.options.bench_profile:
            self.profiler = cProfile.Profile()
            self.profiler.enable()

    def done(self) -> None:
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(ctx.options.bench_profile)


addons = [ProfileLoop()]
