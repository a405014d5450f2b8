"""Example DAGs of the WaveSpeed provider (shipped in the wheel; point a dags folder at this directory)."""
