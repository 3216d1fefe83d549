#!/bin/sh
# Builds an OCI image FROM scratch holding the given binaries and the shared
# libraries they link (found with ldd), nothing else: no registry is needed,
# no base image is pulled. Used by `cargo xtask image` and the fleet tests.
#
#   build-image.sh TAG BIN:DEST [BIN:DEST...]
#
# The first DEST is the entrypoint. Prints the image ID. podman settings
# (CONTAINERS_CONF, storage) come from the environment.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 TAG BIN:DEST [BIN:DEST...]" >&2; exit 2; }
tag=$1; shift
ctx=$(mktemp -d "${TMPDIR:-/tmp}/tcpstate-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/root"
entry=
for pair in "$@"; do
    bin=${pair%%:*}; dest=${pair#*:}
    [ -n "$entry" ] || entry=$dest
    mkdir -p "$ctx/root$(dirname "$dest")"
    cp "$bin" "$ctx/root$dest"
    # Symbols are not needed at run time (the eBPF object is data, kept).
    if command -v strip >/dev/null; then strip "$ctx/root$dest"; fi
    # Every library the dynamic loader resolves, and the loader itself,
    # at the same path as on the build host.
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
        mkdir -p "$ctx/root$(dirname "$lib")"
        cp -L "$lib" "$ctx/root$lib"
    done
done
# Mount points the tracer's pod spec binds (an empty scratch image has none)
# and a writable /tmp.
mkdir -p "$ctx/root/sys/kernel/tracing" "$ctx/root/tmp"
cat > "$ctx/Containerfile" <<EOT
FROM scratch
COPY root/ /
ENTRYPOINT ["$entry"]
EOT
podman build --quiet --tag "$tag" --file "$ctx/Containerfile" "$ctx"
