#!/usr/bin/env bash
# Packs the example web app into a fresh store and shows what lanseed made:
# a publisher key, a signed release, a verified store. Everything goes under
# a temporary directory (printed at the end); nothing touches the network.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p lanseed
lanseed=target/debug/lanseed
work=$(mktemp -d -t lanseed-example.XXXXXX)

echo "== keygen: a publisher key pair"
$lanseed keygen --out "$work/publisher.key"

echo
echo "== pack: examples/hello-kiosk as com.example.hello 1.0.0"
$lanseed pack examples/hello-kiosk --app com.example.hello --version 1.0.0 \
  --key "$work/publisher.key" --store "$work/store"

echo
echo "== releases"
$lanseed releases --store "$work/store"

echo
echo "== store verify (signatures checked against the key's trust line)"
$lanseed store verify --store "$work/store" --trust "$work/publisher.key.pub"

echo
echo "Store, key and trust file are in $work"
