# The extraction service with the offline OCR backend: no GPU, no model download, ready in seconds.
#   docker build -t invoice-vlm .
#   docker run --rm -p 8000:8000 -v "$PWD/reviews:/reviews" invoice-vlm
# For a fine-tuned PaliGemma, install the paligemma extra too (on a CUDA base image for a GPU) and serve with
# --model /models/your-run (mounted read-only).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install '.[ocr,serve]' && mkdir /reviews && chown app /reviews
USER app
EXPOSE 8000
CMD ["invoice-vlm", "serve", "--backend", "ocr", "--schema", "pallet_label", "--host", "0.0.0.0", "--port", "8000", \
     "--review-dir", "/reviews", "--no-progress"]
