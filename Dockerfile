# One image for every service; the command picks the service (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GHOSTLY_HOST=0.0.0.0 \
    GHOSTLY_STORE_DIR=/data/c3d-store GHOSTLY_CACHE_DIR=/data/signal-cache
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY libs ./libs
COPY services ./services
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --uid 10001 ghostly \
    && mkdir -p /data && chown ghostly /data
USER ghostly
EXPOSE 50051 50052 50053 50054
CMD ["ghostly", "status"]
