# Harken in a container: `harken run` as an unprivileged user, its state in a volume.
#   docker build -t harken .
#   docker run -d --init -v harken-data:/data -e HARKEN_BOT_INPUTS=slack \
#       -e HARKEN_SLACK_BOT_TOKEN -e HARKEN_SLACK_APP_TOKEN harken
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY harken harken
COPY actors actors
COPY commands commands
COPY memory memory
COPY config config
RUN pip install --no-cache-dir . \
    && rm -rf /src \
    && useradd --system --create-home harken \
    && mkdir /data \
    && chown harken:harken /data

USER harken
# Memory, jobs and, if configured, the log file go under ./var of the working directory.
WORKDIR /data
VOLUME /data
# Exec form: harken is PID 1 and gets `docker stop`'s SIGTERM itself.
ENTRYPOINT ["harken"]
CMD ["run"]
