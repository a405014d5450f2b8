"""The polling-policy table: requests made and completion noticed how late, by simulation.

Each policy is a sequence of waits; the poller starts when the prediction is submitted
(t = 0), waits, polls, and stops at the first poll at or after the prediction's end. The
request's own round trip is left out (it adds the same to every policy). Our adaptive
policy is :class:`PollSchedule` itself (1 s, 2 s, 4 s, then ``poll_interval``, each with
its +-10 % jitter). A prediction "of 10 s" lasts 10 s +-10 % (uniform), so no policy
gains from a duration that falls exactly on its grid; figures are means over many draws
(the same durations for every policy) and the worst draw.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from airflow_provider_wavespeed.api.polling import PollSchedule

DURATIONS = (2.0, 10.0, 60.0, 300.0)
DRAWS = 2000


@dataclass(frozen=True)
class Policy:
    name: str
    interval: Callable[[int], float]  # wait before poll number n (0-based)
    jittered: bool


def policies() -> list[Policy]:
    adaptive = PollSchedule(poll_interval=5.0)
    adaptive_2s = PollSchedule(poll_interval=2.0)
    return [
        Policy("adaptive 1-2-4-5 s (ours, default poll_interval=5)", adaptive.interval, True),
        Policy("adaptive 1-2 s (ours, poll_interval=2)", adaptive_2s.interval, True),
        Policy("fixed 1 s (official SDK)", lambda n: 1.0, False),
        Policy("fixed 2 s (n8n)", lambda n: 2.0, False),
    ]


def simulate(policy: Policy, duration: float) -> tuple[int, float]:
    """(requests, seconds from completion to the poll that saw it) for one draw."""
    t, polls = 0.0, 0
    while True:
        t += policy.interval(polls)
        polls += 1
        if t >= duration:
            return polls, t - duration


def table(draws: int = DRAWS, seed: int = 5) -> list[dict[str, object]]:
    random.seed(seed)  # PollSchedule's jitter draws from the module RNG too
    rows = []
    for duration in DURATIONS:
        lasting = [duration * random.uniform(0.9, 1.1) for _ in range(draws)]
        for policy in policies():
            samples = [simulate(policy, d) for d in lasting]
            requests = [s[0] for s in samples]
            delays = [s[1] for s in samples]
            rows.append(
                {
                    "policy": policy.name,
                    "duration_s": duration,
                    "requests_mean": sum(requests) / len(requests),
                    "delay_mean_s": sum(delays) / len(delays),
                    "delay_max_s": max(delays),
                }
            )
    return rows
