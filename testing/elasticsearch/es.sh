#!/usr/bin/env bash
# es.sh up|down|status — the test Elasticsearch node behind `make es-up` and
# `make es-down`. One genuine Elasticsearch 8.x node from Elastic's jars on
# Maven Central, on 127.0.0.1 (docs/elasticsearch-testing.md).
#
# Environment: ES_HOME (default /tmp/tillwatch-es: data, logs, pid file),
# ES_PORT (default 9200), ES_HEAP (default 512m), ES_WAIT (seconds to wait for
# health, default 180).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
home="${ES_HOME:-/tmp/tillwatch-es}"
port="${ES_PORT:-9200}"
heap="${ES_HEAP:-512m}"
wait_s="${ES_WAIT:-180}"
pidfile="$home/es.pid"
url="http://127.0.0.1:$port"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

healthy() {
  curl -fsS -m 3 "$url/_cluster/health?wait_for_status=yellow&timeout=2s" 2>/dev/null |
    grep -qE '"status":"(green|yellow)"'
}

build() {
  # Maven is quick when nothing changed; -q keeps CI logs short.
  mkdir -p "$here/target"
  (cd "$here" && mvn -q -B -Dstyle.color=never package -DskipTests >"$here/target/mvn.log" 2>&1) ||
    { tail -n 30 "$here/target/mvn.log"; echo "es-up: building the launcher failed (mvn package in $here; log in target/mvn.log)"; exit 1; }
}

up() {
  if running && healthy; then echo "es-up: already running at $url (pid $(cat "$pidfile"))"; return; fi
  if running; then down; fi
  if curl -fsS -m 2 "$url" >/dev/null 2>&1 || curl -sS -m 2 -o /dev/null "$url" 2>/dev/null; then
    echo "es-up: something else already listens on $url; stop it or set ES_PORT"; exit 1
  fi
  command -v java >/dev/null || { echo "es-up: missing java 17+: apt-get install -y openjdk-17-jdk-headless"; exit 1; }
  command -v mvn >/dev/null || { echo "es-up: missing maven: apt-get install -y maven"; exit 1; }
  build
  rm -rf "$home" && mkdir -p "$home"
  local run=() cp="$here/target/classes:$here/target/lib/*"
  if [[ "$(id -u)" == 0 ]]; then
    # Elasticsearch refuses to run as root; it runs as nobody (65534), which
    # must read the jars: a checkout under /root (mode 700) is out of its
    # reach, so the classpath is copied into the node's own home.
    cp -r "$here/target/classes" "$here/target/lib" "$home/"
    chown -R 65534:65534 "$home"
    cp="$home/classes:$home/lib/*"
    run=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  fi
  local start=$SECONDS
  nohup "${run[@]}" java -Xms"$heap" -Xmx"$heap" -XX:+UseSerialGC -Dtests.security.manager=false \
    -Djava.io.tmpdir="$home" -cp "$cp" \
    io.tillwatch.esnode.Main "$home" "$port" >"$home/node.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  while ((SECONDS - start < wait_s)); do
    if ! running; then
      echo "es-up: the node exited during start; last log lines:"; tail -n 20 "$home/node.log"; exit 1
    fi
    if healthy; then echo "es-up: Elasticsearch $(node_version) at $url after $((SECONDS - start))s (pid $(cat "$pidfile"), home $home)"; return; fi
    sleep 1
  done
  echo "es-up: not healthy after ${wait_s}s; last log lines:"; tail -n 20 "$home/node.log"; down; exit 1
}

node_version() {
  curl -fsS -m 3 "$url/_nodes/_local?filter_path=nodes.*.version" 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1
}

down() {
  if ! running; then echo "es-down: not running"; rm -rf "$home"; return; fi
  local pid; pid="$(cat "$pidfile")"
  kill "$pid"
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then echo "es-down: pid $pid ignored SIGTERM for 30s; killing"; kill -9 "$pid"; fi
  rm -rf "$home"
  echo "es-down: stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if running && healthy; then echo "up at $url"; else echo "down"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status"; exit 2 ;;
esac
