"""Airflow DAG: the CeleryExecutor's load run: 60 generations in one run; the test holds every
prediction running until all 60 sensors have deferred, then releases them. Smaller than the
LocalExecutor's 200 (which shows the scale); here the point is tasks spread over two Celery
workers, and CI time is shared."""

from deployment_dag_factory import add_generations, deployment_dag

with deployment_dag("wsdeploy_celery_load"):
    add_generations(60, poll_interval=5.0, timeout=3600.0)
