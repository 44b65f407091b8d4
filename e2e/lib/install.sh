# shellcheck shell=bash
# Debian packages the local cluster needs; installs only what is missing, runs apt-get update at most once.

PKGS_CONTROL_PLANE=(openssl curl util-linux)
PKGS_BUILD=(gcc libc6-dev)
PKGS_NODE=(containerd runc containernetworking-plugins iptables iproute2)
PKGS_ROOTFS=(debootstrap debian-archive-keyring)

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
