"""Every default the provider has, defined once (no imports: the provider-info entry point reads it)."""

from __future__ import annotations

DEFAULT_BASE_URL = "https://api.wavespeed.ai"

# Seconds one HTTP request may take (per read: a slow but moving answer is not cut off).
DEFAULT_REQUEST_TIMEOUT = 30.0

# Waiting for a prediction: the longest gap between polls (the API asks for no faster than 2 s
# for images and 5 s for video), the first poll's delay, and the whole wait's limit (what
# WaveSpeed integrations use).
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_FIRST_POLL_INTERVAL = 1.0
DEFAULT_WAIT_TIMEOUT = 1800.0
# A trigger ends its wait itself at the deadline; Airflow's own deferral timeout is a backstop
# for a trigger that never reports (a lost triggerer), so it comes this much later.
DEFERRAL_GRACE = 60.0

# Connections (and requests in flight) a triggerer's shared client of one connection id holds, and
# so the reads one wait for many predictions sends at once. 16 connections carry about 80 polls/s
# at round trips up to ~190 ms; on loopback thousands per second (docs/benchmarks.md).
POOL_SIZE = 16

# The Silver tier's start rate. The tiers cap generations started per minute (and concurrent
# tasks, which the API queues itself); they say nothing about result polls.
DEFAULT_MAX_SUBMISSIONS_PER_MINUTE = 500.0
