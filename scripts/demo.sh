#!/usr/bin/env bash
# The main job on the embedded default: set up, init a catalog in ./.loradex (SQLite + local
# blobs), import the benchmark zoo, list it, show one adapter and export it back to PEFT format.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export LORADEX_HOME=${LORADEX_HOME:-$PWD/.loradex}
ZOO=${ZOO:-../shared/zoo}
L=.venv/bin/loradex
$L init
$L import-zoo "$ZOO"
$L ls
$L show capital_of
rm -rf "$LORADEX_HOME/export/capital_of"
$L export capital_of "$LORADEX_HOME/export/capital_of"
