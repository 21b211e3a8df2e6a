#!/bin/sh
# Podman on a machine without a Docker engine or a reachable image registry, as `make images` needs it.
# Run as root (the Makefile runs it with sudo when it is not). Idempotent: each part is done only when
# missing, so a second run costs a second.
#
#  1. Debian's podman, runc and debootstrap, when missing.
#  2. The settings this kernel needs, in /etc/containers/containers.conf (read by root's podman): the runc
#     runtime (crun refuses the machine's hybrid cgroups), the cgroupfs manager, no default ulimits (the
#     defaults exceed the hard limits here) and host networking. An existing file written by someone else
#     is not overwritten: if it lacks a setting, this script says which and stops.
#  3. localhost/dandelion-base: Debian bookworm (minbase) with its own Python 3.11 (python3, python3-venv),
#     made with debootstrap from the Debian mirror apt already uses here (read from apt's sources, never
#     written down), then `podman import`ed. The Dockerfile builds on it through BASE_IMAGE.
set -eu

BASE_IMAGE=${BASE_IMAGE:-localhost/dandelion-base}  # the Makefile passes its BASE_IMAGE
CONF=${CONTAINERS_CONF:-/etc/containers/containers.conf}
MARK="# Written by Dandelion's platform/docker/podman-setup.sh"

missing=""
for command in podman runc debootstrap; do
  command -v "$command" >/dev/null 2>&1 || missing="$missing $command"
done
if [ -n "$missing" ]; then
  echo "podman-setup: installing$missing"
  # shellcheck disable=SC2086 # one word per package
  apt-get install -y -q --no-install-recommends $missing ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends $missing; }
fi

settings="$MARK
[containers]
default_ulimits = []
netns = \"host\"

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\""
if [ ! -e "$CONF" ] || head -n 1 "$CONF" | grep -qxF "$MARK"; then
  if [ "$(cat "$CONF" 2>/dev/null)" != "$settings" ]; then
    mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$settings" >"$CONF.new"
    mv "$CONF.new" "$CONF"
    echo "podman-setup: wrote $CONF"
  fi
else
  for line in 'default_ulimits = \[\]' 'runtime = "runc"' 'cgroup_manager = "cgroupfs"'; do
    if ! grep -Eq "^[[:space:]]*$line" "$CONF"; then
      echo "podman-setup: $CONF is not ours and lacks: $line" >&2
      echo "podman-setup: add these settings to it (or move it away and run again):" >&2
      printf '%s\n' "$settings" >&2
      exit 1
    fi
  done
fi

# Another BASE_IMAGE (an upstream one, where a registry is reachable) is pulled by the build itself.
if [ "$BASE_IMAGE" != localhost/dandelion-base ] || podman image exists "$BASE_IMAGE"; then
  exit 0
fi
# The first Debian bookworm archive among apt's own sources (deb822 or one-line, as apt reads them).
mirror=$(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' \
  'Created-By: Packages' 'Target-Of: deb' | awk '$2 == "bookworm" { print $1; exit }')
if [ -z "$mirror" ]; then
  echo "podman-setup: apt's sources name no Debian bookworm archive to debootstrap $BASE_IMAGE from;" >&2
  echo "podman-setup: build with an upstream base instead: make images BASE_IMAGE=python:3.11.14-slim-bookworm" >&2
  exit 1
fi
root=$(mktemp -d /var/tmp/dandelion-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "podman-setup: debootstrap bookworm (minbase, python3, python3-venv) from apt's Debian mirror"
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "$mirror" >"$root.log" 2>&1 ||
  { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# What an image never reads: package lists and downloads, documentation but the copyright files, manuals,
# the programs' translations (33 MB; the images run with LANG=C.UTF-8, built into glibc).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
  "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/var/log/*.log
find "$root/usr/share/doc" -type f ! -name copyright -delete
tar --numeric-owner -C "$root" -c . |
  podman import --change 'CMD ["python3"]' --message "debootstrap --variant=minbase bookworm" - "$BASE_IMAGE"
echo "podman-setup: imported $BASE_IMAGE"
