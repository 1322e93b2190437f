# Sourced by the scripts that build (test, run, chaos, fuzz, benches): one place for the
# build environment. mold links our ~50 binaries several times faster than GNU ld (gcc
# accepts -fuse-ld=mold); it is only a faster link, never required.
#   ringrift_build_env [--install]   --install: apt-get install mold when root and missing
# Sets CARGO_INCREMENTAL=0 and, unless the caller set RUSTFLAGS, links with mold if present.

ringrift_build_env() {
  export CARGO_INCREMENTAL=0
  if [ -n "${RUSTFLAGS:-}" ]; then
    echo "linker: RUSTFLAGS set by the caller ($RUSTFLAGS); not adding mold"
    return
  fi
  if ! command -v mold >/dev/null && [ "${1:-}" = --install ] \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "linker: installing mold (Debian package)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends mold >/dev/null) \
      || echo "linker: could not install mold; linking with the default (GNU ld)"
  fi
  if command -v mold >/dev/null; then
    export RUSTFLAGS="-C link-arg=-fuse-ld=mold"
    echo "linker: mold ($(mold --version | head -1))"
  else
    echo "linker: mold not found, linking with the default (GNU ld); slower, nothing skipped"
  fi
}
