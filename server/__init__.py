"""websocket-gateway: an asyncio WebSocket echo server (``python -m server``).

Public API: :class:`server.config.Config`, :class:`server.app.Gateway`, :func:`server.app.run`.
"""

from .app import Gateway, run
from .config import Config, ConfigError

__all__ = ["Config", "ConfigError", "Gateway", "run"]
