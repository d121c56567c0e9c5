#!/usr/bin/env bash
# Kalkan's main job on one machine: set up, start the policy server on its embedded SQLite
# database with a demo school (room lab-1, admin/teacher/director logins), enrol one local
# agent and run it, reporting to the server.  Ctrl-C stops both.
#
#   KALKAN_DEMO_STATE   where the demo keeps its state (default ./demo-state)
#   KALKAN_DEMO_PORT    the server's HTTPS port (default 8443)
#   KALKAN_DEMO_COLLECTORS  the agent's collectors (default heartbeat,network)
#   KALKAN_DEMO_ONESHOT=1   stop once the agent is seen reporting (used by the tests)
#
# Only one quick start runs per state folder: a second one says which is running and where
# its logs are, and leaves them alone.  A busy port is named, with the fix, in the person's
# language (LANG ky/ru, else English).  The server's state folder is written to the
# configuration file (/etc/kalkan/server.toml as root, else ~/.config/kalkan/server.toml)
# unless one already names another folder, so `kalkan-server …` works without --state-dir.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

lang=en
case "${LC_ALL:-${LC_MESSAGES:-${LANG:-}}}" in ky*) lang=ky ;; ru*) lang=ru ;; esac
say() {  # say EN RU KY: the line in the person's language
  case "$lang" in ru) echo "$2" ;; ky) echo "$3" ;; *) echo "$1" ;; esac
}

state=$(realpath -m "${KALKAN_DEMO_STATE:-$root/demo-state}")
port=${KALKAN_DEMO_PORT:-8443}
collectors=${KALKAN_DEMO_COLLECTORS:-heartbeat,network}
server_state=$state/server
agent_state=$state/agent
mkdir -p "$state"

# One quick start per state folder: hold a lock for as long as this one runs.
exec 9>"$state/quickstart.lock"
if ! flock -n 9; then
  other=$(cat "$state/quickstart.pid" 2>/dev/null || echo "?")
  say "kalkan: a quick start is already running (pid $other) with $state; its logs: $state/server.log and $state/agent.log. Stop it first (Ctrl-C in its terminal, or: kill $other), or use another KALKAN_DEMO_STATE." \
      "kalkan: быстрый запуск уже работает (pid $other) с $state; его журналы: $state/server.log и $state/agent.log. Сначала остановите его (Ctrl-C в его терминале или: kill $other) или укажите другой KALKAN_DEMO_STATE." \
      "kalkan: тез баштоо иштеп жатат (pid $other), $state менен; анын журналдары: $state/server.log жана $state/agent.log. Адегенде аны токтотуңуз (анын терминалында Ctrl-C же: kill $other) же башка KALKAN_DEMO_STATE колдонуңуз." >&2
  exit 1
fi
echo $$ >"$state/quickstart.pid"

# The port must be free: name who holds it and the fix.
if ! python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1])))" "$port" 2>/dev/null; then
  holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\("[^"]*"\),pid=\([0-9]*\).*/\1 pid \2/p' | head -1)
  say "kalkan: port $port is busy${holder:+ (used by $holder)}. Stop that program, or start on another port: KALKAN_DEMO_PORT=$((port + 1)) $0" \
      "kalkan: порт $port занят${holder:+ ($holder)}. Остановите эту программу или запустите на другом порту: KALKAN_DEMO_PORT=$((port + 1)) $0" \
      "kalkan: $port порту бош эмес${holder:+ ($holder колдонот)}. Ошол программаны токтотуңуз же башка портто баштаңыз: KALKAN_DEMO_PORT=$((port + 1)) $0" >&2
  exit 1
fi

bash install/setup.sh
bin=$root/.venv/bin

# The configuration file, so that `kalkan-server enrollment-code` (and the rest) find this
# school without --state-dir.  An existing file naming another folder is left alone.
if [ "$(id -u)" = 0 ]; then config=/etc/kalkan/server.toml; else config=${XDG_CONFIG_HOME:-$HOME/.config}/kalkan/server.toml; fi
config=${KALKAN_SERVER_CONFIG:-$config}
if [ ! -f "$config" ] || grep -q "^# written by install/quickstart.sh" "$config"; then
  mkdir -p "$(dirname "$config")"
  printf '# written by install/quickstart.sh; kalkan-server reads it (policy_server/config_file.py)\nstate_dir = "%s"\nport = %s\n' \
    "$server_state" "$port" >"$config"
fi

"$bin/kalkan-server" migrate --state-dir "$server_state"
demo=$("$bin/kalkan-server" demo --state-dir "$server_state" --json)
field() { "$bin/python" -c "import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, d))" "$demo" "$1"; }

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -f "$state/quickstart.pid"; }
trap cleanup EXIT INT TERM

# Logs are appended, never emptied: a run's log survives the next run.
echo "--- quick start $(date -u +%FT%TZ), pid $$" >>"$state/server.log"
"$bin/kalkan-server" run --state-dir "$server_state" --port "$port" >>"$state/server.log" 2>&1 &
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
echo "--- quick start $(date -u +%FT%TZ), pid $$" >>"$state/agent.log"
"$bin/kalkan-agent" run --state-dir "$agent_state" --collectors "$collectors" --heartbeat 10 \
  >>"$state/agent.log" 2>&1 &
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
  Server state: $server_state   (in $config: kalkan-server finds it without --state-dir)
  Agent:        $agent_state  (kalkan-agent status --state-dir $agent_state)
  Category lists on the seat: ${lists:0:16}…  (kalkan-server lists update --source URL for the full UT1)
  Logs:         $state/server.log  $state/agent.log

  The agent is enrolled and reporting.  Ctrl-C stops the server and the agent.
TXT
"$bin/kalkan-agent" status --state-dir "$agent_state" || true
[ "${KALKAN_DEMO_ONESHOT:-}" = 1 ] && exit 0
wait
