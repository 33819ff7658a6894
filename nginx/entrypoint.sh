#!/bin/bash
# ======================================================================
# wsgw-nginx: entrypoint of the websocket-gateway NGINX image
# ======================================================================
#
# Installed as /usr/local/bin/wsgw-nginx (the image's ENTRYPOINT).
#
#   wsgw-nginx start    (default CMD) validate the settings below, render the
#                       templates into /tmp/nginx/, `nginx -t`, then exec
#                       nginx in the foreground as this process (PID 1), so
#                       `docker stop` (SIGQUIT) reaches NGINX directly.
#   wsgw-nginx check    validate and render into a scratch directory, run
#                       `nginx -t` on it (with the TLS server; a placeholder
#                       certificate path when none is mounted) and exit.
#                       Used at build time; harmless in a running container.
#   wsgw-nginx reload   test and reload the RENDERED configuration as it is
#                       (manual edits of /tmp/nginx/* are kept, nothing is
#                       re-rendered). Same as:
#                         nginx -t -c /tmp/nginx/nginx.conf &&
#                         nginx -c /tmp/nginx/nginx.conf -s reload
#   wsgw-nginx help     print the settings table
#   anything else       executed as a command, e.g. `bash`
#
# Exit status: 0 ok, 1 NGINX rejected the configuration or could not run,
# 2 configuration error (a setting below has a bad value; one line on
# stderr: "configuration error: NAME='value' ...; allowed: ...").
#
# Settings come from environment variables; an unset or empty variable
# takes its default. Only these names are substituted into the templates,
# so NGINX's own variables ($http_upgrade, $remote_addr, ...) survive.

set -euo pipefail

# Templates baked into the image, and where the rendered configuration
# lives (the only writable place with a read-only root: /tmp as tmpfs).
readonly TEMPLATE_DIR=/etc/nginx/wsgw
readonly RUNTIME_DIR=/tmp/nginx
readonly RUNTIME_CONF=$RUNTIME_DIR/nginx.conf

# ----------------------------------------------------------------------
# The settings: NAME|default|check|meaning. The one list; README.md in
# nginx/ shows the same table.
# ----------------------------------------------------------------------
readonly SETTINGS=(
    "LISTEN_PORT|8080|int:1024:65535|port of ws:// (unprivileged); change it only on the host's network (docker-compose.host-network.yaml), where it is a port of the host"
    "LISTEN_ADDRESS|*|address|address of ws:// (and wss:// on 8443): * for all; on the host's network, the host address clients use (GATEWAY_BIND)"
    "STATUS_ADDRESS|*|address|address of the stub_status listener on 8081: * inside a container; 127.0.0.1 on the host's network, where * would be every address of the host"
    "UPSTREAM_HOST|server|host|DNS name (or IPv4) of the WebSocket server, re-resolved while running"
    "UPSTREAM_PORT|3000|int:1:65535|TCP port of the WebSocket server"
    "RESOLVER|127.0.0.11|resolvers|DNS server(s) for UPSTREAM_HOST, space-separated (Docker's embedded DNS)"
    "RESOLVER_VALID|5s|duration:1s:1h|how long a DNS answer is trusted; bounds the time to find a moved server"
    "SERVER_NAMES|*|server_names|Host headers served: * for any (whatever name or address clients use), or an allow-list, space-separated, whose others get UNKNOWN_HOST_STATUS"
    "UNKNOWN_HOST_STATUS|444|enum:444 421|answer for unknown Host headers: 444 closes silently, 421 Misdirected Request"
    "WS_RATE_LIMIT|100r/m|rate|WebSocket handshakes per client IP on average"
    "WS_RATE_BURST|20|int:1:100000|handshakes per client IP allowed at once above the rate (nodelay)"
    "WS_RATE_LIMIT_STATUS|429|status|answer to a handshake over the rate"
    "WS_CONN_LIMIT_PER_IP|100|int:1:65535|open WebSockets per client IP"
    "WS_CONN_LIMIT_STATUS|429|status|answer to a handshake over the per-IP cap"
    "PROXY_CONNECT_TIMEOUT|5s|duration:1s:75s|time to open the TCP connection to the server"
    "PROXY_READ_TIMEOUT|60s|duration:1s:24h|longest silence from the server on an open WebSocket (server pings every 20s)"
    "PROXY_SEND_TIMEOUT|60s|duration:1s:24h|longest stalled write to the server"
    "CLIENT_HEADER_TIMEOUT|10s|duration:1s:5m|time for a client to send its request header (slowloris)"
    "WORKER_PROCESSES|auto|workers|NGINX worker processes (auto = one per CPU core)"
    "WORKER_CONNECTIONS|32768|int:64:1048576|connections per worker; a WebSocket uses two"
    "WORKER_RLIMIT_NOFILE|65536|int:64:1048576|file descriptors per worker; >= WORKER_CONNECTIONS, <= the container's hard nofile limit"
    "WORKER_SHUTDOWN_TIMEOUT|10s|duration:1s:1h|after reload or stop, old workers close remaining WebSockets after this"
    "PROXY_BUFFER_SIZE|2k|enum:1k 2k 4k 8k 16k|each WebSocket's two tunnel buffers: smaller saves memory per idle connection, larger moves big messages faster"
    "SOCKET_BUFFER|16k|enum:8k 16k 32k 64k 128k 256k|kernel receive and send buffer of each client socket (rcvbuf/sndbuf on listen), fixed instead of autotuned to 32 MiB"
    "ERROR_LOG_LEVEL|notice|enum:debug info notice warn error crit alert emerg|error log level (stderr)"
    "TLS_CERT_FILE|/etc/nginx/tls/tls.crt|path|certificate chain (PEM); with TLS_KEY_FILE enables wss:// on 8443"
    "TLS_KEY_FILE|/etc/nginx/tls/tls.key|path|private key (PEM), readable by UID 101"
)

# The names above plus WSGW_RUNTIME_DIR (internal: where the rendered
# files are, so includes point at the rendered copies).
names=()
for setting in "${SETTINGS[@]}"; do
    names+=("${setting%%|*}")
done
# shellcheck disable=SC2016 # literal ${NAME} tokens for envsubst, not expansions
shell_format='${WSGW_RUNTIME_DIR}'
for name in "${names[@]}"; do
    shell_format+=" \${$name}"
done
readonly shell_format

log() {
    printf 'wsgw-nginx: %s\n' "$*" >&2
}

# One line, then exit 2. Control characters in the value are shown as '?'
# so the message stays on one line.
config_error() {
    local name=$1 value=$2 problem=$3 allowed=$4
    value=$(printf '%s' "$value" | tr -c '[:print:]' '?')
    printf "configuration error: %s='%s' %s; allowed: %s\n" \
        "$name" "$value" "$problem" "$allowed" >&2
    exit 2
}

# Duration in milliseconds: an integer with one unit (ms, s, m, h; none
# means seconds, as in NGINX). Fails on anything else.
duration_ms() {
    [[ $1 =~ ^([0-9]{1,9})(ms|s|m|h)?$ ]] || return 1
    local n=$((10#${BASH_REMATCH[1]}))
    case ${BASH_REMATCH[2]:-s} in
        ms) echo "$n" ;;
        s) echo $((n * 1000)) ;;
        m) echo $((n * 60000)) ;;
        h) echo $((n * 3600000)) ;;
    esac
}

check_value() {
    local name=$1 value=$2 check=$3
    local kind=${check%%:*} lo hi n token

    # Every value is rendered whole into NGINX's configuration, where a newline or a ';'
    # ends a directive: no setting may hold a control character (newline, tab, CR, ...),
    # whatever its kind. The kinds below allow no ';', and spaces only between list items.
    [[ $value != *[[:cntrl:]]* ]] ||
        config_error "$name" "$value" "contains a control character (newline, tab, ...)" \
            "printable characters only; separate list items with spaces"

    case $kind in
    int)
        IFS=: read -r _ lo hi <<<"$check"
        [[ $value =~ ^[0-9]{1,9}$ ]] ||
            config_error "$name" "$value" "is not an integer" "$lo..$hi"
        n=$((10#$value))
        ((n >= lo && n <= hi)) ||
            config_error "$name" "$value" "is out of range" "$lo..$hi"
        ;;
    duration)
        IFS=: read -r _ lo hi <<<"$check"
        local allowed="an integer with unit ms, s, m or h (e.g. 60s), from $lo to $hi"
        n=$(duration_ms "$value") ||
            config_error "$name" "$value" "is not a duration" "$allowed"
        ((n >= $(duration_ms "$lo") && n <= $(duration_ms "$hi"))) ||
            config_error "$name" "$value" "is out of range" "$allowed"
        ;;
    status)
        [[ $value =~ ^[45][0-9][0-9]$ ]] ||
            config_error "$name" "$value" "is not a 4xx/5xx status" "400..599 (e.g. 429)"
        ;;
    rate)
        local allowed="<N>r/s or <N>r/m with N from 1 to 100000 (e.g. 100r/m)"
        [[ $value =~ ^([0-9]{1,6})r/[sm]$ ]] ||
            config_error "$name" "$value" "is not a rate" "$allowed"
        n=$((10#${BASH_REMATCH[1]}))
        ((n >= 1 && n <= 100000)) ||
            config_error "$name" "$value" "is out of range" "$allowed"
        ;;
    enum)
        local options=${check#enum:}
        # One word: "444 421" is two choices, not one.
        [[ $value != *" "* && " $options " == *" $value "* ]] ||
            config_error "$name" "$value" "is not a valid choice" "${options// / | }"
        ;;
    workers)
        if [[ $value != auto ]]; then
            if ! [[ $value =~ ^[0-9]{1,4}$ ]] || ((10#$value < 1 || 10#$value > 1024)); then
                config_error "$name" "$value" "is not a worker count" "auto | 1..1024"
            fi
        fi
        ;;
    host)
        local label='[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
        [[ ${#value} -le 253 && $value =~ ^$label(\.$label)*\.?$ ]] ||
            config_error "$name" "$value" "is not a host name" \
                "a DNS name or IPv4 address (letters, digits, '-', '_', '.'; no port)"
        ;;
    resolvers)
        local ipv4='([0-9]{1,3}\.){3}[0-9]{1,3}' ipv6='\[[0-9A-Fa-f:.]+\]' port='(:[0-9]{1,5})?'
        [[ -n ${value// /} ]] ||
            config_error "$name" "$value" "is empty" "IP addresses"
        local -a tokens
        # read -a splits on spaces without glob expansion: "b?n" stays "b?n", never "bin".
        read -r -a tokens <<<"$value"
        for token in "${tokens[@]}"; do
            [[ $token =~ ^($ipv4|$ipv6)$port$ ]] ||
                config_error "$name" "$value" "is not a list of IP addresses" \
                    "space-separated IPv4 or [IPv6] addresses, optional :port (e.g. 127.0.0.11)"
        done
        ;;
    server_names)
        local pattern='^[][A-Za-z0-9_.*:-]{1,253}$'
        local -a tokens
        read -r -a tokens <<<"$value"
        for token in "${tokens[@]}"; do
            [[ $token =~ $pattern ]] ||
                config_error "$name" "$value" "is not a list of host names" \
                    "space-separated names, IP addresses or wildcards like *.example.com (no regex)"
        done
        ;;
    address)
        local ipv4='([0-9]{1,3}\.){3}[0-9]{1,3}' ipv6='\[[0-9A-Fa-f:.]+\]'
        [[ $value == '*' || $value =~ ^($ipv4|$ipv6)$ ]] ||
            config_error "$name" "$value" "is not a listen address" \
                "* (every address), an IPv4 address or an [IPv6] address (no port)"
        ;;
    path)
        [[ $value =~ ^/[A-Za-z0-9._/-]+$ ]] ||
            config_error "$name" "$value" "is not an absolute path" \
                "an absolute path of letters, digits, '.', '_', '-', '/'"
        ;;
    *)
        log "internal error: unknown check '$check' for $name"
        exit 1
        ;;
    esac
}

# Validate every setting, export it with its default applied, then the
# checks that involve two settings or the filesystem.
validate_settings() {
    local setting name default check rest value
    for setting in "${SETTINGS[@]}"; do
        IFS='|' read -r name default check rest <<<"$setting"
        value=${!name:-$default}
        check_value "$name" "$value" "$check"
        export "$name=$value"
    done

    ((10#$WORKER_RLIMIT_NOFILE >= 10#$WORKER_CONNECTIONS)) ||
        config_error WORKER_RLIMIT_NOFILE "$WORKER_RLIMIT_NOFILE" \
            "is below WORKER_CONNECTIONS=$WORKER_CONNECTIONS" \
            "$WORKER_CONNECTIONS..1048576 (each connection needs a descriptor)"

    # `*` serves any Host (NGINX's `~.`: any non-empty one; a request without Host still
    # gets the default server). In a list it would be no name at all: stop instead.
    if [[ $SERVER_NAMES == "*" ]]; then
        export SERVER_NAMES="~."
    elif [[ " $SERVER_NAMES " == *" * "* ]]; then
        config_error SERVER_NAMES "$SERVER_NAMES" "mixes * with names" \
            "* alone (any Host), or space-separated names without *"
    fi

    # TLS is on when both files exist, off when neither does; one without
    # the other is a mistake worth stopping for.
    TLS=off
    if [[ -e $TLS_CERT_FILE && -e $TLS_KEY_FILE ]]; then
        TLS=on
        for name in TLS_CERT_FILE TLS_KEY_FILE; do
            [[ -r ${!name} ]] ||
                config_error "$name" "${!name}" "is not readable by UID $(id -u)" \
                    "a file readable by the container user and no other (owner $(id -u) mode 0400, or group $(id -g) mode 0640)"
        done
    elif [[ -e $TLS_CERT_FILE ]]; then
        config_error TLS_KEY_FILE "$TLS_KEY_FILE" "does not exist but TLS_CERT_FILE does" \
            "both files (wss:// on 8443) or neither (ws:// only)"
    elif [[ -e $TLS_KEY_FILE ]]; then
        config_error TLS_CERT_FILE "$TLS_CERT_FILE" "does not exist but TLS_KEY_FILE does" \
            "both files (wss:// on 8443) or neither (ws:// only)"
    fi
}

# A non-root process cannot raise its hard descriptor limit: render the
# most it can get and say so once, instead of one setrlimit alert per worker.
fit_rlimit_to_container() {
    local hard
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && ((10#$WORKER_RLIMIT_NOFILE > hard)); then
        log "warning: WORKER_RLIMIT_NOFILE=$WORKER_RLIMIT_NOFILE exceeds the container's hard" \
            "nofile limit $hard; using $hard, so one worker holds at most ~$(((hard - 16) / 2))" \
            "WebSockets (raise it: docker run --ulimit nofile=$WORKER_RLIMIT_NOFILE:$WORKER_RLIMIT_NOFILE)"
        export WORKER_RLIMIT_NOFILE=$hard
    fi
}

render_file() {
    envsubst "$shell_format" <"$1" >"$2"
}

# Render the templates into $1 (conf.d/ gets the TLS server when $2 = on).
render() {
    local dest=$1 tls=$2 template
    export WSGW_RUNTIME_DIR=$dest

    rm -rf "$dest/nginx.conf" "$dest/conf.d" "$dest/snippets"
    mkdir -p "$dest/conf.d" "$dest/snippets"

    render_file "$TEMPLATE_DIR/nginx.conf" "$dest/nginx.conf"
    for template in "$TEMPLATE_DIR"/conf.d/*.conf; do
        render_file "$template" "$dest/conf.d/${template##*/}"
    done
    for template in "$TEMPLATE_DIR"/snippets/*.conf; do
        render_file "$template" "$dest/snippets/${template##*/}"
    done
    if [[ $tls == on ]]; then
        for template in "$TEMPLATE_DIR"/tls/*.conf; do
            render_file "$template" "$dest/conf.d/${template##*/}"
        done
    fi

    # A ${NAME} left over outside a comment is a template typo: fail
    # instead of letting NGINX read it as a variable.
    if grep -rnE '^[^#]*\$\{[A-Z][A-Z0-9_]*\}' "$dest/nginx.conf" "$dest/conf.d" "$dest/snippets" >&2; then
        log "internal error: placeholders above are not in the settings list"
        exit 1
    fi
}

make_runtime_dir() {
    mkdir -p "$RUNTIME_DIR" 2>/dev/null && [[ -w $RUNTIME_DIR ]] || {
        log "cannot write $RUNTIME_DIR as UID $(id -u): /tmp must be writable (e.g. --tmpfs /tmp with --read-only)"
        exit 1
    }
}

cmd_start() {
    validate_settings
    fit_rlimit_to_container
    make_runtime_dir
    render "$RUNTIME_DIR" "$TLS"
    if ! nginx -t -q -e stderr -c "$RUNTIME_CONF"; then
        log "nginx -t rejected $RUNTIME_CONF"
        exit 1
    fi
    log "config $RUNTIME_CONF: upstream $UPSTREAM_HOST:$UPSTREAM_PORT via $RESOLVER," \
        "ws on $LISTEN_PORT, wss on 8443 $([[ $TLS == on ]] && echo on || echo off);" \
        "reload with: wsgw-nginx reload"
    exec nginx -e stderr -c "$RUNTIME_CONF" -g 'daemon off;'
}

cmd_check() {
    validate_settings
    local scratch
    scratch=$(mktemp -d /tmp/wsgw-nginx-check.XXXXXX)
    # shellcheck disable=SC2064 # expand now: the path is local
    trap "rm -rf '$scratch'" EXIT
    if [[ $TLS == off ]]; then
        # No certificate mounted: test the TLS server anyway with paths
        # containing a variable, which NGINX loads lazily at handshake
        # time, never during `nginx -t`.
        export TLS_CERT_FILE="$scratch/placeholder-\$ssl_server_name.crt"
        export TLS_KEY_FILE="$scratch/placeholder-\$ssl_server_name.key"
    fi
    render "$scratch" on
    nginx -t -e stderr -c "$scratch/nginx.conf"
    log "check passed: settings valid, templates render, nginx -t ok" \
        "(TLS server tested with $([[ $TLS == on ]] && echo 'the mounted certificate' || echo 'a placeholder certificate path'))"
}

cmd_reload() {
    [[ -f $RUNTIME_CONF ]] || {
        log "no rendered configuration at $RUNTIME_CONF: is NGINX running in this container?"
        exit 1
    }
    nginx -t -q -e stderr -c "$RUNTIME_CONF"
    exec nginx -e stderr -c "$RUNTIME_CONF" -s reload
}

cmd_help() {
    local setting name default check meaning
    printf '%-24s %-24s %-40s %s\n' NAME DEFAULT CHECK MEANING
    for setting in "${SETTINGS[@]}"; do
        IFS='|' read -r name default check meaning <<<"$setting"
        printf '%-24s %-24s %-40s %s\n' "$name" "$default" "$check" "$meaning"
    done
}

case ${1:-start} in
start) cmd_start ;;
check) cmd_check ;;
reload) cmd_reload ;;
help | --help | -h) cmd_help ;;
*) exec "$@" ;;
esac
