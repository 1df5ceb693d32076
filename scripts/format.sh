#!/usr/bin/env bash
# Formats the Swift sources with swift-format and the repository's .swift-format
# (4-space indent, 140 columns).
#
#   scripts/format.sh                 format Package.swift, Sources/ and Tests/ in place
#   scripts/format.sh PATH…           format only these files or folders
#   scripts/format.sh --check [PATH…] change nothing; print what formatting would change
#                                     and exit 1 if anything would
#
# SWIFT_FORMAT names the binary (default: swift-format on PATH, else /opt/swift/usr/bin/swift-format).
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
if [[ "${1:-}" == "--check" ]]; then
    check=1
    shift
fi
paths=("$@")
[[ ${#paths[@]} -gt 0 ]] || paths=(Package.swift Sources Tests)

tool="${SWIFT_FORMAT:-$(command -v swift-format || echo /opt/swift/usr/bin/swift-format)}"
[[ -x "$tool" ]] || { echo "format.sh: swift-format not found — install it or set SWIFT_FORMAT" >&2; exit 2; }

files=()
while IFS= read -r -d '' file; do files+=("$file"); done < <(find "${paths[@]}" -name '*.swift' -type f -print0 | sort -z)

if [[ $check -eq 0 ]]; then
    "$tool" format --configuration .swift-format --parallel --in-place "${files[@]}"
    exit 0
fi

# The check compares each file with its formatted form, so it flags exactly what `format`
# would change (swift-format's `lint` also reports naming rules that `format` never applies).
unformatted=0
for file in "${files[@]}"; do
    if ! "$tool" format --configuration .swift-format "$file" | diff -u --label "$file" --label "$file (formatted)" "$file" -; then
        unformatted=$((unformatted + 1))
    fi
done
if [[ $unformatted -gt 0 ]]; then
    echo "format.sh: $unformatted of ${#files[@]} files are not formatted — run scripts/format.sh ${paths[*]}" >&2
    exit 1
fi
echo "format.sh: ${#files[@]} files formatted"
