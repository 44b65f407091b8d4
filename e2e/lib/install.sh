# shellcheck shell=bash
# Debian packages the local cluster needs; installs only what is missing, runs apt-get update at most once.

PKGS_CONTROL_PLANE=(openssl curl util-linux)
PKGS_BUILD=(gcc libc6-dev)
PKGS_NODE=(containerd runc containernetworking-plugins iptables iproute2)
PKGS_ROOTFS=(debootstrap debian-archive-keyring)

APT_UPDATED=0
APT_LOCK=/var/lock/inference-placement-apt.lock

# apt_get ARGS...: apt-get, one at a time across this project's scripts. `make test` runs the cluster step and the
# operator image build side by side, and on a fresh machine both install packages: dpkg's lock waits
# (DPkg::Lock::Timeout) but `apt-get update`'s lists lock does not, so the second update failed at once (exit 100).
apt_get() {
  flock -w 900 "$APT_LOCK" apt-get -o DPkg::Lock::Timeout=300 "$@"
}

apt_update_once() {
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    local try
    # another apt (not ours, so not behind our lock) may hold the lists lock for a while: wait it out
    for try in 1 2 3 4 5 6; do
      apt_get update -qq >&2 && break
      ((try < 6)) || die "apt-get update failed $try times"
      log "apt-get update failed (another apt running?); again in 10s"
      sleep 10
    done
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
  DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
