# FreeSWITCH 1.10.12 + drachtio mod_audio_fork, built from the project's pinned source tarballs by
# the same script as `make freeswitch` (scripts/build-freeswitch.sh), run with freeswitch-conf/.
#
# Build from the repository root, with the tarballs (../shared/freeswitch-src, see its SOURCES.txt)
# as the second build context `freeswitch-src` (docker/build-images.sh does this):
#
#   podman build --network host -f docker/freeswitch.Dockerfile \
#     --ignorefile docker/lab.dockerignore \
#     --build-context freeswitch-src=../shared/freeswitch-src \
#     --build-arg BASE_IMAGE=localhost/debian:bookworm -t localhost/bridge-freeswitch:1.10.12 .
#
# (docker buildx: the same with --build-context; BASE_IMAGE defaults to debian:bookworm-slim.)
# A machine with internet but without the tarballs can make them from the upstream commits pinned
# in SOURCES.txt / docs/freeswitch.md (`git archive`); the script checks their sha256 either way.
ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- build: the script, unchanged
FROM ${BASE_IMAGE} AS build
ENV FREESWITCH_PREFIX=/opt/bridge-freeswitch \
    FREESWITCH_SRC=/src/freeswitch-src \
    FREESWITCH_BUILD_DIR=/var/tmp/bridge-freeswitch-build
COPY scripts/build-freeswitch.sh /src/repo/scripts/build-freeswitch.sh
COPY --from=freeswitch-src *.tar.xz SOURCES.txt /src/freeswitch-src/
# As root the script apt-installs its Debian build dependencies itself.
RUN /src/repo/scripts/build-freeswitch.sh
# The Debian packages that own every shared library the switch and its modules load (those not in
# the prefix): the runtime stage installs exactly these.
RUN set -eu; \
    find "$FREESWITCH_PREFIX" -type f \( -name '*.so*' -o -path '*/bin/*' \) -exec ldd {} + 2>/dev/null \
      | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | grep -v "^$FREESWITCH_PREFIX/" | sort -u \
      | while read -r lib; do \
          real=$(readlink -f "$lib"); \
          for p in "$lib" "$real" "/usr$lib" "/usr$real" "${lib#/usr}" "${real#/usr}"; do \
            dpkg -S "$p" 2>/dev/null && break; \
          done; \
        done | cut -d: -f1 | sort -u >/opt/bridge-freeswitch-runtime-debs; \
    echo "runtime packages:"; cat /opt/bridge-freeswitch-runtime-debs; \
    test -s /opt/bridge-freeswitch-runtime-debs

# ---------------------------------------------------------------- runtime
FROM ${BASE_IMAGE}
COPY --from=build /opt/bridge-freeswitch-runtime-debs /opt/bridge-freeswitch-runtime-debs
# espeak-ng is no library of the switch's but the command mod_tts_commandline runs (BRIDGE_TTS=espeak).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       $(cat /opt/bridge-freeswitch-runtime-debs) espeak-ng \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/bridge-freeswitch /opt/bridge-freeswitch
COPY scripts/run-freeswitch.sh /usr/local/bin/run-freeswitch.sh
COPY freeswitch-conf /etc/bridge-freeswitch/conf
# Everything the switch writes lives under /var/lib/bridge-freeswitch (log/, db/, recordings/, ...);
# mount the recordings volume at /var/lib/bridge-freeswitch/recordings in this container and the
# bridge's (BRIDGE_RECORDINGS_DIR), so both see the same paths.
ENV FREESWITCH_PREFIX=/opt/bridge-freeswitch \
    FREESWITCH_CONF=/etc/bridge-freeswitch/conf \
    PATH=/opt/bridge-freeswitch/bin:$PATH
RUN freeswitch -version && mkdir -p /var/lib/bridge-freeswitch/recordings
# The conf binds SIP (5080), ESL (8021) and RTP (16384-16584) to 127.0.0.1: run it with the host's
# network (network_mode: host), as the lab does; FREESWITCH_*_PORT move them (freeswitch-conf/vars.xml).
# -np: normal priority. By default FreeSWITCH asks for SCHED_FIFO and a nice level, which an
# unprivileged container refuses ("ERROR: Failed to set SCHED_FIFO scheduler").
ENTRYPOINT ["/usr/local/bin/run-freeswitch.sh", "/var/lib/bridge-freeswitch", "-np"]
