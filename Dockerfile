# newsq worker image: one image, the command picks the role (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
RUN pip install -r requirements.lock
COPY config ./config
COPY tasks ./tasks
COPY workers ./workers
COPY newsq ./newsq
RUN pip install --no-deps . && useradd --system --uid 10001 newsq
USER newsq
ENTRYPOINT ["newsq"]
CMD ["worker"]
