"""Runs whenever ``wavespeed_assets_producer`` has stored new images (scheduled on its Asset).

The asset events that triggered the run carry ``prediction_id``, ``model`` and
``stored_paths`` in their extra; this DAG lists every new file with its size (the place to
publish, review or post-process them). Triggered by hand instead, it takes the events of
the producer's latest run.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, ObjectStoragePath, task

GENERATED_IMAGES = Asset(name="wavespeed_generated_images", uri="wavespeed://generated-images")


def _size(path: str) -> int:
    """Bytes of a stored file: a local path or an object-store URL."""
    if "://" in path:
        return int(ObjectStoragePath(path).stat().st_size)
    return os.path.getsize(path)


with DAG(
    dag_id="wavespeed_assets_consumer",
    schedule=[GENERATED_IMAGES],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["wavespeed", "example"],
) as dag:

    @task(inlets=[GENERATED_IMAGES])
    def collect_new_images(triggering_asset_events: Any = None, inlet_events: Any = None) -> list[dict[str, Any]]:
        """One entry per stored image of the generations that triggered this run."""
        events = list(triggering_asset_events.get(GENERATED_IMAGES, [])) if triggering_asset_events else []
        if not events and inlet_events is not None:  # a manual run: the producer's latest run
            history = list(inlet_events[GENERATED_IMAGES])
            if history:
                latest_run = history[-1].source_run_id
                events = [event for event in history if event.source_run_id == latest_run]
        images = [
            {
                "prediction_id": event.extra["prediction_id"],
                "model": event.extra["model"],
                "path": path,
                "bytes": _size(path),
            }
            for event in events
            for path in event.extra.get("stored_paths", [])
        ]
        for image in images:  # stand-in for the next step: publish, review, resize...
            print(f"{image['prediction_id']} ({image['model']}): {image['path']}, {image['bytes']} bytes")
        print(f"{len(images)} new image(s) from {len(events)} generation(s)")
        return images

    collect_new_images()
