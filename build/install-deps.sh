#!/usr/bin/env bash
# install-deps.sh build|test — make sure this machine has what `make build`
# (and so `make demo`) or `make test` needs, installing it when it can.
#
# Go 1.26 is the one thing it never installs: it is checked, and the error
# says where to get it. Everything else comes from Debian/Ubuntu packages:
#   build  gcc (cgo, -race), pkg-config, ca-certificates (Go modules over
#          HTTPS), libyara-dev 4.2 with the static
#          archives the statically linked sensor needs (libmagic, libjansson,
#          libcrypto come with libyara-dev; zlib, bz2 and lzma do not).
#   test   the above, plus what the test suite starts or inspects: a JDK 17
#          and Maven for the test Elasticsearch (make es-up), curl to wait for
#          it, the yara CLI for the YARA benchmark's test, dpkg-deb,
#          systemd-analyze and useradd for the Debian packages' tests.
#
# As root on Debian/Ubuntu it runs apt-get and prints one line saying what it
# installs and why. Otherwise it installs nothing, prints the exact command
# to run and exits 2. TILLWATCH_NO_INSTALL=1 checks only, even as root.
set -euo pipefail

want="${1:-build}"
case "$want" in build | test) ;; *) echo "usage: $0 build|test" >&2; exit 2 ;; esac

go="${GO:-go}"
command -v "$go" >/dev/null || { echo "missing: Go 1.26 or newer (https://go.dev/dl); install it and put it on PATH" >&2; exit 2; }
"$go" version | grep -qE 'go1\.(2[6-9]|[3-9][0-9])' || { echo "need Go >= 1.26, have: $("$go" version); https://go.dev/dl" >&2; exit 2; }

# pkgs and why: one Debian package per entry, with the reason it is needed.
pkgs=() why=()
need() { # need PACKAGE REASON: queue PACKAGE unless dpkg says it is installed
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' && return
  pkgs+=("$1")
  case " ${why[*]-} " in *" $2 "*) ;; *) why+=("$2") ;; esac
}

have_static() { case "$(gcc -print-file-name="lib$1.a" 2>/dev/null)" in /*) return 0 ;; esac; return 1; }

if ! command -v dpkg-query >/dev/null; then
  # Not Debian/Ubuntu: check what can be checked and say what is wanted.
  missing=()
  command -v gcc >/dev/null || missing+=("a C compiler (gcc)")
  command -v pkg-config >/dev/null || missing+=("pkg-config")
  pkg-config --exists 'yara >= 4.2' 'yara < 4.3' 2>/dev/null || missing+=("libyara 4.2 headers")
  for l in yara magic jansson crypto z bz2 lzma; do have_static "$l" || missing+=("lib$l.a"); done
  if [[ "$want" == test ]]; then
    command -v javac >/dev/null || missing+=("JDK 17")
    command -v mvn >/dev/null || missing+=("Maven")
    command -v curl >/dev/null || missing+=("curl")
  fi
  if ((${#missing[@]})); then
    echo "missing (this is not Debian/Ubuntu; install them with your package manager): ${missing[*]}" >&2
    exit 2
  fi
  exit 0
fi

need gcc "gcc for cgo and -race"
need pkg-config "pkg-config for cgo"
need libyara-dev "libyara-dev 4.2 (headers and static archives) for the statically linked YARA scanner"
for p in zlib1g-dev libbz2-dev liblzma-dev; do need "$p" "zlib/bz2/lzma static archives that libmagic needs in the static link"; done
command -v make >/dev/null || need make "make"
command -v git >/dev/null || need git "git for the version stamp"
need ca-certificates "ca-certificates so Go can fetch modules (and Maven jars) over HTTPS"
if [[ "$want" == test ]]; then
  need openjdk-17-jdk-headless "JDK 17 + Maven to build and run the test Elasticsearch node"
  need maven "JDK 17 + Maven to build and run the test Elasticsearch node"
  need curl "curl to wait for Elasticsearch"
  need yara "the yara CLI for the YARA benchmark's test"
  need dpkg "dpkg-deb, systemd-analyze and useradd for the Debian packages' tests"
  need systemd "dpkg-deb, systemd-analyze and useradd for the Debian packages' tests"
  need passwd "dpkg-deb, systemd-analyze and useradd for the Debian packages' tests"
  need chromium "Chromium for the console's browser tests (collector/console)"
  need psmisc "killall, which the RMM detector's tests use to kill a stand-in security tool"
  need procps "ps and pkill, which tests use to find and stop what they started"
fi

# check_yara: the Go binding (go-yara v4.2) compiles only against libyara 4.2.
check_yara() {
  pkg-config --exists 'yara >= 4.2' 'yara < 4.3' 2>/dev/null && return
  echo "libyara is $(pkg-config --modversion yara 2>/dev/null || echo absent), the YARA binding needs 4.2 (Debian 12 bookworm's libyara-dev)" >&2
  exit 2
}

if ((${#pkgs[@]} == 0)); then check_yara; exit 0; fi

cmd="apt-get update && apt-get install -y ${pkgs[*]}"
if [[ "$(id -u)" != 0 || "${TILLWATCH_NO_INSTALL:-}" == 1 ]]; then
  echo "missing: ${pkgs[*]}; install them as root: sudo sh -c '$cmd' (or run this make target as root, which does it)" >&2
  exit 2
fi

# One line on what and why; apt's own output goes to a log unless it fails.
reasons=$(IFS=';'; echo "${why[*]}" | sed 's/;/; /g')
echo "installing ${pkgs[*]} (${reasons})"
log=$(mktemp /tmp/tillwatch-install-deps.XXXXXX.log)
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "install-deps: apt-get failed (full log: $log); run by hand: $cmd" >&2
  exit 1
fi
rm -f "$log"
check_yara
