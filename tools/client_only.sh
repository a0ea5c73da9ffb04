#!/usr/bin/env bash
# Checks that each library named holds the client side of hnsecure only: no code of the
# gateway, HNGard or the sandbox (their source paths and log targets, which any code of
# theirs carries in its panic locations and log lines), and neither SQLite nor the
# PostgreSQL client. Works on stripped libraries, static libraries and DLLs alike: it reads
# the files' strings, not their symbols.
#
#   tools/client_only.sh LIBRARY...
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: tools/client_only.sh LIBRARY..." >&2; exit 2; }
# What a library with the `server` feature holds and the client side never does.
pattern='src/gate/|src/gard/|src/sandbox\.rs|hnapi::gate|hnapi::gard|hnapi::sandbox|SQLite format 3|sqlite3_prepare|postgres-protocol'
status=0
for lib in "$@"; do
  [ -s "$lib" ] || { echo "client_only: no library at $lib" >&2; exit 1; }
  found=$(LC_ALL=C grep -aoE "$pattern" "$lib" | sort | uniq -c | sort -rn | head -5 || true)
  if [ -n "$found" ]; then
    echo "FAILED: $lib holds server parts (the server feature was on?):" >&2
    echo "$found" >&2
    status=1
  else
    echo "client side only: $lib ($(wc -c <"$lib") bytes)"
  fi
done
exit "$status"
