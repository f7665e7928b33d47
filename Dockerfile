# Gen Studio as a container: docker build -t gen-studio . && docker run -p 7860:7860 -v studio:/data gen-studio
# CPU torch by default; for CUDA: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 and
# `docker run --gpus all ...`. PostgreSQL: -e STUDIO_DATABASE_URL=postgresql+psycopg2://user:pass@host/db
# (README "Running for a team"; compose.yaml runs both).
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    STUDIO_HOME=/data/studio \
    STUDIO_HOST=0.0.0.0 \
    STUDIO_PORT=7860

RUN useradd --create-home --uid 1000 studio
WORKDIR /app

# torch first and from the chosen index, so the CPU image does not carry CUDA libraries
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md studio_app.py ./
COPY studio ./studio
COPY assets ./assets
RUN pip install ".[postgres,oauth]"

RUN mkdir -p /data/studio && chown -R studio:studio /data
USER studio
VOLUME ["/data"]
EXPOSE 7860
# /health answers 503 when the database is unreachable, so Docker (and compose) see a sick studio.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/health', timeout=4)"
CMD ["studio", "serve"]
