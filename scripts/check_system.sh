#!/usr/bin/env bash
# System prerequisites for the app: Java 17+ (Spark) and, with --browser, Chromium (page tests).
# Missing pieces are installed with apt-get when running as root on Debian; otherwise one line
# says what to install.
set -euo pipefail

as_root_apt() {  # as_root_apt PACKAGE... : install or print the one-line fix
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing $* with apt-get"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup: missing $*: run 'sudo apt-get install $*' (or your system's equivalent)" >&2
    return 1
  fi
}

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ]; then
  as_root_apt openjdk-17-jre-headless
fi

if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
  as_root_apt chromium fonts-dejavu-core
fi
exit 0
