# The Sluice producer and worker. Build: docker build -t sluice .
#   docker run sluice producer | docker run sluice worker
FROM python:3.11-slim

WORKDIR /srv
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py \
    && pip install --no-cache-dir . \
    && rm -rf app
COPY app ./app
COPY topics ./topics
COPY schemas ./schemas
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 --home-dir /srv sluice \
    && mkdir -p /var/lib/sluice \
    && chown sluice /var/lib/sluice

ENV SLUICE_TOPICS_DIR=/srv/topics \
    SLUICE_SCHEMAS_DIR=/srv/schemas \
    SLUICE_DATA_DIR=/var/lib/sluice \
    PYTHONUNBUFFERED=1
USER sluice
EXPOSE 8080 6066
ENTRYPOINT ["sluice"]
CMD ["producer"]
