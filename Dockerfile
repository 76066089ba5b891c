# kaskad: the container ops deploy. Install steps are the Makefile's own (`make install`).
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md Makefile ./
COPY engine ./engine
COPY channels ./channels
# The same target CI runs, without test extras and not editable.
RUN make install VENV=/opt/kaskad EXTRAS= EDITABLE=

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/kaskad --create-home kaskad
COPY --from=build /opt/kaskad /opt/kaskad
WORKDIR /etc/kaskad
COPY rules ./rules
COPY config.yaml ./config.yaml
ENV PATH="/opt/kaskad/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    KASKAD_CONFIG=/etc/kaskad/config.yaml \
    KASKAD_HOST=0.0.0.0 \
    KASKAD_STORAGE_URL=sqlite:////var/lib/kaskad/kaskad.db
USER 10001
VOLUME ["/var/lib/kaskad"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
# Mount your own rules at /etc/kaskad/rules and config at /etc/kaskad/config.yaml.
CMD ["kaskad", "run"]
