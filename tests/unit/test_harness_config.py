"""The harness's configuration: defaults, parsing, and one clear error for a bad value."""

from __future__ import annotations

import pytest

from stack.harness_config import HarnessConfig, HarnessConfigError


def test_defaults_when_nothing_is_set() -> None:
    """An empty environment (or empty values) gives the documented defaults."""
    config = HarnessConfig.from_env({"CI": "", "WSGW_TIMEOUT_UNIT": " "})
    assert config == HarnessConfig()
    assert (config.timeout_unit, config.ci, config.chromium_binary) == (1.0, False, "chromium")


def test_values_are_parsed_into_their_types() -> None:
    """Numbers, booleans, lists and the base-image overrides come out typed."""
    config = HarnessConfig.from_env(
        {
            "WSGW_TIMEOUT_UNIT": "2.5",
            "CI": "true",
            "WSGW_PULL_BASE_IMAGES": "1",
            "COMPOSE_PROFILES": "observability, other",
            "SERVER_NOFILE": "4096",
            "NGINX_BASE_IMAGE": "nginx:mine",
            "UNRELATED": "x",
        }
    )
    assert config.timeout_unit == 2.5 and config.ci and config.pull_base_images
    assert config.compose_profiles == ("observability", "other")
    assert config.server_nofile == 4096 and config.nginx_nofile is None
    assert dict(config.base_images) == {"NGINX_BASE_IMAGE": "nginx:mine"}


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("WSGW_TIMEOUT_UNIT", "0", "0.01-1000"),
        ("WSGW_TIMEOUT_UNIT", "fast", "0.01-1000"),
        ("CI", "maybe", "true, false"),
        ("COVERAGE_MIN", "101", "0-100"),
        ("SERVER_NOFILE", "-1", "1-1073741816"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_is_allowed(
    variable: str, value: str, allowed: str
) -> None:
    """One line: the variable, its value, the allowed range."""
    with pytest.raises(HarnessConfigError) as error:
        HarnessConfig.from_env({variable: value})
    assert str(error.value).startswith(f"{variable}={value!r} is not valid")
    assert allowed in str(error.value)


def test_a_missing_prerequisite_fails_in_ci_and_skips_elsewhere() -> None:
    """unavailable(): pytest's fail in CI, its skip otherwise, both naming what is missing."""
    with pytest.raises(pytest.fail.Exception, match="CI needs Docker: not running"):
        HarnessConfig(ci=True).unavailable("Docker", "not running")
    with pytest.raises(pytest.skip.Exception, match="no Docker here: not running"):
        HarnessConfig(ci=False).unavailable("Docker", "not running")
