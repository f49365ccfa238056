"""`make demo`: a local meshcd with a bare repo, sample apps and managed proxies."""
