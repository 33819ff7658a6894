#!/usr/bin/env bash
# Compose v2 (`docker compose`), from Debian trixie's docker-compose package, when only
# Compose v1 (or none) is installed. That package depends only on libc6 >= 2.34, so it
# installs on bookworm; a private apt configuration keeps trixie out of the system sources.
set -euo pipefail

if docker compose version >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Compose v2 is missing: install the docker-compose-plugin (or run this as root)" >&2
  exit 1
fi
echo "installing Compose v2 from Debian trixie ..."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
cat >"$work/trixie.sources" <<SOURCES
Types: deb
URIs: ${DEBIAN_MIRROR:-http://deb.debian.org/debian}
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
apt_private=(-o "Dir::Etc::sourcelist=$work/trixie.sources" -o Dir::Etc::sourceparts=-
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
             -o APT::Sandbox::User=root)
apt-get "${apt_private[@]}" update -qq
(cd "$work" && apt-get "${apt_private[@]}" download docker-compose)
dpkg -i "$work"/docker-compose_*.deb >/dev/null
docker compose version
