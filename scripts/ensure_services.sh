#!/usr/bin/env bash
# Make sure the services the app (or the test suite) needs answer; start them when they are
# installed but down. Fails loudly, never silently: a missing service stops the run.
#   scripts/ensure_services.sh redis [postgres]
set -uo pipefail

redis_host=127.0.0.1 redis_port=6379
if [[ "${REDIS_URL:-}" =~ ^redis://([^:/@]+):([0-9]+) ]]; then
  redis_host=${BASH_REMATCH[1]} redis_port=${BASH_REMATCH[2]}
fi

redis_ok() { python3 - "$redis_host" "$redis_port" <<'PY'
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
    s.sendall(b"PING\r\n"); ok = s.recv(16).startswith(b"+PONG"); s.close()
except OSError:
    ok = False
sys.exit(0 if ok else 1)
PY
}

for service in "$@"; do
  case "$service" in
    redis)
      if ! redis_ok; then
        if ! command -v redis-server >/dev/null; then
          if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq >/dev/null && apt-get install -y -qq redis-server >/dev/null
          else
            echo "services: Redis is not running at $redis_host:$redis_port and redis-server is not installed: apt-get install redis-server, or set REDIS_URL" >&2
            exit 1
          fi
        fi
        echo "services: starting redis-server on $redis_host:$redis_port"
        mkdir -p var/redis
        redis-server --daemonize yes --bind "$redis_host" --port "$redis_port" --save "" \
          --appendonly no --dir "$PWD/var/redis" --logfile "$PWD/var/redis/redis.log"
        for _ in $(seq 50); do redis_ok && break; sleep 0.2; done
        redis_ok || { echo "services: Redis did not start (see var/redis/redis.log)" >&2; exit 1; }
      fi ;;
    postgres)
      if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        if command -v pg_ctlcluster >/dev/null; then
          echo "services: starting PostgreSQL"
          pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
          for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
        fi
        pg_isready -q -h 127.0.0.1 -p 5432 || {
          echo "services: PostgreSQL is not answering on 127.0.0.1:5432: install and start it (apt-get install postgresql), or set TEST_DATABASE_URL" >&2; exit 1; }
      fi ;;
    *) echo "services: unknown service $service" >&2; exit 2 ;;
  esac
done
