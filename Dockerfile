# The orchestrator and worker image for the production path (docker-compose.yml). The model
# is served by the NGC Triton image, so this image carries no model weights and no torch.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator orchestrator
COPY workers workers
COPY export export
COPY perf perf
RUN pip install --no-cache-dir .
ENV TRITONRAG_HOST=0.0.0.0
EXPOSE 8080
CMD ["uvicorn", "orchestrator.api.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8080"]
