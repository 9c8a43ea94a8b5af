"""Who may connect: loopback without a token, any other address only with one.

trame's websocket (wslink) refuses a client whose first message does not carry the server's
secret; the page sends the ``secret`` query parameter of its URL. Bound to loopback the app
keeps wslink's default secret (only local users can reach it); bound beyond loopback it
needs a token, generated unless the user gives one, and prints the URL that carries it.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import quote

#: The secret trame's page sends when its URL has none (wslink's default).
TRAME_DEFAULT_SECRET = "wslink-secret"
#: Shortest token accepted from the user (a generated one has 32 URL-safe characters).
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only listens on this computer."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """Where the app listens and the secret a client must present."""

    host: str
    port: int
    token: str | None  # None: loopback with trame's default secret

    @property
    def secret(self) -> str:
        return self.token or TRAME_DEFAULT_SECRET

    def url(self, port: int | None = None) -> str:
        """The URL to open (with the token when one is needed)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        if host in ("0.0.0.0", "[::]"):
            host = socket.gethostname()
        query = f"?secret={quote(self.token)}" if self.token else ""
        return f"http://{host}:{port if port is not None else self.port}/{query}"


def access_for(host: str, port: int, token: str | None = None) -> Access:
    """The access rules for listening on ``host``:``port``; a ValueError for a token too short."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {port}")
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"--token must have at least {MIN_TOKEN_LENGTH} characters, got {len(token)}")
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    return Access(host, port, token)
