"""Canary analysis: the judge (pure), its statistics, and providers of its input (the
proxies' per-second stats windows, or Prometheus in `reconciler.analysis.prometheus`)."""

from reconciler.analysis.judge import Check, Outcome, Verdict, judge, summary, worst
from reconciler.analysis.sample import LATENCY_BUCKETS, BadWindow, Sample

__all__ = ["LATENCY_BUCKETS", "BadWindow", "Check", "Outcome", "Sample", "Verdict", "judge",
           "summary", "worst"]
