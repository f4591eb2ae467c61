#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (the peer of bench/serve_load.py) from the llama.cpp sources
# vendored in the llama-cpp-python sdist on PyPI: the wheel ships the libraries, not the server.
# Usage: bash bench/build_llama_server.sh [DIR]   (default /tmp/llama-server; prints the binary's path)
set -euo pipefail
DIR="${1:-/tmp/llama-server}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
mkdir -p "$DIR"
cd "$DIR"
if [ ! -d "llama_cpp_python-$VERSION" ]; then
  python -m pip download --no-deps --no-binary :all: --no-build-isolation "llama-cpp-python==$VERSION" -d . -q
  tar xzf "llama_cpp_python-$VERSION.tar.gz"
fi
cmake -S "llama_cpp_python-$VERSION/vendor/llama.cpp" -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON >/dev/null
cmake --build build --target llama-server -j "$(nproc)" >/dev/null
echo "$DIR/build/bin/llama-server"
