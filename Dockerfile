# The project image for docker-compose.yaml: Airflow 3 + Java (for Spark) + the pinned
# requirements, installed at build time (never at container start).
#   docker compose build
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends default-jre-headless procps \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/default-java

USER airflow
COPY --chown=airflow:root requirements.txt constraints.txt /opt/fruits/
RUN pip install --no-cache-dir -r /opt/fruits/requirements.txt -c /opt/fruits/constraints.txt
