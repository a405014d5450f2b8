"""The defaults of the Airflow-free client and of the connection, each defined once.

Here: requests (timeouts, retries, the answer size cap), polling, the pool, the submission budget and
the account tiers, webhooks, and copying outputs; the operators and the sensor take their waits' defaults
from here too. An operator's other parameters keep their defaults in its signature, and constants that are
no setting (the API's own limits, a file format's version) live beside the code that obeys them.
Light imports only: the provider-info entry point reads this module in every Airflow process.
"""

from __future__ import annotations

from airflow_provider_wavespeed import __version__

# Who is calling, under the header names WaveSpeed's own SDKs use (the official Python SDK sends
# X-Client-Name and X-Client-Version on every request): WaveSpeed can tell this provider's traffic apart.
CLIENT_HEADERS = {"X-Client-Name": "airflow-provider-wavespeed", "X-Client-Version": __version__}

DEFAULT_BASE_URL = "https://api.wavespeed.ai"

# Seconds one HTTP request may take (per read: a slow but moving answer is not cut off).
DEFAULT_REQUEST_TIMEOUT = 30.0

# One request's retries (RetryPolicy): other failures and 429s are counted apart (about 45-90 s of
# growing waits before a 429 gives up), and the jittered backoff's first and largest wait, in seconds.
DEFAULT_MAX_RETRIES = 4
DEFAULT_RATE_LIMIT_RETRIES = 8
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_MAX = 30.0

# Waiting for a prediction: the longest gap between polls (the API asks for no faster than 2 s
# for images and 5 s for video), the first poll's delay, and the whole wait's limit (what
# WaveSpeed integrations use).
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_FIRST_POLL_INTERVAL = 1.0
DEFAULT_WAIT_TIMEOUT = 1800.0
# Each poll's delay is spread by this fraction (+-10 %): thousands of waits deferred together do not poll together.
DEFAULT_POLL_JITTER = 0.1
# A trigger ends its wait itself at the deadline; Airflow's own deferral timeout is a backstop
# for a trigger that never reports (a lost triggerer), so it comes this much later.
DEFERRAL_GRACE = 60.0

# The shared pool: the connections (and requests in flight) a triggerer's shared client of one connection
# id holds, and so the requests one wait or batch sends at once (its reads, cancels and price requests:
# more would only queue in the pool). 16 connections carry about 80 polls/s at round trips up to ~190 ms;
# on loopback thousands per second (docs/benchmarks.md).
POOL_SIZE = 16
# An async client given no session and no max_in_flight opens its own, with at most this many connections
# (aiohttp's own default): a one-off client (the hook's aget_prediction) or a user's, never the shared pool.
OWN_SESSION_MAX_CONNECTIONS = 100
# How long a request may wait for a pooled connection and connect (aiohttp's ``connect`` timeout, which
# includes the TCP/TLS connect, itself bounded by the request timeout).
POOL_TIMEOUT = 120.0

# The account levels' start rates ("Account Levels & Rate Limits"): generations started per minute.
# The tiers also cap concurrent tasks, which the API queues itself; they say nothing about result polls.
ACCOUNT_TIERS: dict[str, int] = {"bronze": 2, "silver": 500, "gold": 3000, "ultra": 5000}
# With no tier chosen: the Silver tier's start rate. A smaller account's 429s halve it (AIMD) and
# pause every submit for Retry-After; a batch then sends its refused inputs again (nothing was created).
DEFAULT_MAX_SUBMISSIONS_PER_MINUTE = 500.0

# Copying outputs (storage): one output file may be at most this large (5 times the API's largest
# media, video 100 MB), and its download, retries included, must end within this many seconds.
DEFAULT_MAX_OUTPUT_BYTES = 500_000_000
DEFAULT_OUTPUT_DOWNLOAD_TIMEOUT = 900.0
# One download request's (connect, read) seconds; the read timeout is per chunk, so long videos are not
# cut off. Outputs stream through a buffer of this many bytes (1 MiB): never held whole in memory.
DEFAULT_DOWNLOAD_REQUEST_TIMEOUT = (10.0, 60.0)
DEFAULT_DOWNLOAD_CHUNK_SIZE = 1 << 20

# Webhooks: deliveries older (or as far in the future) than this many seconds are refused as replays.
DEFAULT_WEBHOOK_TOLERANCE = 300.0

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
