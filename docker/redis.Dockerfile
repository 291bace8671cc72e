# The lab's Redis: Debian's redis-server package (7.0 in bookworm) in an image built from the same
# base as the others, because no prebuilt image can be pulled here. On a machine that can pull,
# the compose file's redis service may use `image: redis:7` instead (same command line).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data
VOLUME /data
WORKDIR /data
ENTRYPOINT ["redis-server"]
CMD ["--bind", "127.0.0.1", "--port", "6379", "--dir", "/data", "--appendonly", "yes"]
