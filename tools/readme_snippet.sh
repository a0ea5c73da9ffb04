#!/usr/bin/env bash
# Prints the first fenced code block of LANG under the README heading HEADING (up to the
# next heading), so that the tests can compile the README's snippets as written.
#
#   tools/readme_snippet.sh README HEADING LANG      e.g.  README.md '### Java (JNA)' java
#
# Exits 1, saying so, when there is no such block.
set -euo pipefail
readme=${1:?usage: tools/readme_snippet.sh README HEADING LANG}
heading=${2:?usage: tools/readme_snippet.sh README HEADING LANG}
lang=${3:?usage: tools/readme_snippet.sh README HEADING LANG}
snippet=$(awk -v heading="$heading" -v fence="\`\`\`$lang" '
  $0 == heading { under = 1; next }
  under && !inside && /^#/ { exit }
  under && !inside && $0 == fence { inside = 1; next }
  inside && $0 == "```" { exit }
  inside { print }
' "$readme")
if [ -z "$snippet" ]; then
  echo "no \`\`\`$lang block under the heading \"$heading\" of $readme" >&2
  exit 1
fi
printf '%s\n' "$snippet"
