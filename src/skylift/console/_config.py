"""The console's settings, checked before it binds: loopback by default, keys required elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skylift.errors import SpecError
from skylift.network import is_loopback


@dataclass(frozen=True)
class ConsoleConfig:
    """What `skylift console` serves and how."""

    home: Path
    """The SKYLIFT_HOME whose runs, studies, models and endpoints are shown."""
    host: str = "127.0.0.1"
    """Address to bind; anything but loopback needs API keys."""
    port: int = 8080
    require_key: bool = False
    """Ask for an API key (a login page) on loopback too; always on for other addresses."""
    keys_path: Path | None = None
    """API key store (default: SKYLIFT_HOME/keys.json or $SKYLIFT_API_KEYS_FILE)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    key_file: str | None = None
    """Registry master key file, to verify encrypted models fully (default: $SKYLIFT_MASTER_KEY)."""

    @property
    def keys(self) -> Path:
        from skylift.security.apikeys import keys_file

        return self.keys_path or keys_file(self.home)

    @property
    def login(self) -> bool:
        """Whether pages need a signed-in API key."""
        return self.require_key or not is_loopback(self.host)

    def check(self) -> None:
        """Raise SpecError on settings that cannot work or would expose the home."""
        if not 0 <= self.port <= 65535:
            raise SpecError(f"--port must be 0-65535, got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SpecError("--tls-cert and --tls-key go together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise SpecError(f"{path}: TLS file not found")
        if not self.login:
            return
        from skylift.security.apikeys import KeyStore

        if not KeyStore(self.keys).usable():
            where = "--require-key" if is_loopback(self.host) else f"a non-loopback address ({self.host})"
            raise SpecError(
                f"{where} needs API keys and {self.keys} has none usable: create one with "
                "`skylift keys create --name NAME --scope predict,metrics,admin`"
            )
