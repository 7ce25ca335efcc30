# The Sluice producer and worker. Build: docker build -t sluice .
#   docker run sluice producer | docker run sluice worker   (docker-compose.yml runs both)
# rocksdict and fastavro ship manylinux wheels, so the slim image needs no compiler.
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1

WORKDIR /srv

# Dependencies first, from pyproject.toml and an empty stub package, so a code change
# does not reinstall them. build/ and the egg-info go too: a stale build/lib would put
# the stub's empty app/__init__.py into the real install below.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py \
    && pip install --no-cache-dir . \
    && rm -rf app build ./*.egg-info

COPY app ./app
COPY topics ./topics
COPY schemas ./schemas
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
    && rm -rf build ./*.egg-info \
    && groupadd --system --gid 10001 sluice \
    && useradd --system --uid 10001 --gid sluice --home-dir /srv --no-create-home --shell /usr/sbin/nologin sluice \
    && mkdir -p /var/lib/sluice \
    && chown sluice:sluice /var/lib/sluice
# (A new named volume on /var/lib/sluice starts as a copy of it, owner included.)

ENV SLUICE_TOPICS_DIR=/srv/topics \
    SLUICE_SCHEMAS_DIR=/srv/schemas \
    SLUICE_DATA_DIR=/var/lib/sluice

USER sluice:sluice
# 8080: the HTTP producer; 6066: the worker's web server.
EXPOSE 8080 6066
ENTRYPOINT ["sluice"]
CMD ["producer"]
