#!/usr/bin/env bash
# The documentation site, with the tutorials executed in their quick mode:
# docs/_build/html/index.html (arguments go to sphinx-build, e.g. -D nb_execution_mode=off).
set -euo pipefail
cd "$(dirname "$0")"
# Two tutorials read Fashion-MNIST from Debian's package (as ./run_tests.sh installs it).
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${CAPTUM_CD_FASHION_MNIST:-}" ]; then
  sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist
fi
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[docs,notebooks]'
.venv/bin/python -m sphinx -W --keep-going -b html "$@" docs docs/_build/html
echo "docs/_build/html/index.html"
