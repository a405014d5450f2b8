"""Example DAGs of the WaveSpeed provider, shipped in the wheel (the README's "The example DAGs").

With ``load_examples`` on, version 3.3 loads this folder as a DAG bundle; to change an example,
copy it into your dags folder and give the copy its own ``dag_id``.
"""
