#!/usr/bin/env bash
# System parts some tests need, installed idempotently (both need root; `make test` runs this):
# Debian's Chromium for the browser tests of the web page, and Citus + pgvector built into
# Debian's PostgreSQL 15 (../shared/vendor/citus) for the cluster tests. Without root, say what
# is missing and go on: those tests then fail (Chromium) or skip (Citus) with the same advice.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SOUNDSCAPE_SHARED:-../shared}
if [ "$(id -u)" != 0 ]; then
    command -v chromium >/dev/null 2>&1 || echo "note: run as root once (or apt-get install chromium) for the browser tests" >&2
    exit 0
fi
if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
if [ -f "$SHARED/vendor/citus/build.sh" ]; then
    bash "$SHARED/vendor/citus/build.sh"
fi
