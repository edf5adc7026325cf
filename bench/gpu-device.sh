#!/usr/bin/env bash
# bench/gpu-check.sh on a bare GPU machine whose only GPU library is PyTorch's CUDA LibTorch (no apt, no
# FAISS; the lent H200 of the development setup): unpacks Debian 12's packages of mnemo's other
# dependencies (FAISS 1.7.3 static, OpenBLAS, SQLite, CLI11, nlohmann/json, cpp-httplib, PCRE2, zlib,
# GoogleTest, pkgconf) into a private root. FAISS 1.7.3's headers use uint8_t without <cstdint>, which
# GCC 13 (Ubuntu 24.04's) no longer includes implicitly, so every file is compiled with -include cstdint.
# Then points CMake at them and at PyTorch's LibTorch, and runs bench/gpu-check.sh. Nothing outside SYSROOT and BUILD_DIR is touched.
#
# Usage: bench/gpu-device.sh DEBS_DIR [DATA_DIR]
#   DEBS_DIR  the .deb files: on a Debian 12 machine,
#             apt-get download libfaiss-dev libopenblas0-pthread libgfortran5 libquadmath0 libsqlite3-dev \
#               libsqlite3-0 nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libcpp-httplib0.11 libssl3 \
#               libbrotli1 libbrotli-dev libssl-dev libpcre2-dev libpcre2-8-0 zlib1g-dev zlib1g libgtest-dev pkgconf pkgconf-bin libpkgconf3
#   DATA_DIR  optional: models/default (a model directory) and text/train.txt, text/valid.txt; a Flat
#             datastore of train.txt is built on the GPU and gpu-check compares CPU and GPU on valid.txt.
#   SYSROOT=/tmp/mnemo-sysroot  BUILD_DIR=/tmp/mnemo-build-gpu  THREADS=$(nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
debs=${1:?usage: bench/gpu-device.sh DEBS_DIR [DATA_DIR]}
data=${2:-}
S=${SYSROOT:-/tmp/mnemo-sysroot}
L=$S/usr/lib/x86_64-linux-gnu

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
grep PRETTY_NAME /etc/os-release || true
g++ --version | head -1; cmake --version | head -1; nproc
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'

echo "== unpacking $(ls "$debs"/*.deb | wc -l) packages into $S"
rm -rf "$S" && mkdir -p "$S"
for f in "$debs"/*.deb; do
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$f" "$S"
  else  # A .deb is an ar archive holding data.tar.{xz,zst,gz}.
    member=$(ar t "$f" | grep '^data\.tar')
    ar p "$f" "$member" | tar -x -a -f - -C "$S" 2>/dev/null || ar p "$f" "$member" | tar -xJ -C "$S"
  fi
done
# Debian 12 still ships some libraries under /lib: merge them, and make absolute links relative to L.
if [ -d "$S/lib/x86_64-linux-gnu" ]; then cp -a "$S/lib/x86_64-linux-gnu/." "$L/"; fi
find "$L" -maxdepth 1 -type l | while read -r link; do
  target=$(readlink "$link")
  case $target in /*) ln -sf "$(basename "$target")" "$link" ;; esac
done
# OpenBLAS as the BLAS and LAPACK FAISS links (Debian selects it through alternatives, absent here).
ln -sf openblas-pthread/libblas.so.3 "$L/libblas.so"
ln -sf openblas-pthread/liblapack.so.3 "$L/liblapack.so"
ln -sf openblas-pthread/libblas.so.3 "$L/libblas.so.3"
ln -sf openblas-pthread/liblapack.so.3 "$L/liblapack.so.3"
sed -i "s|/usr/lib/x86_64-linux-gnu/|$L/|g" "$L/cmake/faiss/faiss-targets.cmake"
# Only a static link needs cpp-httplib's private requirements (OpenSSL, brotli and zlib development files).
sed -i '/^Requires.private:/d' "$L/pkgconfig/cpp-httplib.pc"

export PKG_CONFIG_PATH="$L/pkgconfig:$S/usr/share/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$S" PKG_CONFIG_LIBDIR="$L/pkgconfig"
pkgconfig_flag=()
if ! command -v pkg-config >/dev/null; then
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$L" "$S/usr/bin/pkgconf" > "$S/pkg-config"
  chmod +x "$S/pkg-config"
  pkgconfig_flag=("-DPKG_CONFIG_EXECUTABLE=$S/pkg-config")
fi
for d in /usr/local/cuda/bin; do [ -d "$d" ] && export PATH="$d:$PATH"; done
torch_prefix=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
rpath="$L:$L/openblas-pthread"
build=${BUILD_DIR:-/tmp/mnemo-build-gpu}
mkdir -p "$build"
# gpu-check.sh configures with these (it adds -DMNEMO_FAISS_GPU=AUTO, which finds no faiss/gpu here).
cmake -S . -B "$build" -G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix;$S/usr" "${pkgconfig_flag[@]}" \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath,$rpath -Wl,-rpath-link,$rpath" \
  -DCMAKE_CXX_FLAGS="-include cstdint" > "$build/gpu-device-configure.log" 2>&1 \
  || { tail -40 "$build/gpu-device-configure.log"; exit 1; }
echo "configured $build (LibTorch from $torch_prefix)"

if [ -n "$data" ] && [ -d "$data/models/default" ]; then
  BUILD_DIR=$build THREADS=${THREADS:-$(nproc)} MODEL="$data/models/default" TEXT="$data/text/valid.txt" \
    DS_TEXT="$data/text/train.txt" bench/gpu-check.sh "$build/gcide-flat"
else
  BUILD_DIR=$build THREADS=${THREADS:-$(nproc)} bench/gpu-check.sh
fi
