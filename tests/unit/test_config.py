"""Configuration precedence: embedded defaults < --config file < ROCKETLITE_* env < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from rocketlite.cli import build_parser, settings_from_args
from rocketlite.config import build_settings


def test_shipped_defaults_match_the_documented_file() -> None:
    root = Path(__file__).resolve().parents[2]
    assert (root / "config" / "rocketlite.toml").read_text() == (root / "rocketlite" / "default_config.toml").read_text()


def test_defaults() -> None:
    s = build_settings(environ={})
    assert s.get("remoting", "port") == 9876
    assert s.get("grpc", "port") == 8081
    assert s.get("mqtt", "port") == 1883
    assert s.get("storage", "flush") == "async"
    assert s.data_dir == "./rocketlite-data"
    assert s.advertised_host == "127.0.0.1"


def test_precedence_file_env_flag(tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text('[mqtt]\nport = 1999\n[grpc]\nport = 7001\n[remoting]\nport = 7002\n')
    env = {"ROCKETLITE_MQTT_PORT": "2000", "ROCKETLITE_GRPC_PORT": "7003", "ROCKETLITE_STORAGE_FLUSH": "sync"}
    s = build_settings(config_file=str(cfg), environ=env, overrides={"mqtt_port": 2001})
    assert s.get("mqtt", "port") == 2001  # flag beats env beats file
    assert s.get("grpc", "port") == 7003  # env beats file
    assert s.get("remoting", "port") == 7002  # file beats default
    assert s.get("storage", "flush") == "sync"  # generic ROCKETLITE_<SECTION>_<KEY>


def test_env_booleans_and_ephemeral() -> None:
    s = build_settings(environ={"ROCKETLITE_EPHEMERAL": "true", "ROCKETLITE_GRPC_ENABLED": "0"})
    assert s.data_dir is None
    assert not s.enabled("grpc")


def test_bad_flush_is_refused() -> None:
    with pytest.raises(ValueError):
        build_settings(environ={"ROCKETLITE_FLUSH": "sometimes"})


def test_cli_flags_map_onto_settings() -> None:
    args = build_parser().parse_args(
        ["serve", "--data-dir", "/x", "--http-port", "0", "--advertised-host", "10.0.0.5", "--flush", "sync",
         "--disable", "mqtt", "--set", "broker.default_queue_count=8"]
    )
    s = settings_from_args(args)
    assert s.data_dir == "/x"
    assert s.get("http", "port") == 0
    assert s.advertised_host == "10.0.0.5"
    assert s.get("storage", "flush") == "sync"
    assert not s.enabled("mqtt")
    assert s.get("broker", "default_queue_count") == 8


def test_broker_section_reaches_broker_settings() -> None:
    from rocketlite.app import broker_settings

    s = build_settings(environ={"ROCKETLITE_BROKER_TRANSACTION_TIMEOUT_MS": "1500"})
    b = broker_settings(s)
    assert b.transaction_timeout_ms == 1500
    assert b.timer_max_delay_ms is None
    assert b.max_reconsume_times == 16
    assert b.retention_age_ms == 72 * 3600_000


def test_strict_profile_turns_security_on_and_auto_create_off() -> None:
    s = build_settings(environ={}, profile="strict")
    assert s.get("security", "enabled") is True
    assert s.get("broker", "auto_create_topics") is False
    assert s.get("http", "admin_token") and s.generated_admin_token
    # still overridable, like every key
    s2 = build_settings(environ={"ROCKETLITE_PROFILE": "strict", "ROCKETLITE_HTTP_ADMIN_TOKEN": "t0k"},
                        overrides={"broker.auto_create_topics": "true"})
    assert s2.profile == "strict"
    assert s2.get("http", "admin_token") == "t0k" and not s2.generated_admin_token
    assert s2.get("broker", "auto_create_topics") is True
    assert build_settings(environ={}).get("security", "enabled") is False


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError):
        build_settings(environ={}, profile="lax")
