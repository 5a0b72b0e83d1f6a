# The project image for docker-compose.yaml: Airflow 3 + Java (for Spark) + what Airflow
# and the local backend's jobs run (requirements/airflow.txt, which includes
# spark_jobs/requirements.txt), installed at build time (never at container start).
# No test or development tool: those are requirements/dev.txt.
#   docker compose build
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends default-jre-headless procps \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/default-java

USER airflow
COPY --chown=airflow:root constraints.txt /opt/fruits/
COPY --chown=airflow:root requirements/airflow.txt /opt/fruits/requirements/
COPY --chown=airflow:root requirements/convert.txt /opt/fruits/requirements/
COPY --chown=airflow:root spark_jobs/requirements.txt /opt/fruits/spark_jobs/
RUN pip install --no-cache-dir -r /opt/fruits/requirements/airflow.txt -c /opt/fruits/constraints.txt
