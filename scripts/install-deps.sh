#!/usr/bin/env bash
# Installs the Debian 12 packages mnemo needs to build, test and serve. Idempotent and silent when
# everything is already present; needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache
  libtorch-dev libfaiss-dev libsqlite3-dev libcpp-httplib-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libcli11-dev libpcre2-dev zlib1g-dev
  libopenblas0-pthread  # LibTorch and FAISS link libblas.so.3: without this it is the reference BLAS, ~30x slower
  dict-gcide dict-foldoc
  openmpi-bin libopenmpi-dev  # sharded datastores served one process per shard under mpirun (memory/mpi_shards.h)
  procps  # tests: pgrep finds the MPI ranks of the sharded server test (tests/datastore_shards_test.cc)
  curl wrk  # tests: the server's process test; bench/server.sh: HTTP load generator
  chromium  # tests: the HTML audit report render test (headless screenshot, console errors)
  clang-14 libclang-rt-14-dev  # make fuzz: libFuzzer, AddressSanitizer, UBSan (fuzz/, docs/FUZZING.md)
)
# The official openai npm client test needs Node and npm; a Node from elsewhere (e.g. NodeSource, whose
# nodejs package bundles npm and conflicts with Debian's) is fine.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then packages+=(nodejs npm); fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
