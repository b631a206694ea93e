#!/usr/bin/env bash
# Builds the base image the Containerfile starts from, without a registry:
# Debian 12 (bookworm) from debootstrap (minbase), brought up to date from
# bookworm-updates and bookworm-security, slimmed (no apt lists, docs, man
# pages or locales; dpkg keeps it that way for later installs), and imported
# into podman. Both stages of the Containerfile use it: the build stage adds
# Debian's rustc-web, the final stage only the origin binary.
#
#   scripts/container-base.sh            skipped when the image exists
#   CONTAINER_BASE_REFRESH=1 scripts/container-base.sh   debootstrap again
#
# Environment:
#   BASE_IMAGE      the tag (default localhost/webpush-base:bookworm, the
#                   Containerfile's ARG BASE)
#   DEBIAN_MIRROR   (default: the host's apt mirror, else http://deb.debian.org/debian)
#   DEBIAN_SECURITY (default: the host's security mirror, else
#                   http://deb.debian.org/debian-security)
#   CONTAINER_CACHE where the root file system tarball is kept, so that the
#                   image can be imported again without debootstrap
#                   (default ~/.cache/webpush-container)
#
# Needs root, podman and debootstrap (scripts/container-test.sh installs them).
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-localhost/webpush-base:bookworm}"
SUITE=bookworm
CONTAINER_CACHE="${CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/webpush-container}"
TARBALL="$CONTAINER_CACHE/$SUITE-minbase-rootfs.tar"
REFRESH="${CONTAINER_BASE_REFRESH:-0}"

say() { printf 'container-base: %s\n' "$*"; }
start=$SECONDS

if [[ "$REFRESH" != 1 ]] && podman image exists "$BASE_IMAGE"; then
  say "$BASE_IMAGE present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "container-base: debootstrap needs root" >&2
  exit 1
fi

# The host's own mirrors (deb822 or one-line sources), else deb.debian.org.
host_uri() {
  local want="$1" uri
  uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk -v want="$want" '
      /^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) { print uri; exit } }
      /^$/ { uri = "" }')"
  if [[ -z "$uri" ]]; then
    uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk -v want="$want" '$1 == "deb" && $3 == want { print $2; exit }')"
  fi
  printf '%s' "$uri"
}
DEBIAN_MIRROR="${DEBIAN_MIRROR:-$(host_uri "$SUITE")}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY="${DEBIAN_SECURITY:-$(host_uri "$SUITE-security")}"
DEBIAN_SECURITY="${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"

if [[ "$REFRESH" == 1 || ! -s "$TARBALL" ]]; then
  mkdir -p "$CONTAINER_CACHE"
  work="$(mktemp -d /var/tmp/webpush-base.XXXXXX)"
  root="$work/rootfs"
  cleanup() {
    if mountpoint -q "$root/proc" 2>/dev/null; then umount "$root/proc"; fi
    rm -rf "$work"
  }
  trap cleanup EXIT

  say "debootstrap --variant=minbase $SUITE from $DEBIAN_MIRROR (a few minutes)"
  debootstrap --variant=minbase "$SUITE" "$root" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    cat "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    exit 1
  }

  # Sources with updates and security (Debian's rustc-web needs the latter),
  # no recommends, and no documentation in later installs.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $DEBIAN_SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$root/etc/apt/apt.conf.d/90container" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
  cat >"$root/etc/dpkg/dpkg.cfg.d/90container-excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF

  say "apt-get upgrade from $SUITE-updates and $SUITE-security"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get update -q >"$work/apt.log" 2>&1 &&
    chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get upgrade -y -q >>"$work/apt.log" 2>&1 || {
    tail -n 30 "$work/apt.log" >&2
    exit 1
  }
  chroot "$root" apt-get clean
  umount "$root/proc"

  # Slim: what the excludes would have left out, caches and logs.
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,info,lintian}/* \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
    "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  : >"$root/etc/resolv.conf"
  printf '%s\n' webpush-base >"$root/etc/hostname"

  tar --numeric-owner --xattrs -C "$root" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  say "root file system cached in $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
  say "importing the cached $TARBALL (CONTAINER_BASE_REFRESH=1 debootstraps again)"
fi

podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debian $SUITE minbase (scripts/container-base.sh)" \
  "$TARBALL" "$BASE_IMAGE" >/dev/null
say "$BASE_IMAGE imported ($(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')) in $((SECONDS - start)) s"
