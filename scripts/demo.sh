#!/usr/bin/env bash
# The main job on the embedded default: set up, init a catalog in ./.loradex (SQLite + local
# blobs), import the benchmark zoo, list it, search it in plain words, merge two zoo adapters
# (exact svd re-rank), show the
# merge with its lineage and export it back to a PEFT directory.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export LORADEX_HOME=${LORADEX_HOME:-$PWD/.loradex}
ZOO=${ZOO:-../shared/zoo}
L=.venv/bin/loradex
$L init
$L import-zoo "$ZOO"
$L ls
$L search "translate a colour name to French" --k 3
$L merge capital_of french_color --method svd --rank 8 --name demo-merge
$L show demo-merge
rm -rf "$LORADEX_HOME/export/demo-merge"
$L export demo-merge "$LORADEX_HOME/export/demo-merge"
