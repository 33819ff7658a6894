"""The deployables of websocket-gateway: build, start, break and stop them.

One place knows how the server and NGINX images are built and run together:
tests use it through pytest fixtures, people through ``python -m stack``.
"""
