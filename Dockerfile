# Gen Studio as a container: docker build -t gen-studio . && docker run -p 7860:7860 -v studio:/data gen-studio
# CPU torch by default; for CUDA: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_ANALYTICS_ENABLED=False \
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
RUN pip install ".[postgres]"

RUN mkdir -p /data/studio && chown -R studio:studio /data
USER studio
VOLUME ["/data"]
EXPOSE 7860
CMD ["studio", "serve"]
