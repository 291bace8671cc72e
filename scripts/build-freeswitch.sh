#!/usr/bin/env bash
# Build the FreeSWITCH the bridge is tested against, into one prefix:
#   sofia-sip 1.13.17, spandsp, FreeSWITCH 1.10.12 (a trimmed module set; for text-to-speech
#   mod_flite against Debian's flite1-dev, mod_tts_commandline for espeak-ng and mod_ssml, whose
#   tts:// file format plays speech as a file, with PLAYBACK events) and drachtio's
#   mod_audio_fork (built out of tree against the installed headers, with Debian's libwebsockets).
#
# Sources: the tarballs in $FREESWITCH_SRC (default: ../shared/freeswitch-src next to the repo;
# SOURCES.txt there names each upstream commit). Nothing is downloaded.
#
#   FREESWITCH_PREFIX     where it all goes (default /opt/bridge-freeswitch); sofia-sip and
#                         spandsp go there too, never /usr/local
#   FREESWITCH_SRC        the directory holding the four tarballs
#   FREESWITCH_BUILD_DIR  scratch build tree (default /var/tmp/bridge-freeswitch-build)
#   FREESWITCH_JOBS       make -j (default: nproc)
#   FREESWITCH_UNPINNED=1 accept tarballs whose sha256 differs from the pinned ones (their
#                         contents are still checked)
#   FREESWITCH_KEEP_BUILD=1  keep the build tree after a successful build
#
# Idempotent: a finished build writes $PREFIX/.bridge-freeswitch-build (the recipe version, the
# module list and each tarball's sha256); when that stamp matches, nothing is rebuilt.
# As root it apt-installs the Debian build dependencies, sip-tester (SIPp) and espeak-ng first.
set -euo pipefail

RECIPE=1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${FREESWITCH_PREFIX:-/opt/bridge-freeswitch}
SRC=${FREESWITCH_SRC:-$REPO/../shared/freeswitch-src}
WORK=${FREESWITCH_BUILD_DIR:-/var/tmp/bridge-freeswitch-build}
JOBS=${FREESWITCH_JOBS:-$(nproc)}
STAMP="$PREFIX/.bridge-freeswitch-build"

FS_TARBALL=freeswitch-1.10.12.tar.xz
SOFIA_TARBALL=sofia-sip-1.13.17.tar.xz
SPANDSP_TARBALL=spandsp-0c7bceb.tar.xz
DRACHTIO_TARBALL=drachtio-freeswitch-modules-88e1465.tar.xz
TARBALLS=("$SOFIA_TARBALL" "$SPANDSP_TARBALL" "$FS_TARBALL" "$DRACHTIO_TARBALL")

# sha256 of the `git archive` tarballs described in SOURCES.txt.
declare -A PINNED=(
  [$FS_TARBALL]=375016976aceba00a323a2e7bbca73374d3d94153059bf34329d78d9e2b7234a
  [$SOFIA_TARBALL]=0c721073c49ba046e9900753e28c81dfaacafc78a95804fadc5d814df319a6d6
  [$SPANDSP_TARBALL]=0eba4ba4140789f04927390548c4a8a0b612fa06a99da6957415b3031e23abf6
  [$DRACHTIO_TARBALL]=161d67f9fd9aa8f2054d3b2f828ef996a88da1441349ca4133cdf6bdeda1f5f3
)

# Files each tarball must hold, so a truncated or wrong tarball stops us before anything builds.
declare -A REQUIRED=(
  [$FS_TARBALL]="bootstrap.sh configure.ac build/modules.conf.in src/switch.c src/include/switch.h
    src/mod/endpoints/mod_sofia/mod_sofia.c src/mod/event_handlers/mod_event_socket/mod_event_socket.c
    src/mod/applications/mod_conference/mod_conference.c src/mod/applications/mod_spandsp/mod_spandsp.c
    src/mod/asr_tts/mod_flite/mod_flite.c src/mod/asr_tts/mod_tts_commandline/mod_tts_commandline.c
    src/mod/formats/mod_ssml/mod_ssml.c libs/iksemel/src/iks.c"
  [$SOFIA_TARBALL]="bootstrap.sh configure.ac libsofia-sip-ua/nua/nua.c"
  [$SPANDSP_TARBALL]="bootstrap.sh configure.ac src/spandsp.h.in src/t38_core.c"
  [$DRACHTIO_TARBALL]="modules/mod_audio_fork/mod_audio_fork.c modules/mod_audio_fork/lws_glue.cpp
    modules/mod_audio_fork/audio_pipe.cpp modules/mod_audio_fork/parser.cpp"
)

# The trimmed module set (build/modules.conf syntax). mod_audio_fork is built separately.
FS_MODULES="
applications/mod_callcenter
applications/mod_commands
applications/mod_conference
applications/mod_db
applications/mod_dptools
applications/mod_hash
applications/mod_http_cache
applications/mod_spandsp
asr_tts/mod_flite
asr_tts/mod_tts_commandline
dialplans/mod_dialplan_xml
endpoints/mod_loopback
endpoints/mod_sofia
event_handlers/mod_event_socket
formats/mod_local_stream
formats/mod_native_file
formats/mod_sndfile
formats/mod_ssml
formats/mod_tone_stream
loggers/mod_console
loggers/mod_logfile
"

DEBIAN_DEPS=(
  build-essential autoconf automake libtool libtool-bin pkg-config xz-utils
  libssl-dev zlib1g-dev libsqlite3-dev libcurl4-openssl-dev libpcre3-dev libspeexdsp-dev libspeex-dev
  libedit-dev libtiff-dev libjpeg-dev uuid-dev libsndfile1-dev libopus-dev libldns-dev yasm nasm
  libwebsockets-dev flite1-dev
)
TEST_DEPS=(sip-tester espeak-ng)

say() { printf '==> %s\n' "$*"; }
die() { printf 'build-freeswitch: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

missing_debs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$p"
  done
}

APT_UPDATED=
apt_install() {
  local missing
  missing=$(missing_debs "$@")
  [ -z "$missing" ] && return 0
  if ! is_root; then
    return 1
  fi
  if [ -z "$APT_UPDATED" ]; then
    say "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
  # shellcheck disable=SC2086
  say "apt-get install" $missing
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

expected_stamp() {
  printf 'recipe %s\n' "$RECIPE"
  printf 'prefix %s\n' "$PREFIX"
  local t
  for t in "${TARBALLS[@]}"; do
    printf 'sha256 %s %s\n' "${SUMS[$t]}" "$t"
  done
  printf 'module %s\n' $FS_MODULES applications/mod_audio_fork
}

# ------------------------------------------------------------------ 1. the sources, checked first
built() { [ -f "$STAMP" ] && [ -x "$PREFIX/bin/freeswitch" ]; }
no_source() {  # a finished build stands even where its sources are gone; otherwise it's an error
  if built; then
    say "FreeSWITCH already built in $PREFIX; $1, so it cannot be compared with the sources: kept"
    exit 0
  fi
  die "$1"
}
[ -d "$SRC" ] || no_source "no source directory $SRC (set FREESWITCH_SRC to the directory holding ${TARBALLS[*]})"
for t in "${TARBALLS[@]}"; do
  [ -f "$SRC/$t" ] || no_source "missing tarball $SRC/$t (see SOURCES.txt beside it)"
done
declare -A SUMS=()
for t in "${TARBALLS[@]}"; do
  SUMS[$t]=$(sha256sum "$SRC/$t" | cut -d' ' -f1)
  if [ "${SUMS[$t]}" != "${PINNED[$t]}" ] && [ "${FREESWITCH_UNPINNED:-0}" != 1 ]; then
    die "$SRC/$t is damaged or not the pinned one: sha256 ${SUMS[$t]}, expected ${PINNED[$t]}" \
      "(FREESWITCH_UNPINNED=1 builds it anyway)"
  fi
done

# One build at a time per build tree: a second run waits here, then finds the first one's stamp.
mkdir -p "$(dirname "$WORK")"
exec 9>"$WORK.lock"
flock 9

if built && [ "$(cat "$STAMP")" = "$(expected_stamp)" ]; then
  say "FreeSWITCH already built in $PREFIX (stamp $STAMP matches the sources): nothing to do"
  if ! apt_install "${TEST_DEPS[@]}"; then
    echo "note: sip-tester (SIPp) or espeak-ng is not installed and this is not root: apt-get install sip-tester espeak-ng" >&2
  fi
  exit 0
fi

# ------------------------------------------------------------------ 2. build dependencies (xz-utils among them, for the next check)
if ! apt_install "${DEBIAN_DEPS[@]}" "${TEST_DEPS[@]}"; then
  missing=$(missing_debs "${DEBIAN_DEPS[@]}")
  [ -n "$missing" ] && die "not root, and these Debian packages are missing:" $missing \
    "(apt-get install them, or run as root)"
  echo "note: sip-tester (SIPp) or espeak-ng is not installed and this is not root: apt-get install sip-tester espeak-ng" >&2
fi

# ------------------------------------------------------------------ 3. the tarballs' contents
for t in "${TARBALLS[@]}"; do
  listing=$(xz -dc "$SRC/$t" | tar -t 2>/dev/null) || die "$SRC/$t is damaged: it does not unpack (xz/tar failed)"
  for f in ${REQUIRED[$t]}; do
    grep -qxF "$f" <<<"$listing" || grep -qxF "./$f" <<<"$listing" \
      || die "$SRC/$t lacks $f: a damaged or wrong tarball"
  done
done
say "sources in $SRC checked (${#TARBALLS[@]} tarballs, sha256 and contents)"

mkdir -p "$PREFIX" 2>/dev/null || die "cannot create $PREFIX (run as root or set FREESWITCH_PREFIX)"
[ -w "$PREFIX" ] || die "$PREFIX is not writable (run as root or set FREESWITCH_PREFIX)"

# ------------------------------------------------------------------ 4. build
START=$(date +%s)
rm -rf "$WORK" "$STAMP"
mkdir -p "$WORK/logs"
LOGS="$WORK/logs"

# Run a build step quietly into its own log; on failure show the log's end.
step() {
  local name=$1
  shift
  say "$name"
  local rc
  set +e
  (set -e; "$@") >"$LOGS/$name.log" 2>&1  # a subshell, so errexit holds inside functions too
  rc=$?
  set -e
  if [ "$rc" != 0 ]; then
    tail -n 60 "$LOGS/$name.log" >&2
    die "step '$name' failed (exit $rc; full log: $LOGS/$name.log)"
  fi
}

unpack_all() {
  local t dir
  for t in "$SOFIA_TARBALL:sofia-sip" "$SPANDSP_TARBALL:spandsp" "$FS_TARBALL:freeswitch" \
    "$DRACHTIO_TARBALL:drachtio"; do
    dir="$WORK/${t#*:}"
    mkdir -p "$dir"
    tar -xJf "$SRC/${t%%:*}" -C "$dir"
  done
}

export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
export LDFLAGS="-L$PREFIX/lib -Wl,-rpath,$PREFIX/lib"
export CPPFLAGS="-I$PREFIX/include"

step unpack unpack_all

cd "$WORK/sofia-sip"
step sofia-bootstrap ./bootstrap.sh
step sofia-configure ./configure --prefix="$PREFIX" --disable-static --disable-stun --with-glib=no
step sofia-make make -j"$JOBS"
step sofia-install make install

cd "$WORK/spandsp"
step spandsp-bootstrap ./bootstrap.sh
step spandsp-configure ./configure --prefix="$PREFIX" --disable-static
step spandsp-make make -j"$JOBS"
step spandsp-install make install

# FreeSWITCH 1.10.12's mod_spandsp is older than spandsp's master: there V.18's 5-bit modes are
# named V18_MODE_WEITBRECHT_5BIT_* and v18_init() takes a status handler and its user data.
patch_mod_spandsp() {
  local f=src/mod/applications/mod_spandsp/mod_spandsp_dsp.c
  grep -q 'V18_MODE_WEITBRECHT_5BIT_4545' "$PREFIX/include/spandsp/v18.h" || return 0
  grep -q 'V18_MODE_5BIT_4545' "$f" || return 0
  sed -i -E -e 's/V18_MODE_5BIT_(4545|50)/V18_MODE_WEITBRECHT_5BIT_\1/g' \
    -e 's/(v18_init\(NULL, (TRUE|FALSE), get_v18_mode\(session\), V18_AUTOMODING_GLOBAL, put_text_msg, [A-Za-z]+)\);/\1, NULL, NULL);/' \
    "$f"
  if grep -q 'V18_MODE_5BIT_' "$f" || [ "$(grep -c 'put_text_msg, [a-zA-Z]*, NULL, NULL);' "$f")" != 3 ]; then
    echo "mod_spandsp_dsp.c: the spandsp API patch did not apply" >&2
    return 1
  fi
}

cd "$WORK/freeswitch"
printf '%s\n' $FS_MODULES >modules.conf
step freeswitch-patch patch_mod_spandsp
step freeswitch-bootstrap ./bootstrap.sh -j
step freeswitch-configure ./configure --prefix="$PREFIX" --disable-libvpx --disable-libyuv
step freeswitch-make make -j"$JOBS"
step freeswitch-install make install

MODDIR=$(pkg-config --variable=modulesdir freeswitch)
[ -n "$MODDIR" ] && [ -d "$MODDIR" ] || die "pkg-config found no modulesdir for the installed freeswitch"

build_audio_fork() {
  local flags libs
  flags=$(pkg-config --cflags freeswitch libwebsockets speexdsp)
  libs=$(pkg-config --libs freeswitch libwebsockets speexdsp)
  cd "$WORK/drachtio/modules/mod_audio_fork"
  # shellcheck disable=SC2086
  gcc -O2 -g -fPIC $flags -c mod_audio_fork.c -o mod_audio_fork.o
  local f
  for f in lws_glue audio_pipe parser; do
    # shellcheck disable=SC2086
    g++ -O2 -g -fPIC -std=c++11 $flags -c "$f.cpp" -o "$f.o"
  done
  # shellcheck disable=SC2086
  g++ -shared -o mod_audio_fork.so mod_audio_fork.o lws_glue.o audio_pipe.o parser.o \
    $libs -Wl,-rpath,"$PREFIX/lib" -Wl,--no-undefined
  install -m 0755 mod_audio_fork.so "$MODDIR/mod_audio_fork.so"
}
step mod_audio_fork build_audio_fork

# ------------------------------------------------------------------ 5. check what was installed
FS_BIN="$PREFIX/bin/freeswitch"
[ -x "$FS_BIN" ] || die "$FS_BIN was not installed"
for m in $FS_MODULES applications/mod_audio_fork; do
  so="$MODDIR/${m#*/}.so"
  [ -f "$so" ] || die "module ${m#*/} was not installed ($so missing)"
  if ldd "$so" | grep -q 'not found'; then
    ldd "$so" | grep 'not found' >&2
    die "${m#*/} has unresolved libraries"
  fi
done
if ldd "$FS_BIN" | grep -q 'not found'; then
  ldd "$FS_BIN" | grep 'not found' >&2
  die "$FS_BIN has unresolved libraries"
fi
"$FS_BIN" -version >"$LOGS/version.log" 2>&1 || die "$FS_BIN -version failed (see $LOGS/version.log)"

expected_stamp >"$STAMP"
if [ "${FREESWITCH_KEEP_BUILD:-0}" != 1 ]; then
  rm -rf "$WORK/sofia-sip" "$WORK/spandsp" "$WORK/freeswitch" "$WORK/drachtio"
fi
say "built $(head -n1 "$LOGS/version.log") into $PREFIX in $(( $(date +%s) - START ))s" \
  "(modules in $MODDIR, logs in $LOGS)"
