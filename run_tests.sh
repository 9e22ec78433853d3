#!/usr/bin/env bash
# Everything the test suite needs on a fresh machine, then the tests (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")"
# Debian's packages: Fashion-MNIST (nothing is downloaded at run time) and chromium, the
# headless browser that checks the documentation site (tests/test_docs.py).
packages=""
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${CAPTUM_CD_FASHION_MNIST:-}" ]; then packages="dataset-fashion-mnist"; fi
if ! command -v chromium >/dev/null; then packages="$packages chromium"; fi
if [ -n "$packages" ]; then
  sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq $packages
fi
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[test,docs,notebooks]'
.venv/bin/python -m pytest "$@"
