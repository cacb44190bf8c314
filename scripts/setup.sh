#!/usr/bin/env bash
# Idempotent set-up: .venv with the versions tested here (constraints.txt), the package in editable
# mode, and Fashion-MNIST from Debian when apt is usable. Re-running does no work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.setup-stamp"
want=$(cat constraints.txt setup.cfg pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import boosting_tickets" 2>/dev/null; then
  echo "setup: .venv up to date"
else
  echo "setup: creating/updating $VENV (torch 2.14.1 + torchvision 0.29.1; first time takes a few minutes)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  pip="$VENV/bin/python -m pip"
  C="-c constraints.txt"
  # torch 2.14 needs setuptools>=77; robustbench imports pkg_resources, gone in setuptools 81.
  $pip install -q $C "setuptools>=77,<81" wheel
  $pip install -q $C torch==2.14.1 torchvision==0.29.1
  $pip install -q $C numpy scipy click tqdm matplotlib tensorboard submitit pytest pytest-timeout hypothesis ruff
  # torchattacks ships a stale top-level robustbench: install it first, then robustbench over it.
  $pip install -q $C torchattacks==3.5.1
  $pip install -q $C robustbench==1.1.1 pyautoattack
  $pip install -q --force-reinstall --no-deps $C robustbench==1.1.1
  $pip install -q $C "setuptools>=77,<81"
  $pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Fashion-MNIST from Debian (dataset-fashion-mnist)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
      || echo "setup: apt-get could not install dataset-fashion-mnist; tests that need it are skipped"
  else
    echo "setup: Fashion-MNIST not found; run 'sudo apt-get install dataset-fashion-mnist'" \
         "or put the four IDX files in data/FashionMNIST/raw/"
  fi
fi
