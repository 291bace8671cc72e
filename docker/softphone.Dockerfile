# The lab's headless softphones: Debian's baresip (baresip-core 1.0.0, which dials on start with
# `-e "/dial ..."` and quits after `-t`) and SIPp (sip-tester) with docker/softphone/lab-call.xml.
# docker/softphone/softphone.sh baresip|sipp places one call and exits (see the compose file).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       baresip-core sip-tester python3 \
    && rm -rf /var/lib/apt/lists/*
COPY docker/softphone/ /opt/softphone/
ENTRYPOINT ["/opt/softphone/softphone.sh"]
CMD ["baresip"]
