# shellcheck shell=bash
# Debian packages the local cluster needs; installs only what is missing, runs apt-get update at most once.

PKGS_CONTROL_PLANE=(etcd-server openssl curl util-linux)
PKGS_BUILD=(golang-go rsync golang-github-modern-go-reflect2-dev gcc libc6-dev make tar)
PKGS_NODE=(containerd runc containernetworking-plugins iptables iproute2)
PKGS_ROOTFS=(debootstrap debian-archive-keyring)

DEB_SRC_FILE=/etc/apt/sources.list.d/inference-placement-src.sources
APT_UPDATED=0

apt_update_once() {
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    APT_UPDATED=1
  fi
}

pkg_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# ensure_packages PKG...: apt-get install the ones that are not installed yet.
ensure_packages() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0
  need_root
  apt_update_once
  log "apt-get install ${missing[*]}"
  # policy-rc.d keeps Debian's postinst from starting its own etcd/containerd services where systemd/sysv runs.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# ensure_deb_src: a deb-src line for bookworm main, so `apt-get source` finds the kubernetes source package.
ensure_deb_src() {
  if grep -q '^Version: ' <<<"$(apt-cache showsrc kubernetes 2>/dev/null)"; then  # whole, not piped: see images.sh
    return 0
  fi
  need_root
  if [[ ! -f $DEB_SRC_FILE ]]; then
    log "adding deb-src for bookworm main ($DEB_SRC_FILE)"
    cat >"$DEB_SRC_FILE" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  APT_UPDATED=0
  apt_update_once
}
