#!/usr/bin/env bash
# Kalkan's main job on one machine: set up, start the policy server on its embedded SQLite
# database with a demo school (room lab-1, admin/teacher/director logins), enrol one local
# agent and run it, reporting to the server.  Ctrl-C stops both.
#
#   KALKAN_DEMO_STATE   where the demo keeps its state (default ./demo-state)
#   KALKAN_DEMO_PORT    the server's HTTPS port (default 8443)
#   KALKAN_DEMO_COLLECTORS  the agent's collectors (default heartbeat,network)
#   KALKAN_DEMO_ONESHOT=1   stop once the agent is seen reporting (used by the tests)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash install/setup.sh

state=$(realpath -m "${KALKAN_DEMO_STATE:-$root/demo-state}")
port=${KALKAN_DEMO_PORT:-8443}
collectors=${KALKAN_DEMO_COLLECTORS:-heartbeat,network}
server_state=$state/server
agent_state=$state/agent
bin=$root/.venv/bin
mkdir -p "$state"

"$bin/kalkan-server" migrate --state-dir "$server_state"
demo=$("$bin/kalkan-server" demo --state-dir "$server_state" --json)
field() { "$bin/python" -c "import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, d))" "$demo" "$1"; }

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin/kalkan-server" run --state-dir "$server_state" --port "$port" >"$state/server.log" 2>&1 &
pids+=($!)
url=https://127.0.0.1:$port
for _ in $(seq 1 100); do
  curl -ksf "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "kalkan: the server did not start; see $state/server.log" >&2; tail -20 "$state/server.log" >&2; exit 1; }
  sleep 0.2
done
fingerprint=$("$bin/kalkan-server" fingerprint --state-dir "$server_state")

if [ ! -f "$agent_state/token" ]; then
  code=$(field "enrollment_code")
  "$bin/kalkan-agent" enroll --state-dir "$agent_state" --server "$url" --code "$code" \
    --fingerprint "$fingerprint" --seat lab-1-01
fi
"$bin/kalkan-agent" run --state-dir "$agent_state" --collectors "$collectors" --heartbeat 10 \
  >"$state/agent.log" 2>&1 &
pids+=($!)

# The agent is "reporting" once its first heartbeat has left the outbox and the server answered.
reporting=""
for _ in $(seq 1 150); do
  if "$bin/kalkan-agent" status --state-dir "$agent_state" --json 2>/dev/null |
     "$bin/python" -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if s.get('server_reachable') and s.get('running') and s.get('outbox_depth')==0 else 1)"; then
    reporting=yes; break
  fi
  sleep 0.2
done
[ -n "$reporting" ] || { echo "kalkan: the agent is not reporting; see $state/agent.log" >&2; tail -20 "$state/agent.log" >&2; exit 1; }
# The demo's category lists (shipped in the repository) reach the seat by hash (docs/filtering-console.md).
for _ in $(seq 1 100); do [ -s "$agent_state/indexes/current" ] && break; sleep 0.1; done
lists=$(cat "$agent_state/indexes/current" 2>/dev/null || echo "not fetched yet")

cat <<TXT

  Kalkan is running.   Kalkan иштеп жатат.   Kalkan работает.

  Web console:  $url/   (self-signed certificate, SHA-256 $fingerprint)
  Logins:       admin / $(field "logins['admin']")    teacher / $(field "logins['teacher']")    director / $(field "logins['director']")
  Agent:        $agent_state  (kalkan-agent status --state-dir $agent_state)
  Category lists on the seat: ${lists:0:16}…  (kalkan-server lists update --source URL for the full UT1)
  Logs:         $state/server.log  $state/agent.log

  The agent is enrolled and reporting.  Ctrl-C stops the server and the agent.
TXT
"$bin/kalkan-agent" status --state-dir "$agent_state" || true
[ "${KALKAN_DEMO_ONESHOT:-}" = 1 ] && exit 0
wait
