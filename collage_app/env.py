"""Parsing of the environment into settings values (12-factor), kept free of Django state so it
can be tested directly and so every bad value fails with a message naming the variable."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool, environ=os.environ) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no.")


def env_int(name: str, default: int, environ=os.environ) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None


def env_float(name: str, default: float, environ=os.environ) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None


def env_list(name: str, default: list[str], environ=os.environ) -> list[str]:
    raw = environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def var_dir(environ=os.environ) -> Path:
    """Where runtime state lives (SQLite file, local storage, generated secret key)."""
    return Path(environ.get("VAR_DIR") or BASE_DIR / "var")


SUPPORTED_DB_SCHEMES = ("sqlite", "postgres", "postgresql", "pgsql")


def database_config(url: str | None, default_sqlite: Path) -> dict:
    """DATABASE_URL -> Django DATABASES['default'].

    SQLite (the embedded default) runs in WAL mode with IMMEDIATE transactions so the web process
    and the RQ workers can write side by side; PostgreSQL is for several writers at scale."""
    if not url:
        url = f"sqlite:///{default_sqlite}"
    scheme = urlparse(url).scheme
    if scheme not in SUPPORTED_DB_SCHEMES:
        raise ImproperlyConfigured(
            f"DATABASE_URL={_redact(url)!r}: unsupported scheme {scheme!r}. Use "
            "postgres://user:password@host:5432/dbname or sqlite:////absolute/path/db.sqlite3."
        )
    try:
        config = dj_database_url.parse(url, conn_max_age=60)
    except Exception as exc:  # dj_database_url raises several types for malformed URLs
        raise ImproperlyConfigured(
            f"DATABASE_URL={_redact(url)!r} could not be parsed ({exc}). Expected e.g. "
            "postgres://user:password@host:5432/dbname."
        ) from None
    if config["ENGINE"].endswith("postgresql") and not config.get("NAME"):
        raise ImproperlyConfigured(
            f"DATABASE_URL={_redact(url)!r} names no database: add /dbname at the end."
        )
    if config["ENGINE"].endswith("sqlite3"):
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
            "PRAGMA busy_timeout=10000;",
            "transaction_mode": "IMMEDIATE",
        }
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    return config


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def secret_key(debug: bool, environ=os.environ, key_file: Path | None = None) -> str:
    """SECRET_KEY from the environment; in development one is generated once and kept in var/."""
    value = environ.get("SECRET_KEY", "").strip()
    if value:
        return value
    if not debug:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DEBUG is off: set it to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    key_file = key_file or var_dir(environ) / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(50)
    key_file.write_text(value)
    key_file.chmod(0o600)
    return value


def redis_url(environ=os.environ) -> str:
    url = environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if urlparse(url).scheme not in ("redis", "rediss", "unix"):
        raise ImproperlyConfigured(
            f"REDIS_URL={_redact(url)!r}: expected redis://host:port/db, rediss://... or "
            "unix:///path/to/redis.sock?db=0."
        )
    return url


def storage_url(environ=os.environ) -> str:
    return environ.get("STORAGE_URL") or str(var_dir(environ) / "storage")
