#!/usr/bin/env bash
# deploy/install-deps.sh - installs every Debian package and npm dependency that the
# build, the tests and the run need. Idempotent: re-running is cheap when all is there.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

packages=(
  build-essential cmake pkg-config git
  librdkafka-dev libmsgpack-dev librocksdb-dev libjansson-dev
  libxxhash-dev uthash-dev libmicrohttpd-dev libjemalloc-dev liblua5.4-dev libssl-dev
  libwebsockets-dev libjwt-dev
  libcriterion-dev
  clang libclang-rt-14-dev clang-format
  kcat bc shellcheck yamllint
  postgresql
  nodejs npm
  chromium
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done

# node and npm may come from outside Debian (a newer install on PATH); accept those.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  filtered=()
  for p in "${missing[@]}"; do
    [[ $p == nodejs || $p == npm ]] || filtered+=("$p")
  done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi

if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages: every folder with a package-lock.json gets `npm ci`, unless its
# node_modules was installed from this very lock file (we stamp it with the lock's hash).
while IFS= read -r lock; do
  dir=$(dirname "$lock")
  stamp="$dir/node_modules/.installed-lock.sha256"
  want=$(sha256sum "$lock" | cut -d' ' -f1)
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "install-deps: npm ci in ${dir#"$top"/}" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
done < <(find "$top" -name package-lock.json -not -path '*/node_modules/*')
