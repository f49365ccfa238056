"""`python -m proxy_runtime run --config FILE`: the proxy without the meshcd CLI around it."""

from proxy_runtime.cli import proxy

proxy()
