FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY shared ./shared
COPY orchestrator_api ./orchestrator_api
COPY orchestrator_worker ./orchestrator_worker
COPY orchestrator_client ./orchestrator_client
COPY orchestrator_cli ./orchestrator_cli
RUN pip install --no-cache-dir .
COPY alembic.ini gunicorn.conf.py gunicorn_gateway.conf.py Procfile ./
COPY migrations ./migrations
RUN useradd --create-home orchestrator
USER orchestrator
EXPOSE 8000 5555
CMD ["gunicorn", "orchestrator_api.wsgi:app", "--config", "gunicorn.conf.py", "--bind", "0.0.0.0:8000"]
