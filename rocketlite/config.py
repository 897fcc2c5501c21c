"""Configuration: embedded defaults < --config TOML file < ROCKETLITE_* environment < flags.

Settings are sections of keys (see config/rocketlite.toml, the documented defaults; a copy ships
inside the package as ``default_config.toml``). Every key is reachable as
``ROCKETLITE_<SECTION>_<KEY>`` and ``--set section.key=value``; the common ones also have short
names (``--data-dir``, ``ROCKETLITE_DATA_DIR``, ...) listed in :data:`ALIASES`.
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _package_text(*parts: str) -> str:
    """A data file shipped inside the package (read directly: importlib.resources costs start-up time)."""
    with open(os.path.join(_PACKAGE_DIR, *parts), encoding="utf-8") as f:
        return f.read()

# short name -> (section, key); short names are the CLI flags (--data-dir) and env vars (ROCKETLITE_DATA_DIR)
ALIASES: dict[str, tuple[str, str]] = {
    "data_dir": ("storage", "data_dir"),
    "ephemeral": ("storage", "ephemeral"),
    "flush": ("storage", "flush"),
    "host": ("server", "host"),
    "advertised_host": ("server", "advertised_host"),
    "log_level": ("server", "log_level"),
    "log_format": ("server", "log_format"),
    "remoting_port": ("remoting", "port"),
    "broker_port": ("remoting", "broker_port"),
    "grpc_port": ("grpc", "port"),
    "mqtt_port": ("mqtt", "port"),
    "http_port": ("http", "port"),
}


def load_defaults() -> dict[str, dict[str, Any]]:
    return tomllib.loads(_package_text("default_config.toml"))


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        v = value.strip().lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


@dataclass
class Settings:
    data: dict[str, dict[str, Any]] = field(default_factory=load_defaults)
    profile: str = "default"
    generated_admin_token: bool = False

    def get(self, section: str, key: str, default: Any = None) -> Any:
        return self.data.get(section, {}).get(key, default)

    def set(self, section: str, key: str, value: Any) -> None:
        sec = self.data.setdefault(section, {})
        like = sec.get(key)
        if isinstance(value, str) and like is not None and not isinstance(like, str):
            value = _coerce(value, like)
        sec[key] = value

    def section(self, name: str) -> dict[str, Any]:
        return self.data.setdefault(name, {})

    def merge(self, other: Mapping[str, Mapping[str, Any]]) -> None:
        for sec, values in other.items():
            if not isinstance(values, Mapping):
                raise ValueError(f"config: [{sec}] must be a table")
            for k, v in values.items():
                self.set(sec, k, v)

    def apply_env(self, environ: Mapping[str, str]) -> None:
        for name, value in environ.items():
            if not name.startswith("ROCKETLITE_"):
                continue
            rest = name[len("ROCKETLITE_") :].lower()
            if rest in ALIASES:
                self.set(*ALIASES[rest], value)
                continue
            for sec in self.data:
                if rest.startswith(sec + "_") and rest[len(sec) + 1 :] in self.data[sec]:
                    self.set(sec, rest[len(sec) + 1 :], value)
                    break

    def copy(self) -> "Settings":
        return Settings(copy.deepcopy(self.data))

    # conveniences --------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return str(self.get("server", "host"))

    @property
    def advertised_host(self) -> str:
        adv = str(self.get("server", "advertised_host") or "")
        if adv:
            return adv
        h = self.host
        return "127.0.0.1" if h in ("", "0.0.0.0", "::") else h

    @property
    def data_dir(self) -> str | None:
        if self.get("storage", "ephemeral"):
            return None
        return str(self.get("storage", "data_dir"))

    def enabled(self, frontend: str) -> bool:
        return bool(self.get(frontend, "enabled", False))


PROFILES = ("default", "strict")


def load_profile(name: str) -> dict[str, dict[str, Any]]:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    if name == "default":
        return {}
    return tomllib.loads(_package_text("profiles", f"{name}.toml"))


def build_settings(
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    sets: list[str] | None = None,
    profile: str | None = None,
) -> Settings:
    """Defaults, then the profile, then the file, then the environment, then flags (``overrides`` by short name)."""
    s = Settings()
    env = os.environ if environ is None else environ
    profile = profile or env.get("ROCKETLITE_PROFILE") or "default"
    s.merge(load_profile(profile))
    s.profile = profile
    config_file = config_file or env.get("ROCKETLITE_CONFIG")
    if config_file:
        with open(config_file, "rb") as f:
            s.merge(tomllib.load(f))
    s.apply_env(env)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name in ALIASES:
            s.set(*ALIASES[name], value)
        elif "." in name:
            sec, key = name.split(".", 1)
            s.set(sec, key, value)
        else:
            raise KeyError(f"unknown setting {name}")
    for item in sets or []:
        dotted, _, value = item.partition("=")
        sec, _, key = dotted.partition(".")
        if not key:
            raise ValueError(f"--set wants section.key=value, got {item!r}")
        s.set(sec, key, value)
    if profile == "strict" and not s.get("http", "admin_token"):
        import secrets

        s.set("http", "admin_token", secrets.token_urlsafe(24))
        s.generated_admin_token = True
    flush = s.get("storage", "flush")
    if flush not in ("sync", "async"):
        raise ValueError(f"storage.flush must be sync or async, not {flush!r}")
    return s
