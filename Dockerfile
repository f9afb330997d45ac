# The daemon image: built in one stage, run as a non-root user in a slim one.
#   docker build -t plant-telemetry .
#   docker run -v telemetry-state:/var/lib/telemetry -v ./site.yaml:/etc/telemetry/telemetry.yaml plant-telemetry
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY telemetry ./telemetry
COPY drivers ./drivers
COPY alerts ./alerts
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN useradd --system --home /var/lib/telemetry --shell /usr/sbin/nologin telemetry \
    && mkdir -p /var/lib/telemetry /etc/telemetry && chown telemetry /var/lib/telemetry
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config /opt/telemetry/config
USER telemetry
WORKDIR /var/lib/telemetry
VOLUME ["/var/lib/telemetry"]
ENV TELEMETRY_STATE=/var/lib/telemetry METRICS_LISTEN=0.0.0.0:9108
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=3)"
ENTRYPOINT ["telemetry"]
CMD ["run", "-c", "/etc/telemetry/telemetry.yaml", "--log-format", "json"]
