#!/usr/bin/env bash
# Installs the pip packages named on the command line (NAME==VERSION) when python3 cannot import them at
# that version; safe to run again.
set -euo pipefail
missing=()
for spec in "$@"; do
    name=${spec%%==*}; version=${spec#*==}
    have=$(python3 -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
    [ "$have" = "$version" ] || missing+=("$spec")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing (pip): ${missing[*]}"
python3 -m pip install -q "${missing[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "${missing[@]}"
