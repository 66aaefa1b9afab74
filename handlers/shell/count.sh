#!/usr/bin/env bash
# count.sh: a handler in plain bash, run by `bester handle` in line mode:
#
#   [handlers.count]
#   command = ["bester", "handle", "count", "--", "bash", "{examples}/count.sh"]
#
# Each request arrives as one line of JSON on standard input; each answer is one line of JSON on
# standard output, in order: here the reply's data, {"count":N,"user":"…"}, N counting the
# requests this process answered. The user is read from the request's "from" (the broker writes
# compact JSON whose first "user" key is header.from.user; a real handler would use jq).
set -u
n=0
while IFS= read -r request; do
  n=$((n + 1))
  user=""
  if [[ $request =~ \"from\":\{\"user\":\"([A-Za-z0-9._-]*)\" ]]; then
    user=${BASH_REMATCH[1]}
  fi
  printf '{"count":%d,"user":"%s"}\n' "$n" "$user"
done
