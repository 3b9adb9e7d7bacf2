# Huitou (回头客): the web app (gunicorn) or, with the argument "scheduler", the daily jobs.
#
#   docker build -t huitou .
#   docker run -d --name huitou -p 8000:8000 -e SECRET_KEY=... -v huitou-data:/data huitou
#   docker run -d --name huitou-scheduler -e SECRET_KEY=... -v huitou-data:/data huitou scheduler
#
# The app runs from /app, not from site-packages: templates/, migrations/ and tenants/
# (the industry presets) live next to the package, where saas/config.py's ROOT finds them.
FROM python:3.11-slim-bookworm

# WeasyPrint 62+ from wheels needs Pango (with its FreeType/fontconfig backend) and the
# HarfBuzz subsetter (WeasyPrint's "Debian ≥ 11" install notes); fonts-wqy-microhei gives
# the PDFs Chinese glyphs, fonts-dejavu-core the Latin fallback and symbols.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 \
      fontconfig fonts-wqy-microhei fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer: a code change does not reinstall them.
COPY pyproject.toml ./
RUN mkdir saas && touch saas/__init__.py \
 && pip install . \
 && pip uninstall -y huitou \
 && rm -rf saas build *.egg-info

COPY . .
# Compile the catalogs before installing, so the .mo files are in the package data too.
RUN pybabel compile -f -d saas/translations \
 && pip install --no-deps . \
 && rm -rf build *.egg-info \
 && chmod 0755 docker/entrypoint.sh docker/healthcheck.py

RUN groupadd --system --gid 10001 huitou \
 && useradd --system --uid 10001 --gid huitou --home-dir /home/huitou --create-home \
      --shell /usr/sbin/nologin huitou \
 && mkdir -p /data \
 && chown huitou:huitou /data

# Production: the app refuses to start without SECRET_KEY (pass it with -e SECRET_KEY=...).
# /app comes first on the path so the source tree, with its templates, is what is imported.
ENV HUITOU_ENV=production \
    DATABASE_URL=sqlite:////data/huitou.db \
    WEB_CONCURRENCY=2 \
    SCHEDULER_INTERVAL=3600 \
    PYTHONPATH=/app \
    FLASK_APP=wsgi

USER huitou
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/app/docker/healthcheck.py"]

ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["web"]
