#!/usr/bin/env bash
# tests/deploy/check.sh - static checks of the deployment files and of every shell
# script and YAML file in the repository:
#   - shellcheck on every shell script (*.sh, and files with a sh/bash shebang);
#   - yamllint, strict, with tests/deploy/yamllint.yaml, on every *.yaml/*.yml;
#   - every FLUSHOUT_* name used in deploy/ is an option of the binary (from its own
#     --help) or, for FLUSHOUT_KAFKA_*, a property librdkafka knows (kcat -X list),
#     because the processor silently ignores environment variables it does not know;
#   - deploy/k8s renders with kustomize, when kubectl is installed.
# Files are the tracked and untracked-but-not-ignored ones, without node_modules and
# build directories.
#
#   tests/deploy/check.sh path/to/flushout-processor
set -euo pipefail
bin=${1:?usage: check.sh path/to/flushout-processor}
[[ $bin == */* && $bin != /* ]] && bin=$PWD/$bin # the checks run from the top
[[ -x $bin ]] || { echo "check.sh: $bin is not an executable" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
top=$(git -C "$here" rev-parse --show-toplevel) || { echo "check.sh: needs a git checkout" >&2; exit 1; }
cd "$top"
failures=0
fail() {
  echo "check.sh: $*" >&2
  failures=$((failures + 1))
}
for tool in shellcheck yamllint kcat; do
  command -v "$tool" >/dev/null || { echo "check.sh: $tool is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
done

files=()
while IFS= read -r -d '' f; do
  [[ -f $f ]] && files+=("$f") # --cached also lists files deleted from the work tree
done < <(git ls-files -z --cached --others --exclude-standard \
  | grep -zEv '(^|/)(node_modules|build[^/]*)/' | sort -zu)

# ---- shell scripts
scripts=()
shebang='^#!(/usr)?/bin/(env[[:space:]]+)?(ba)?sh([[:space:]]|$)'
for f in "${files[@]}"; do
  if [[ $f == *.sh ]]; then
    scripts+=("$f")
    continue
  fi
  first=
  IFS= read -r -n 128 first <"$f" 2>/dev/null || true # binary files have NULs
  [[ $first =~ $shebang ]] && scripts+=("$f")
done
if ((${#scripts[@]})) && ! shellcheck -x -- "${scripts[@]}"; then
  fail "shellcheck found problems (above)"
fi

# ---- YAML
yamls=()
for f in "${files[@]}"; do
  [[ $f == *.yaml || $f == *.yml ]] && yamls+=("$f")
done
if ((${#yamls[@]})) && ! yamllint -s -c "$here/yamllint.yaml" -- "${yamls[@]}"; then
  fail "yamllint found problems (above)"
fi

# ---- FLUSHOUT_* names
# Options from every command's --help ("  --name ..."), as their environment names.
# --config is the exception: it is read from the command line only.
declare -A known=()
mapfile -t commands < <("$bin" --help | awk '/^Commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 }')
((${#commands[@]} >= 5)) || { echo "check.sh: cannot read the commands from $bin --help" >&2; exit 1; }
for c in "${commands[@]}"; do
  while read -r opt; do
    [[ $opt == config ]] && continue
    name=${opt^^}
    known[FLUSHOUT_${name//-/_}]=1
  done < <("$bin" "$c" --help | sed -n 's/^  --\([a-z0-9-]*\).*/\1/p')
done
# librdkafka's properties (global and topic tables), as FLUSHOUT_KAFKA_* spells them.
declare -A props=()
while read -r p; do
  props[$p]=1
done < <(kcat -X list 2>&1 | sed -n 's/^\([a-z][a-z0-9._]*\) *|.*/\1/p')
((${#known[@]} >= 20 && ${#props[@]} >= 100)) \
  || { echo "check.sh: read only ${#known[@]} options and ${#props[@]} librdkafka properties" >&2; exit 1; }

# Prints "file:line: NAME: why" for each unknown name in the files; sets $uses.
# -DFLUSHOUT_* is a CMake option (the Dockerfile's build), not the environment.
unknown_names() {
  local file line name prop k ok
  uses=0
  while IFS=: read -r file line name; do
    [[ $name == -D* ]] && continue
    uses=$((uses + 1))
    if [[ $name == FLUSHOUT_KAFKA_* ]]; then
      prop=${name#FLUSHOUT_KAFKA_}
      prop=${prop,,}
      prop=${prop//_/.}
      # "FLUSHOUT_KAFKA_" alone is the prefix in prose (FLUSHOUT_KAFKA_<NAME>).
      [[ -z $prop || -n ${props[$prop]+x} ]] \
        || echo "$file:$line: $name: librdkafka has no property \"$prop\" (kcat -X list)"
    elif [[ $name == *_ ]]; then # a prefix in prose, e.g. FLUSHOUT_MAX_*
      ok=0
      for k in "${!known[@]}"; do [[ $k == "$name"* ]] && ok=1 && break; done
      ((ok)) || echo "$file:$line: $name: no option starts so"
    elif [[ -z ${known[$name]+x} ]]; then
      local opt=${name#FLUSHOUT_}
      opt=${opt,,}
      echo "$file:$line: $name: no command has an option --${opt//_/-} ($bin COMMAND --help)"
    fi
  done < <(grep -noE '(-D)?FLUSHOUT_[A-Z0-9_]+' -- "$@" /dev/null || true)
}

# Self-check first: made-up names must be reported and real ones must not, or the
# check below could pass without checking anything.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'FLUSHOUT_STATE_DIR=x\nFLUSHOUT_NOT_AN_OPTION=x\nFLUSHOUT_KAFKA_SASL_MECHANISM=x\nFLUSHOUT_KAFKA_NOT_A_PROPERTY=x\n' \
  >"$tmp/made-up.env"
unknown_names "$tmp/made-up.env" >"$tmp/self-check.out"
if [[ $(cut -d: -f2 "$tmp/self-check.out" | tr '\n' ' ') != "2 4 " ]]; then
  fail "self-check: expected exactly lines 2 and 4 of a test file reported as unknown, got:"
  cat "$tmp/self-check.out" >&2
fi

deploy_files=()
for f in "${files[@]}"; do
  [[ $f == deploy/* ]] && deploy_files+=("$f")
done
unknown_names "${deploy_files[@]}" >"$tmp/names.out"
if [[ -s $tmp/names.out ]]; then
  cat "$tmp/names.out" >&2
  fail "$(wc -l <"$tmp/names.out") unknown FLUSHOUT_* names in deploy/ (above)"
fi
name_uses=$uses

# ---- Kubernetes manifests render (needs kubectl; skipped without it)
k8s="skipped (no kubectl)"
if command -v kubectl >/dev/null; then
  if kubectl kustomize deploy/k8s >"$tmp/k8s.yaml"; then
    k8s="rendered ($(grep -c '^kind:' "$tmp/k8s.yaml") objects)"
  else
    k8s="failed"
    fail "kubectl kustomize deploy/k8s failed (above)"
  fi
fi

echo "deploy check: ${#scripts[@]} shell scripts shellchecked, ${#yamls[@]} YAML files linted," \
  "$name_uses FLUSHOUT_* uses in ${#deploy_files[@]} deploy/ files checked against" \
  "${#known[@]} options and ${#props[@]} librdkafka properties, deploy/k8s $k8s:" \
  "$failures failed"
((failures == 0))
