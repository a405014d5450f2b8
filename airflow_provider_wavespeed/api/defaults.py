"""Every default the provider has, defined once (light imports only: the provider-info entry point reads it)."""

from __future__ import annotations

from airflow_provider_wavespeed import __version__

# Who is calling, under the header names WaveSpeed's own SDKs use (the official Python SDK sends
# X-Client-Name and X-Client-Version on every request): WaveSpeed can tell this provider's traffic apart.
CLIENT_HEADERS = {"X-Client-Name": "airflow-provider-wavespeed", "X-Client-Version": __version__}

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

# The account levels' start rates ("Account Levels & Rate Limits"): generations started per minute.
# The tiers also cap concurrent tasks, which the API queues itself; they say nothing about result polls.
ACCOUNT_TIERS: dict[str, int] = {"bronze": 2, "silver": 500, "gold": 3000, "ultra": 5000}
# With no tier chosen: the Silver tier's start rate. A smaller account's 429s halve it (AIMD) and
# pause every submit for Retry-After; a batch then sends its refused inputs again (nothing was created).
DEFAULT_MAX_SUBMISSIONS_PER_MINUTE = 500.0

# Copying outputs (storage.py): one output file may be at most this large (5 times the API's largest
# media, video 100 MB), and its download, retries included, must end within this many seconds.
DEFAULT_MAX_OUTPUT_BYTES = 500_000_000
DEFAULT_OUTPUT_DOWNLOAD_TIMEOUT = 900.0

# One request's patience: the longest Retry-After obeyed (past it the request gives up: the server asks
# for more than a worker should sit through; the tiers count starts per minute, so 60 s is the longest a
# busy minute asks), and the most one request waits between its attempts in all (one longest Retry-After
# and the backoff after it; 8 waits of 120 s made 16 minutes).
DEFAULT_RETRY_AFTER_MAX = 120.0
DEFAULT_TOTAL_WAIT_MAX = 180.0

# The largest API answer read (bytes); a larger one is refused, unread. The largest real answer is a
# prediction with base64 outputs: four 20 MB images (the API's image limit) are ~107 MB of base64, a
# 100 MB video (its video limit) ~134 MB. A history page of 100 entries with their inputs is a few MB.
MAX_ANSWER_BYTES = 256 * 1024 * 1024
