"""Airflow DAG: Garbage from the API: the emulator garbles its answers for one model per kind of garbage.

Polls of ``deploy-test/<kind>`` predictions get garbage (the sensor must fail), submits of
``deploy-test/submit-<kind>`` get garbage (the submit must fail); the clean generations
running at the same time must not notice.
"""

from deployment_dag_factory import add_generations, deployment_dag

POLL_GARBAGE = ("html", "truncated", "wrong_types", "missing_outputs")
SUBMIT_GARBAGE = ("html", "truncated")

with deployment_dag("wsdeploy_garbage"):
    for kind in POLL_GARBAGE:
        add_generations(2, group_id=f"poll_{kind}", model=f"deploy-test/{kind}", poll_interval=1.0)
    for kind in SUBMIT_GARBAGE:
        add_generations(1, group_id=f"submit_{kind}", model=f"deploy-test/submit-{kind}", poll_interval=1.0)
    add_generations(6, group_id="clean", poll_interval=1.0)
