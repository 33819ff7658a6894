#!/bin/sh
# Render the configuration into /tmp (the root filesystem is read-only) and exec
# Prometheus, which becomes PID 1. `check` only renders and runs `promtool check config`
# (the image build runs it, so a broken configuration or rule file fails the build).
set -eu
interval="${PROMETHEUS_SCRAPE_INTERVAL:-15s}"
case "$interval" in
  *[!0-9smh]* | "") echo "configuration error: PROMETHEUS_SCRAPE_INTERVAL='$interval'; allowed: a duration like 15s" >&2; exit 2 ;;
esac
# A scrape may take at most the interval (Prometheus refuses a longer timeout); 10s caps it.
timeout="$interval"
case "$interval" in
  *s) seconds="${interval%s}"; [ "$seconds" -gt 10 ] 2>/dev/null && timeout=10s ;;
  *) timeout=10s ;;
esac
mkdir -p /tmp/prometheus
sed -e "s/@SCRAPE_INTERVAL@/$interval/" -e "s/@SCRAPE_TIMEOUT@/$timeout/" \
  /etc/prometheus/wsgw/prometheus.yml > /tmp/prometheus/prometheus.yml
if [ "${1:-}" = check ]; then
  exec promtool check config /tmp/prometheus/prometheus.yml
fi
exec prometheus --config.file=/tmp/prometheus/prometheus.yml "$@"
