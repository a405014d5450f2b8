"""Apache Airflow provider for the WaveSpeedAI generation API."""

__version__ = "0.1.0"
