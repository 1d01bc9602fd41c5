"""Airflow DAG example: the Lepton Spark nightly job with SparkSubmitOperator.

Copy into your DAGs folder; needs ``apache-airflow-providers-apache-spark`` (not a Lepton Spark
dependency). The job exits non-zero on any failure, so Airflow's retries and alerts work unchanged;
a retry of the same date resumes the interrupted run (same run id).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

WHEEL = "/opt/lepton/dist/lepton_spark-0.1.0-py3-none-any.whl"
JOB = "/opt/lepton/jobs/nightly.py"

with DAG(
    dag_id="lepton_spark_nightly",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["lepton-spark"],
) as dag:
    nightly = SparkSubmitOperator(
        task_id="nightly",
        conn_id="spark_default",
        application=JOB,
        py_files=WHEEL,
        application_args=["--config", "/opt/lepton/conf/cluster.yaml", "--run-date", "{{ ds }}"],
        conf={"spark.sql.shuffle.partitions": "64"},
        name="lepton-spark-nightly-{{ ds }}",
    )
