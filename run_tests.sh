#!/usr/bin/env bash
# Everything the test suite needs on a fresh machine, then the tests (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")"
# Fashion-MNIST comes from Debian's package (nothing is downloaded at run time).
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${CAPTUM_CD_FASHION_MNIST:-}" ]; then
  sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist
fi
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[test]'
.venv/bin/python -m pytest "$@"
