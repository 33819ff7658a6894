"""Configuration: defaults, parsing, validation, immutability."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from server.__main__ import loop_factory, main
from server.config import Config, ConfigError

pytestmark = pytest.mark.unit


def test_defaults():
    """An empty environment gives the documented defaults."""
    config = Config.from_env({})
    assert (config.host, config.port) == ("0.0.0.0", 3000)
    assert config.max_size == 1_048_576
    assert (config.ping_interval, config.ping_timeout) == (20.0, 20.0)
    assert config.shutdown_timeout == 10.0 and config.close_timeout == 5.0
    assert config.max_connections == 10_000
    assert config.allowed_origins == () and config.trusted_proxies == ()
    assert config.max_messages_per_second == 0
    assert config.compression is False and config.log_messages is True
    assert (config.log_format, config.log_level, config.event_loop) == ("json", "INFO", "auto")
    assert config.workers == 1
    assert config.max_queue == 4


def test_every_variable_is_read():
    """Each variable feeds the field of the same meaning, normalized."""
    config = Config.from_env(
        {
            "WS_HOST": " 127.0.0.1 ",
            "WS_PORT": "8080",
            "WS_MAX_MESSAGE_BYTES": "2048",
            "WS_PING_INTERVAL": "1.5",
            "WS_PING_TIMEOUT": "0.5",
            "WS_SHUTDOWN_TIMEOUT": "4",
            "WS_MAX_CONNECTIONS": "7",
            "WS_ALLOWED_ORIGINS": "https://A.example/, http://b.example:8080,null",
            "WS_MAX_MESSAGES_PER_SECOND": "2.5",
            "WS_COMPRESSION": "ON",
            "WS_LOG_MESSAGES": "no",
            "WS_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1, fd00::/8",
            "LOG_FORMAT": "TEXT",
            "LOG_LEVEL": "debug",
            "WS_EVENT_LOOP": "AsyncIO",
            "WS_WORKERS": "3",
            "WS_MAX_QUEUE": "32",
        }
    )
    assert (config.host, config.port, config.max_size) == ("127.0.0.1", 8080, 2048)
    assert (config.ping_interval, config.ping_timeout, config.shutdown_timeout) == (1.5, 0.5, 4.0)
    assert config.close_timeout == 2.0
    assert config.max_connections == 7 and config.max_messages_per_second == 2.5
    assert config.allowed_origins == ("https://a.example", "http://b.example:8080", "null")
    assert config.compression is True and config.log_messages is False
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.1/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert (config.log_format, config.log_level, config.event_loop) == ("text", "DEBUG", "asyncio")
    assert config.workers == 3 and config.max_queue == 32
    summary = config.summary()
    assert summary["trusted_proxies"] == ["10.0.0.0/8", "192.168.1.1/32", "fd00::/8"]
    assert summary["allowed_origins"] == list(config.allowed_origins)


@pytest.mark.parametrize("word", ["true", "1", "yes", "on", "TRUE", " On "])
def test_true_words(word):
    """Booleans accept true/1/yes/on in any case."""
    assert Config.from_env({"WS_COMPRESSION": word}).compression is True


@pytest.mark.parametrize("word", ["false", "0", "no", "off", "False"])
def test_false_words(word):
    """Booleans accept false/0/no/off in any case."""
    assert Config.from_env({"WS_LOG_MESSAGES": word}).log_messages is False


def test_empty_values_mean_default():
    """An empty or blank value counts as unset."""
    assert Config.from_env({"WS_PORT": "", "WS_ALLOWED_ORIGINS": " ", "LOG_LEVEL": ""}) == Config()


def test_open_timeout_stays_below_the_drain_budget():
    """WS_OPEN_TIMEOUT defaults to 5 s, or half a shorter WS_SHUTDOWN_TIMEOUT; never above it."""
    assert Config.from_env({}).open_timeout == 5.0
    assert Config.from_env({"WS_SHUTDOWN_TIMEOUT": "4"}).open_timeout == 2.0
    assert Config.from_env({"WS_OPEN_TIMEOUT": "1.5"}).open_timeout == 1.5
    with pytest.raises(
        ConfigError, match=r"WS_OPEN_TIMEOUT='12\.0' is not below WS_SHUTDOWN_TIMEOUT"
    ):
        Config.from_env({"WS_OPEN_TIMEOUT": "12"})


def test_star_origin_means_any():
    """WS_ALLOWED_ORIGINS=* is the same as unset: any origin."""
    assert Config.from_env({"WS_ALLOWED_ORIGINS": "*"}).allowed_origins == ()
    assert Config.from_env({"WS_ALLOWED_ORIGINS": " * , "}).allowed_origins == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WS_PORT": "abc"}, "WS_PORT='abc' is not an integer; allowed: 0-65535"),
        ({"WS_PORT": "3.5"}, "WS_PORT='3.5' is not an integer"),
        ({"WS_PORT": "-1"}, "WS_PORT='-1' is out of range; allowed: 0-65535"),
        (
            {"WS_MAX_MESSAGE_BYTES": "0"},
            "WS_MAX_MESSAGE_BYTES='0' is out of range; allowed: 1-67108864",
        ),
        ({"WS_PING_INTERVAL": "soon"}, "WS_PING_INTERVAL='soon' is not a number"),
        ({"WS_PING_INTERVAL": "inf"}, "WS_PING_INTERVAL='inf' is not a finite number"),
        ({"WS_PING_TIMEOUT": "0"}, "WS_PING_TIMEOUT='0' is out of range"),
        ({"WS_SHUTDOWN_TIMEOUT": "0"}, "WS_SHUTDOWN_TIMEOUT='0' is out of range"),
        ({"WS_MAX_CONNECTIONS": "0"}, "WS_MAX_CONNECTIONS='0' is out of range"),
        ({"WS_MAX_MESSAGES_PER_SECOND": "-5"}, "WS_MAX_MESSAGES_PER_SECOND='-5' is out of range"),
        (
            {"WS_COMPRESSION": "sometimes"},
            "WS_COMPRESSION='sometimes' is not a boolean; allowed: true, false",
        ),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is unknown; allowed: json, text"),
        (
            {"LOG_LEVEL": "TRACE"},
            "LOG_LEVEL='TRACE' is unknown; allowed: DEBUG, INFO, WARNING, ERROR",
        ),
        (
            {"WS_EVENT_LOOP": "trio"},
            "WS_EVENT_LOOP='trio' is unknown; allowed: auto, asyncio, uvloop",
        ),
        ({"WS_WORKERS": "0"}, "WS_WORKERS='0' is out of range; allowed: 1-256"),
        ({"WS_MAX_QUEUE": "0"}, "WS_MAX_QUEUE='0' is out of range; allowed: 1-1024 frames"),
        ({"WS_WORKERS": "2", "WS_PORT": "0"}, "WS_WORKERS='2' needs a fixed WS_PORT, not 0"),
        ({"WS_HOST": "a b"}, "WS_HOST='a b' is not a host"),
        ({"WS_HOST": "no.such.host.invalid"}, "WS_HOST='no.such.host.invalid' does not resolve"),
        ({"WS_PORT": "3_000"}, "WS_PORT='3_000' is not an integer; allowed: 0-65535"),
        (
            {"WS_PORT": "\u0663\u0660\u0660\u0660"},
            "WS_PORT='\u0663\u0660\u0660\u0660' is not an integer",
        ),
        ({"WS_MAX_QUEUE": "\uff18"}, "WS_MAX_QUEUE='\uff18' is not an integer"),
        ({"WS_PING_INTERVAL": "1_0.5"}, "WS_PING_INTERVAL='1_0.5' is not a number"),
        ({"WS_PING_TIMEOUT": "\u0665"}, "WS_PING_TIMEOUT='\u0665' is not a number"),
        (
            {"WS_ALLOWED_ORIGINS": "https://a.com,*"},
            "WS_ALLOWED_ORIGINS='https://a.com,*' mixes * with origins",
        ),
        (
            {"WS_ALLOWED_ORIGINS": "example.com"},
            "WS_ALLOWED_ORIGINS='example.com' contains 'example.com', which is not an origin",
        ),
        (
            {"WS_TRUSTED_PROXIES": "10.0.0.0/8,proxy"},
            "WS_TRUSTED_PROXIES='10.0.0.0/8,proxy' contains 'proxy', "
            "which is not an IP address or CIDR",
        ),
    ],
)
def test_bad_values_name_variable_value_and_allowed(env, message):
    """Each bad value raises ConfigError with one line: variable, value, what is allowed."""
    with pytest.raises(ConfigError) as raised:
        Config.from_env(env)
    text = str(raised.value)
    assert text.startswith(message)
    assert "\n" not in text and "; allowed: " in text
    assert raised.value.variable == next(iter(env))


def test_validation_also_guards_direct_construction():
    """Config(...) and replace() validate too."""
    with pytest.raises(ConfigError, match="WS_PORT=70000 is out of range"):
        Config(port=70000)
    with pytest.raises(ConfigError, match="LOG_LEVEL='LOUD' is unknown"):
        Config().replace(log_level="LOUD")
    with pytest.raises(ConfigError, match="LOG_FORMAT='xml'"):
        Config(log_format="xml")
    with pytest.raises(ConfigError, match="WS_EVENT_LOOP='x'"):
        Config(event_loop="x")
    assert Config().replace(port=1).port == 1


def test_config_is_immutable():
    """The configuration cannot change after start."""
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_uvloop_requested_but_missing(monkeypatch: pytest.MonkeyPatch):
    """WS_EVENT_LOOP=uvloop without uvloop installed is a configuration error."""
    monkeypatch.setattr("server.config.uvloop_available", lambda: False)
    with pytest.raises(ConfigError, match="WS_EVENT_LOOP='uvloop' is not available"):
        Config.from_env({"WS_EVENT_LOOP": "uvloop"})


def test_main_returns_2_and_prints_one_line(capsys: pytest.CaptureFixture[str]):
    """main() turns a ConfigError into exit status 2 and one stderr line."""
    assert main({"WS_PORT": "x"}) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "configuration error: WS_PORT='x' is not an integer; "
        "allowed: 0-65535 (0 picks a free port)\n"
    )
    assert captured.out == ""


def test_loop_factory_choices():
    """asyncio means the default loop; auto and uvloop pick uvloop when installed."""
    import uvloop

    assert loop_factory("asyncio") is None
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop


@pytest.mark.parametrize(
    ("raw", "size"),
    [("512MiB", 512 * 2**20), ("1g", 2**30), ("1.5 GiB", 3 * 2**29), ("2097152", 2**21)],
)
def test_memory_budget_takes_sizes(raw: str, size: int):
    """WS_MEMORY_BUDGET reads a number of bytes with an optional binary unit."""
    assert Config.from_env({"WS_MEMORY_BUDGET": raw}).memory_budget == size


@pytest.mark.parametrize("raw", ["lots", "100", "2 PiB", "-1MiB", "1_000MiB"])
def test_memory_budget_rejects_what_is_not_a_size_in_range(raw: str):
    """A word, a size under 1 MiB or over 1 TiB, or a negative one exits with its range."""
    with pytest.raises(ConfigError, match=r"WS_MEMORY_BUDGET=.*allowed: a size from 1MiB to 1TiB"):
        Config.from_env({"WS_MEMORY_BUDGET": raw})


def test_memory_budget_defaults_to_a_share_of_the_cgroup_limit(monkeypatch):
    """With a cgroup limit, 60% of it for the container; without one, 1 GiB per process."""
    from server import memory_usage

    limited = memory_usage.CGROUP_V1
    monkeypatch.setattr(memory_usage, "limited_cgroup", lambda: limited)
    monkeypatch.setattr(memory_usage, "cgroup_limit", lambda files: 2**30 if files else None)
    two_workers = Config.from_env({"WS_WORKERS": "2", "WS_PORT": "3000"})
    assert two_workers.memory_budget == int(0.6 * 2**30)  # all workers see one cgroup
    monkeypatch.setattr(memory_usage, "limited_cgroup", lambda: None)
    assert Config.from_env({}).memory_budget == 2**30
    assert Config.from_env({"WS_WORKERS": "4", "WS_PORT": "3000"}).memory_budget == 2**28
