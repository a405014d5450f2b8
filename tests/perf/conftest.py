from perf_helpers import connects

__all__ = ["connects"]
