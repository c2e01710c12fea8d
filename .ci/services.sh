#!/usr/bin/env bash
# Services the full test run needs, installed and started from nothing (CI starts on a bare
# machine): a single-node Slurm with munge (tests marked `slurm`), and Debian's chromium with its
# driver (tests marked `browser`, and PNG export of figures). Idempotent; runs as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v slurmctld >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
"$here/slurm-setup.sh"
