#!/usr/bin/env bash
# deploy/install-deps.sh - installs every Debian package and npm dependency that the
# build, the tests and the run need. Idempotent: re-running is cheap when all is there.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

packages=(
  build-essential cmake pkg-config git
  librdkafka-dev libmsgpack-dev librocksdb-dev libjansson-dev
  libxxhash-dev uthash-dev
  libcriterion-dev
  clang libclang-rt-14-dev clang-format
  nodejs npm
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

# npm packages: every folder with a package-lock.json gets `npm ci` unless its
# node_modules already matches the lock.
while IFS= read -r lock; do
  dir=$(dirname "$lock")
  stamp="$dir/node_modules/.package-lock.json"
  if [[ ! -f $stamp ]] || ! cmp -s <(node -e 'const l=require(process.argv[1]);console.log(JSON.stringify(Object.keys(l.packages||{}).sort()))' "$lock") \
       <(node -e 'const l=require(process.argv[1]);console.log(JSON.stringify(Object.keys(l.packages||{}).map(k=>k).concat([""]).sort()))' "$stamp"); then
    echo "install-deps: npm ci in ${dir#$top/}" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done < <(find "$top" -name package-lock.json -not -path '*/node_modules/*')
