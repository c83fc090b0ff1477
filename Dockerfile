# One image for every service; the command picks the service (see docker-compose.yml).
# Two stages: `build` makes the project's wheel from the sources; the runtime stage installs
# that wheel (dependencies from the index) and holds no source tree. The wheel carries the
# generated protos and the SQL migrations (package data libs/db/migrations/*.sql);
# tests/test_packaging.py builds the wheel from exactly what the build stage copies, installs
# it in a fresh venv and migrates an empty database with it.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY libs ./libs
COPY services ./services
COPY app ./app
# libs/db/migrations is a symlink to ../../migrations (COPY keeps links as links): copy both.
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GHOSTLY_HOST=0.0.0.0 \
    GHOSTLY_DATA_DIR=/data GHOSTLY_STORE_DIR=/data/c3d-store GHOSTLY_CACHE_DIR=/data/signal-cache
COPY --from=build /wheels /tmp/wheels
# The image build fails if the installed package cannot find its migrations (discover() raises).
RUN pip install --no-cache-dir /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && python -c "from libs.db.migrate import discover; print(len(discover()), 'migrations installed')" \
    && useradd --system --uid 10001 ghostly \
    && mkdir -p /data/c3d-store /data/signal-cache && chown -R ghostly /data
# (An empty named volume mounted on /data/* takes this ownership: writable by uid 10001.)
# An empty, root-owned working directory: `python -m app.healthcheck` puts it on sys.path.
WORKDIR /app
USER ghostly
EXPOSE 50051 50052 50053 50054
CMD ["ghostly", "status"]
