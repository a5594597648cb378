#!/usr/bin/env bash
# Install the independent C2PA implementation the interop tests run (from npm only: pure TypeScript, no
# binary downloads, install scripts off). The version is pinned in package.json and package-lock.json.
# (npm ci is not used: npm 11 reports this lock "out of sync" over cbor-extract's optional platform builds.)
set -euo pipefail
cd "$(dirname "$0")"
if [ -f node_modules/@trustnxt/c2pa-ts/package.json ]; then exit 0; fi
npm install --no-audit --no-fund --ignore-scripts --loglevel=error
test -f node_modules/@trustnxt/c2pa-ts/package.json
