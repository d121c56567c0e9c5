"""Where a chaos run's drain time goes: the same backlog drained three ways, in one run.

1. **agents**: N real agents (`kalkan-agent run`) are running when the server stops; K events
   each go into their outboxes (what an outage leaves behind); the server starts again; time
   from its first answer until all are stored.
2. **server alone**: the same kind of backlog posted by N threads straight from the outboxes'
   stored bodies (500 per batch, as the agent sends them, over TLS), without agents: the
   server's own ingest rate.  agents / server alone says how much the agent side costs.
3. the server's own time per batch (`/metrics`, `kalkan_ingest_batch_duration_seconds`).

    .venv/bin/python benchmarks/chaos/drain.py [--backend sqlite|postgresql] [--agents 5] [--events 4000]

Figures go to stdout as JSON (and `--json FILE`); RESULTS.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for path in (REPO, REPO / "benchmarks" / "chaos"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import httpx  # noqa: E402
from chaos import stored_counts  # noqa: E402

from agent.outbox import Outbox, open_sink  # noqa: E402
from tests.support.agent_process import AgentProcess  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.server import KalkanServerProcess  # noqa: E402

METRICS_TOKEN = "drain-probe-metrics"


def fill(agent: AgentProcess, index: int, count: int, tag: str) -> None:
    sink = open_sink(agent.state_dir)
    for k in range(count):
        sink.emit("web.report", {"url": f"http://drain.test/{tag}/{index}/{k}"})
    sink.outbox.close()


def wait_stored(server: KalkanServerProcess, at_least: int, timeout: float = 900) -> float:
    start = time.monotonic()
    while stored_counts(server, distinct=False)[0] < at_least:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not stored within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - start


def ingest_metrics(server: KalkanServerProcess) -> tuple[float, int]:
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
                     verify=server.verify).text
    total = float(re.search(r"^kalkan_ingest_batch_duration_seconds_sum\S* (\S+)", text, re.M).group(1))
    count = re.search(r"^kalkan_ingest_batch_duration_seconds_count\S* (\S+)", text, re.M).group(1)
    return total, int(float(count))


def run(backend: str, agents_n: int, per_agent: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="kalkan-drain-"))
    cluster = None
    db_url = None
    if backend == "postgresql":
        cluster = PostgresCluster()
        cluster.start()
        db_url = cluster.create_database()
    os.environ["KALKAN_METRICS_TOKEN"] = METRICS_TOKEN
    server = KalkanServerProcess(work / "server", db_url=db_url)
    server.start()
    record: dict = {"backend": backend, "agents": agents_n, "events_per_agent": per_agent}
    try:
        agents = [AgentProcess(work / f"agent-{i}") for i in range(agents_n)]
        for i, agent in enumerate(agents):
            agent.enroll(server, seat=f"seat-{i}")
        # 1. real agents (running, as in a chaos run) drain the backlog an outage left: the
        # server is stopped, the outboxes fill, the server starts; timed from its first answer
        for agent in agents:
            agent.start(collectors=["heartbeat"], heartbeat_s=5)
        server.stop()
        for i, agent in enumerate(agents):
            fill(agent, i, per_agent, "agents")
        server.start()
        started = time.monotonic()
        before_sum, before_count = ingest_metrics(server)
        took = wait_stored(server, agents_n * per_agent)
        after_sum, after_count = ingest_metrics(server)
        record["agents_s"] = round(took, 2)
        record["agents_events_per_s"] = round(agents_n * per_agent / took)
        record["agents_server_busy_s"] = round(after_sum - before_sum, 2)
        record["agents_batches"] = after_count - before_count
        for agent in agents:
            agent.stop()
        # 2. the server alone: the same backlog posted straight from the outboxes
        for i, agent in enumerate(agents):
            fill(agent, i, per_agent, "direct")
        stored_before = stored_counts(server, distinct=False)[0]
        before_sum, before_count = ingest_metrics(server)

        def post_all(agent: AgentProcess) -> None:
            token = (agent.state_dir / "token").read_text().strip()
            with Outbox(agent.state_dir / "outbox.sqlite") as box, \
                    httpx.Client(base_url=server.url, verify=server.verify, timeout=120,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"}) as client:
                while batch := box.peek_batch(500):
                    body = b'{"events":[' + b",".join(e.body.encode() for e in batch) + b"]}"
                    answer = client.post("/api/v1/events", content=body)
                    answer.raise_for_status()
                    box.remove(e.id for e in batch)

        started = time.monotonic()
        threads = [threading.Thread(target=post_all, args=(a,)) for a in agents]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - started
        assert stored_counts(server, distinct=False)[0] - stored_before == agents_n * per_agent
        after_sum, after_count = ingest_metrics(server)
        record["direct_s"] = round(took, 2)
        record["direct_events_per_s"] = round(agents_n * per_agent / took)
        record["direct_server_busy_s"] = round(after_sum - before_sum, 2)
        record["direct_batches"] = after_count - before_count
        record["agents_vs_direct"] = round(record["agents_s"] / record["direct_s"], 2)
    finally:
        server.stop()
        if cluster is not None:
            cluster.stop()
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--events", type=int, default=4000, help="backlog per agent")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    record = run(args.backend, args.agents, args.events)
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(),
              "cpus": os.cpu_count(), "load_before": [round(x, 1) for x in load_before],
              "load_after": [round(x, 1) for x in os.getloadavg()], **record}
    print(json.dumps(record, indent=2))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
