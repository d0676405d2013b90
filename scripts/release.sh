#!/usr/bin/env bash
# make release: static drover binaries for linux/amd64 and linux/arm64, a
# Debian package of each, and SHA256SUMS, into $DIST (default dist/).
#
# The packages are built with dpkg-deb (every Debian machine has it) from a
# staged tree: /usr/bin/drover, the hardened unit of examples/systemd
# (pointed at /usr/bin and started only once /etc/drover/node.yaml exists),
# /etc/drover/node.yaml.example (a conffile), /var/lib/drover, a man page made
# from the binary's own help, and the maintainer scripts of packaging/debian.
# Output is reproducible for a commit: timestamps come from the commit
# (SOURCE_DATE_EPOCH), owners are root, the build is -trimpath.
#
# Environment: DIST, ARCHES (default "amd64 arm64"), VERSION (default: git
# describe), GO.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
DIST=${DIST:-dist}
ARCHES=${ARCHES:-amd64 arm64}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

for tool in dpkg-deb sha256sum gzip; do
  command -v "$tool" >/dev/null || { echo "release: $tool is missing (Debian's dpkg and coreutils)" >&2; exit 1; }
done

# A Debian version must start with a digit: v1.2.3 → 1.2.3; an untagged
# commit → 0~git<commit time>.<hash>, which sorts below any tagged release
# and in commit order.
deb_version() {
  local v=$1
  if [[ $v =~ ^v?[0-9]+\.[0-9]+ ]]; then
    v=${v#v}
  else # a commit id (which may start with a digit), or "dev"
    v="0~git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S).$v"
  fi
  # git describe's "-3-gabc123" and "-dirty" become "+3.gabc123", "+dirty".
  printf '%s' "$v" | sed -E 's/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/; s/-dirty$/+dirty/; s/[^A-Za-z0-9.+~]/./g'
}
DEB_VERSION=$(deb_version "$VERSION")

mkdir -p "$DIST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build() { # build ARCH OUT
  CGO_ENABLED=0 GOOS=linux GOARCH=$1 "$GO" build -trimpath -buildvcs=false \
    -ldflags "-s -w -X main.version=$VERSION" -o "$2" ./cmd/drover
}

# The man page documents the commands of this very binary: drover help and
# each command's -h, as they print them.
man_page() { # man_page DROVER OUT
  local bin=$1 date
  date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
  roff() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/" -e 's/-/\\-/g'; }
  {
    printf '.TH DROVER 1 "%s" "drover %s" "User Commands"\n' "$date" "$VERSION"
    printf '.SH NAME\ndrover \\- GitOps deployments for a few plain servers\n'
    printf '.SH SYNOPSIS\n.B drover\n.I COMMAND\n[flags]\n'
    printf '.SH DESCRIPTION\n'
    printf 'drover keeps a handful of plain Linux servers in the state a git repository describes.\n'
    printf 'Every node runs the agent (the drover systemd unit), which polls the config repo,\n'
    printf 'prepares each new revision, waits its turn, drains itself from the load balancer,\n'
    printf 'switches sites and workers, checks health and re-joins.\n'
    printf 'A new node is set up with \\fBdrover init\\fR and checked with \\fBdrover doctor\\fR.\n'
    printf '.SH COMMANDS\n.nf\n'
    "$bin" help 2>&1 | roff
    printf '.fi\n'
    for c in $("$bin" help 2>&1 | sed -n '/^Commands:/,/^$/{s/^  \([a-z-]*\) .*/\1/p}'); do
      printf '.SS %s\n.nf\n' "$c"
      "$bin" "$c" -h 2>&1 | roff
      printf '.fi\n'
    done
    printf '.SH FILES\n.TP\n/etc/drover/node.yaml\nthis node'"'"'s settings (see /etc/drover/node.yaml.example)\n'
    printf '.TP\n/var/lib/drover\nreleases, the journal of a change in flight, the git store\n'
    printf '.SH SEE ALSO\n.BR nginx (8),\n.BR systemctl (1)\n'
  } >"$2"
}

# The packaged unit is examples/systemd/drover.service with the package's
# binary path, and a condition so that enabling it before node.yaml exists
# does nothing rather than restart-looping on a missing file.
unit() { # unit OUT
  local src=examples/systemd/drover.service
  grep -q '^ExecStart=/usr/local/bin/drover ' "$src" || { echo "release: $src: no ExecStart=/usr/local/bin/drover line" >&2; exit 1; }
  sed -e 's|^ExecStart=/usr/local/bin/drover |ExecStart=/usr/bin/drover |' \
    -e 's|^# /etc/systemd/system/drover.service (README.md beside this file).|# /lib/systemd/system/drover.service by the drover package.|' \
    -e 's|^\[Unit\]$|[Unit]\n# Configured nodes only: drover init writes this file.\nConditionPathExists=/etc/drover/node.yaml|' \
    "$src" >"$1"
}

host_arch=$("$GO" env GOARCH)
man_bin=""
built=()
for arch in $ARCHES; do
  bin="$DIST/drover_${VERSION}_linux_${arch}"
  echo "release: drover $VERSION linux/$arch" >&2
  build "$arch" "$bin"
  built+=("${bin#"$DIST/"}")
  [ "$arch" = "$host_arch" ] && man_bin=$bin
done
if [ -z "$man_bin" ]; then
  man_bin="$work/drover-host"
  CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-X main.version=$VERSION" -o "$man_bin" ./cmd/drover
fi
man_page "$man_bin" "$work/drover.1"
unit "$work/drover.service"

for arch in $ARCHES; do
  root="$work/root-$arch"
  install -D -m 0755 "$DIST/drover_${VERSION}_linux_${arch}" "$root/usr/bin/drover"
  install -D -m 0644 "$work/drover.service" "$root/lib/systemd/system/drover.service"
  install -D -m 0644 packaging/node.yaml.example "$root/etc/drover/node.yaml.example"
  install -d -m 0755 "$root/var/lib/drover"
  install -D -m 0644 packaging/debian/copyright "$root/usr/share/doc/drover/copyright"
  [ ! -e packaging/debian/lintian-overrides ] || install -D -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/drover"
  install -D -m 0644 "$work/drover.1" "$root/usr/share/man/man1/drover.1"
  gzip -9n "$root/usr/share/man/man1/drover.1"
  {
    printf 'drover (%s) unstable; urgency=medium\n\n' "$DEB_VERSION"
    printf '  * Built from drover %s; see the repository for the changes.\n\n' "$VERSION"
    printf ' -- drover developers <drover@drover.dev>  %s\n' "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
  } | gzip -9n >"$root/usr/share/doc/drover/changelog.gz"
  install -d -m 0755 "$root/DEBIAN"
  for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"; done
  echo /etc/drover/node.yaml.example >"$root/DEBIAN/conffiles"
  cat >"$root/DEBIAN/control" <<EOF
Package: drover
Version: $DEB_VERSION
Architecture: $arch
Maintainer: drover developers <drover@drover.dev>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: nginx
Recommends: git
Section: admin
Priority: optional
Homepage: https://github.com/drover-dev/drover
Description: GitOps rolling deployments for a few plain Linux servers
 drover keeps a handful of Debian servers behind a load balancer in the
 state a git repository describes: static sites and workers served by
 nginx and run by systemd, SQL migrations, rolled out one node at a time
 with drain, health checks and rollback.
 .
 The package installs the agent's unit disabled: write
 /etc/drover/node.yaml with drover init, check it with drover doctor,
 then systemctl enable --now drover.
EOF
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  dpkg-deb --root-owner-group -Zxz --build "$root" "$DIST/drover_${DEB_VERSION}_${arch}.deb" >/dev/null
  built+=("drover_${DEB_VERSION}_${arch}.deb")
done

(cd "$DIST" && sha256sum "${built[@]}" >SHA256SUMS.new && mv SHA256SUMS.new SHA256SUMS)
(cd "$DIST" && ls -l "${built[@]}" SHA256SUMS) >&2
