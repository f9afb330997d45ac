# The daemon image: non-root, config mounted at /etc/telemetry, state in /var/lib/telemetry.
FROM python:3.11-slim-bookworm

RUN useradd --system --home /var/lib/telemetry --shell /usr/sbin/nologin telemetry \
    && mkdir -p /var/lib/telemetry /etc/telemetry && chown telemetry /var/lib/telemetry

WORKDIR /opt/telemetry
COPY setup.cfg pyproject.toml README.md ./
COPY telemetry ./telemetry
COPY drivers ./drivers
COPY alerts ./alerts
COPY config ./config
RUN pip install --no-cache-dir . && python -c "import telemetry, drivers, alerts"

USER telemetry
WORKDIR /var/lib/telemetry
ENV TELEMETRY_STATE=/var/lib/telemetry
EXPOSE 9108
ENTRYPOINT ["telemetry"]
CMD ["run", "-c", "/etc/telemetry/telemetry.yaml"]
