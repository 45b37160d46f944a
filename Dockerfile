# newsq worker image: one image, the command picks the role (see docker-compose.yml).
FROM python:3.11-slim

# MALLOC_ARENA_MAX=2: glibc's per-thread malloc arenas otherwise swell a threaded
# worker's memory (README, "Speed and how far one Redis goes")
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MALLOC_ARENA_MAX=2
WORKDIR /app
COPY requirements.lock pyproject.toml README.md LICENSE ./
RUN pip install -r requirements.lock
# pyproject.toml's package-dir installs these four folders as the one package, newsq;
# tests/test_compose.py builds the wheel from exactly what these lines copy
COPY newsq ./newsq
COPY config ./config
COPY tasks ./tasks
COPY workers ./workers
RUN pip install --no-deps . && rm -rf build ./*.egg-info \
    && useradd --system --uid 10001 newsq
USER newsq
ENTRYPOINT ["newsq"]
CMD ["worker"]
