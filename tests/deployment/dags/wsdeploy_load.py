"""Airflow DAG: Load and secret audit: 200 generations in one run; the test holds every prediction
running until all 200 sensors have deferred, then releases them."""

from deployment_dag_factory import add_generations, deployment_dag

with deployment_dag("wsdeploy_load"):
    # The wait limit is a hang guard only: the hold lasts as long as a busy machine takes to defer all 200.
    add_generations(200, poll_interval=5.0, timeout=3600.0)
