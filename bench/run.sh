#!/usr/bin/env bash
# keygate's gateway overhead benchmark (issue 7). One command, one run, same machine:
#
#   bench/run.sh            # BENCH_DURATION=15 BENCH_CONNECTIONS=32 BENCH_THREADS=2 BENCH_SKIP_BUILD=0
#
# Measures with wrk, each after a warm-up:
#   1. direct      GET /api/v3/time straight to the mock exchange
#   2. nginx       the same through nginx as a plain reverse proxy (keepalive upstream)
#      plain-proxy the same through a bare hyper reverse proxy (testing/mock-exchange's
#                  `plain-proxy`): keygate's HTTP stack doing none of keygate's work
#   3. keygate     the same through keygate's proxy route (public endpoint: auth, policy,
#                  audit event + api_calls row; not signed), on SQLite and on PostgreSQL
#   4. keygate-signed  GET /api/v3/account through keygate: auth, policy, decrypt, HMAC
#                  signing, forward, audit + api_calls, on SQLite and on PostgreSQL
#   5. openbao    (if .venv/bin/bao exists) a KV v2 read and a transit decrypt from
#                  `bao server -dev`: what a bot that fetches its key per call pays
#   6. *-c1       direct and keygate-signed again with ONE connection: the latency one bot
#                  sees without queueing (compare keygate-signed-*-c1 with direct-c1)
# and keygate's RSS (VmHWM) under load. Results: bench/results/<timestamp>.json and a
# Markdown table on stdout (paste into BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DUR=${BENCH_DURATION:-15}
CONN=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-2}
PG_ADMIN=${KEYGATE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}

need() { command -v "$1" >/dev/null 2>&1 || { echo "installing $2"; apt-get install -y "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx
need jq jq
source scripts/lib/services.sh
export KEYGATE_TEST_DATABASE_URL=$PG_ADMIN
kg_setup_postgres >/dev/null

if [[ "${BENCH_SKIP_BUILD:-}" == 1 ]]; then
    echo "==> using the release binaries already in target/release (BENCH_SKIP_BUILD=1)"
else
    echo "==> building release binaries"
    cargo build --release -q -p keygate-cli -p keygate-mock-exchange
fi
BIN=$ROOT/target/release

WORK=$(mktemp -d)
PIDS=()
PGDB="keygate_bench_$$"
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
    psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $PGDB" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

API_KEY=benchKeyvmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91
API_SECRET=benchSecretNhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqq
cat >"$WORK/keys.json" <<EOF
{"keys": [{"exchange": "binance", "api_key": "$API_KEY", "secret": "$API_SECRET"}]}
EOF
MOCK_PORT=19100; NGINX_PORT=19101; PLAIN_PORT=19105
# --keep-requests: the mock would otherwise hold every request of the run in memory
"$BIN/mock-exchange" --port $MOCK_PORT --config "$WORK/keys.json" --rate-limit-used 1 --keep-requests 1000 2>"$WORK/mock.log" &
PIDS+=($!)
"$BIN/plain-proxy" --port $PLAIN_PORT --upstream "http://127.0.0.1:$MOCK_PORT" >/dev/null 2>"$WORK/plain.log" &
PIDS+=($!)

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx.conf"

wait_http() { for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "not up: $1" >&2; return 1; }
wait_http "http://127.0.0.1:$MOCK_PORT/api/v3/time"
wait_http "http://127.0.0.1:$NGINX_PORT/api/v3/time"
wait_http "http://127.0.0.1:$PLAIN_PORT/api/v3/time"

# wrk_run NAME URL [TOKEN] -> appends a JSON object to $WORK/results.jsonl
wrk_run() {
    local name=$1 url=$2 token=${3:-} pid=${4:-} extra=${5:-} script=${6:-}
    local hdr=()
    [[ -n $token ]] && hdr=(-H "Authorization: Bearer $token")
    [[ -n $extra ]] && hdr+=(-H "$extra")
    [[ -n $script ]] && hdr+=(-s "$script")
    wrk -t"$THREADS" -c"$CONN" -d3s "${hdr[@]}" "$url" >/dev/null 2>&1 # warm-up
    local load; load=$(cut -d' ' -f1 /proc/loadavg)
    local out; out=$(wrk -t"$THREADS" -c"$CONN" -d"${DUR}s" --latency "${hdr[@]}" "$url")
    local rps p50 p99 non2xx rss="null"
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out"); non2xx=${non2xx:-0}
    if [[ -n $pid ]]; then rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status"); fi
    to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/,"",v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v+0 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000 } else print v }'; }
    jq -nc --arg n "$name" --argjson rps "$rps" --argjson p50 "$(to_ms "$p50")" --argjson p99 "$(to_ms "$p99")" \
        --argjson bad "$non2xx" --argjson rss "$rss" --arg load "$load" \
        '{name:$n, rps:$rps, p50_ms:$p50, p99_ms:$p99, non_2xx:$bad, rss_kb:$rss, load_before:$load}' >>"$WORK/results.jsonl"
    echo "   $name: $rps req/s, p50 $p50, p99 $p99, non-2xx $non2xx, load before $load"
    # what the refusals were: one more call, and keygate's warnings so far
    if [[ $non2xx != 0 && -n $token ]]; then
        echo "   a call now: $(curl -s -w ' (%{http_code})' -H "Authorization: Bearer $token" "$url" 2>/dev/null | tail -c 300)"
        for f in "$WORK"/keygate-*.log; do [[ -f $f ]] && grep -v "new master key" "$f" | tail -3; done
    fi
}

# start_keygate NAME PORT DATABASE_URL -> sets KG_PID, KG_TOKEN, KG_CONN
start_keygate() {
    local name=$1 port=$2 db=$3
    local dir=$WORK/kg-$name
    export KEYGATE_DATA_DIR=$dir KEYGATE_LISTEN=127.0.0.1:$port KEYGATE_DATABASE_URL=$db \
        KEYGATE_ALLOWED_UPSTREAMS=127.0.0.1 KEYGATE_LOG=warn KEYGATE_JOBS_ENABLED=false
    "$BIN/keygate" serve 2>"$WORK/keygate-$name.log" &
    KG_PID=$!
    PIDS+=($KG_PID)
    wait_http "http://127.0.0.1:$port/readyz"
    local user; user=$(python3 -c 'import uuid; print(uuid.uuid4())')
    KG_TOKEN=$("$BIN/keygate" token --user "$user" --ttl 2h | tail -1)
    local base=http://127.0.0.1:$port
    local cred; cred=$(curl -fsS -H "Authorization: Bearer $KG_TOKEN" -H 'content-type: application/json' \
        -d "{\"exchange\":\"binance\",\"label\":\"bench\",\"api_key\":\"$API_KEY\",\"api_secret\":\"$API_SECRET\",\"permissions\":[\"read\",\"trade\"]}" \
        "$base/v1/credentials" | jq -r .id)
    KG_CONN=$(curl -fsS -H "Authorization: Bearer $KG_TOKEN" -H 'content-type: application/json' \
        -d "{\"name\":\"bench\",\"exchange\":\"binance\",\"credential_id\":\"$cred\",\"base_url\":\"http://127.0.0.1:$MOCK_PORT\",\"timeout_ms\":5000}" \
        "$base/v1/connections" | jq -r .id)
    unset KEYGATE_DATA_DIR KEYGATE_LISTEN KEYGATE_DATABASE_URL
}

# OpenBao dev server (from the test venv): what a bot pays to fetch its key per call.
kg_setup_python >/dev/null
BAO=$ROOT/.venv/bin/bao
BAO_PORT=19104
if [[ -x $BAO ]]; then
    "$BAO" server -dev -dev-root-token-id=bench-root -dev-listen-address=127.0.0.1:$BAO_PORT >"$WORK/bao.log" 2>&1 &
    PIDS+=($!)
    export VAULT_ADDR=http://127.0.0.1:$BAO_PORT BAO_ADDR=http://127.0.0.1:$BAO_PORT VAULT_TOKEN=bench-root BAO_TOKEN=bench-root
    for _ in $(seq 1 100); do curl -fsS -o /dev/null "$BAO_ADDR/v1/sys/health" 2>/dev/null && break; sleep 0.1; done
    "$BAO" kv put -mount=secret bench api_key=$API_KEY api_secret=$API_SECRET >/dev/null
    "$BAO" secrets enable transit >/dev/null
    "$BAO" write -f transit/keys/bench >/dev/null
    BAO_CT=$("$BAO" write -field=ciphertext transit/encrypt/bench plaintext="$(printf %s "$API_SECRET" | base64 -w0)")
    printf 'wrk.method = "POST"\nwrk.body = "{\\"ciphertext\\":\\"%s\\"}"\nwrk.headers["Content-Type"] = "application/json"\n' "$BAO_CT" >"$WORK/decrypt.lua"
fi

echo "==> machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs)"
echo "==> wrk -t$THREADS -c$CONN -d${DUR}s"
wrk_run direct "http://127.0.0.1:$MOCK_PORT/api/v3/time"
# one connection: the latency a single bot sees, without queueing behind 31 others
one_conn() { local c=$CONN t=$THREADS; CONN=1 THREADS=1; wrk_run "$@"; CONN=$c THREADS=$t; }
one_conn direct-c1 "http://127.0.0.1:$MOCK_PORT/api/v3/time"
wrk_run nginx "http://127.0.0.1:$NGINX_PORT/api/v3/time"
wrk_run plain-proxy "http://127.0.0.1:$PLAIN_PORT/api/v3/time"
if [[ -x $BAO ]]; then
    BAO_HDR="X-Vault-Token: bench-root"
    wrk_run openbao-kv-read "$BAO_ADDR/v1/secret/data/bench" "" "" "$BAO_HDR"
    wrk_run openbao-transit-decrypt "$BAO_ADDR/v1/transit/decrypt/bench" "" "" "$BAO_HDR" "$WORK/decrypt.lua"
fi

start_keygate sqlite 19102 "sqlite://$WORK/kg-sqlite/keygate.db"
wrk_run keygate-sqlite "http://127.0.0.1:19102/v1/connections/$KG_CONN/proxy/api/v3/time" "$KG_TOKEN" "$KG_PID"
wrk_run keygate-signed-sqlite "http://127.0.0.1:19102/v1/connections/$KG_CONN/proxy/api/v3/account" "$KG_TOKEN" "$KG_PID"
one_conn keygate-signed-sqlite-c1 "http://127.0.0.1:19102/v1/connections/$KG_CONN/proxy/api/v3/account" "$KG_TOKEN" "$KG_PID"
kill "$KG_PID"

psql "$PG_ADMIN" -qc "CREATE DATABASE $PGDB" >/dev/null
start_keygate pg 19103 "${PG_ADMIN%/*}/$PGDB"
wrk_run keygate-pg "http://127.0.0.1:19103/v1/connections/$KG_CONN/proxy/api/v3/time" "$KG_TOKEN" "$KG_PID"
wrk_run keygate-signed-pg "http://127.0.0.1:19103/v1/connections/$KG_CONN/proxy/api/v3/account" "$KG_TOKEN" "$KG_PID"
one_conn keygate-signed-pg-c1 "http://127.0.0.1:19103/v1/connections/$KG_CONN/proxy/api/v3/account" "$KG_TOKEN" "$KG_PID"
kill "$KG_PID"

mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
# the kernel's writeback settings: PostgreSQL's commit waits on its WAL fsync, which queues
# behind the writeback of dirty pages (BENCHMARKS.md, session 11)
dirty=$(for k in dirty_background_ratio dirty_background_bytes dirty_expire_centisecs; do printf '%s=%s ' "$k" "$(cat /proc/sys/vm/$k 2>/dev/null)"; done)
jq -s --arg cpu "$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs)" --arg cores "$(nproc)" \
    --arg cmd "wrk -t$THREADS -c$CONN -d${DUR}s --latency" --arg dirty "${dirty% }" \
    '{machine: {cpu: $cpu, cores: ($cores|tonumber), vm: $dirty}, command: $cmd, results: .}' \
    "$WORK/results.jsonl" >"bench/results/$stamp.json"
echo "==> bench/results/$stamp.json"

jq -r '
  (.results | map({(.name): .}) | add) as $r
  | "| run | req/s | p50 ms | p99 ms | vs nginx req/s | added p50 ms | added p99 ms | RSS MB | non-2xx |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    (.results[] | "| \(.name) | \(.rps|floor) | \(.p50_ms) | \(.p99_ms) | \((.rps / $r.nginx.rps * 100 | floor) / 100) | \(((.p50_ms - $r.direct.p50_ms) * 1000 | floor) / 1000) | \(((.p99_ms - $r.direct.p99_ms) * 1000 | floor) / 1000) | \(if .rss_kb then (.rss_kb / 1024 | floor) else "-" end) | \(.non_2xx) |")
' "bench/results/$stamp.json"
