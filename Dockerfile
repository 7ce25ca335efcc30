# The Sluice producer and worker. Build: docker build -t sluice .
#   docker run sluice producer | docker run sluice worker   (docker-compose.yml runs both)
# rocksdict and fastavro ship manylinux wheels; only the compiled core (app/native, Rust) is built,
# in a stage of its own, so the final image holds no compiler.
FROM python:3.11-slim AS native
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl gcc libc6-dev \
    && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
COPY app/native /native
RUN PYO3_PYTHON=python3 CARGO_TARGET_DIR=/target /root/.cargo/bin/cargo build --release --locked \
    --manifest-path /native/Cargo.toml

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
COPY --from=native /target/release/lib_core.so ./app/native/_core.so
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
