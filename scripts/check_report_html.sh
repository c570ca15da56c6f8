#!/usr/bin/env bash
# Render report.html for a results folder and load it in headless Chromium: the page must load,
# show its claims summary, and give a screenshot (to look at).
#
#   scripts/check_report_html.sh [ROOT] [SCREENSHOT]    # defaults: results/reference, /tmp/report_html_check.png
#
# Needs chromium (Debian: apt-get install chromium); exits 3 when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-results/reference}
shot=${2:-/tmp/report_html_check.png}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "check_report_html: no chromium found; install it (apt-get install chromium)" >&2
  exit 3
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
page="$work/report.html"
python -m sinks_jax.report_html "$root" --out "$page" --embed
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --user-data-dir="$work/profile")
dom=$(timeout 120 "$browser" "${flags[@]}" --dump-dom "file://$page" 2>/dev/null)
grep -q 'class="summary"' <<<"$dom" || { echo "check_report_html: page did not load" >&2; exit 1; }
summary=$(grep -o '<p class="summary">[^<]*' <<<"$dom" | sed 's/.*>//')
images=$(grep -o '<img ' <<<"$dom" | wc -l)
timeout 120 "$browser" "${flags[@]}" --screenshot="$shot" --window-size=1400,2000 "file://$page" \
  >/dev/null 2>&1
[ -s "$shot" ] || { echo "check_report_html: no screenshot written" >&2; exit 1; }
echo "check_report_html: $root loaded in $($browser --version 2>/dev/null | head -1)"
echo "  summary: $summary; $images figure(s); screenshot: $shot"
