"""Settings: TOML → environment → overrides; errors name the key and value; routing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.routing import Router
from gateway.settings import Secret, SettingsError


def test_defaults() -> None:
    s = load_settings(env={})
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8082)
    assert s.upstreams["default"].base_url == "https://api.openai.com/v1"
    assert s.upstreams["default"].api_key_env == "OPENAI_API_KEY"
    assert s.server.max_body_bytes == 32 * 1024 * 1024


def test_example_config_file_is_the_defaults() -> None:
    root = Path(__file__).resolve().parents[1]
    assert load_settings(root / "config" / "gateway.toml", env={}) == load_settings(env={})


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[models]\nbig = "file-big"\n')
    env = {
        "GATEWAY_PORT": "9100",
        "GATEWAY_BIG_MODEL": "env-big",
        "OPENAI_BASE_URL": "http://127.0.0.1:1234/v1",
        "GATEWAY_IDLE_TIMEOUT": "5",
    }
    s = load_settings(cfg, env=env)
    assert s.server.port == 9100
    assert s.server.host == "0.0.0.0"
    assert s.models.big == "env-big"
    assert s.upstreams["default"].base_url == "http://127.0.0.1:1234/v1"
    assert s.timeouts.idle == 5.0


def test_env_sets_the_client_bounds() -> None:
    env = {
        "GATEWAY_CLIENT_SEND_TIMEOUT": "2.5",
        "GATEWAY_CLIENT_BODY_TIMEOUT": "7",
        "GATEWAY_MAX_RECEIVING": "12",
    }
    s = load_settings(env=env)
    assert (s.timeouts.client_send, s.timeouts.client_body) == (2.5, 7.0)
    assert s.server.max_receiving == 12
    defaults = load_settings(env={})
    assert (defaults.timeouts.client_send, defaults.timeouts.client_body) == (30.0, 60.0)
    assert defaults.server.max_json_values == 1_000_000
    assert defaults.server.max_upstream_body_bytes == 64 * 1024 * 1024


def test_gateway_config_env_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text("[server]\nport = 9001\n")
    assert load_settings(env={"GATEWAY_CONFIG": str(cfg)}).server.port == 9001


def test_env_values_take_their_setting_type() -> None:
    s = load_settings(env={"GATEWAY_BIG_MODEL": "1234", "GATEWAY_MAX_IN_FLIGHT": " 7 "})
    assert s.models.big == "1234"
    assert s.server.max_in_flight == 7
    assert load_settings(env={"GATEWAY_MOCK": "0"}).mock is False
    assert load_settings(env={"GATEWAY_MOCK": "off"}).mock is False
    assert load_settings(env={"GATEWAY_MOCK": "TRUE"}).mock is True
    assert load_settings(env={"GATEWAY_HOST": "::1"}).server.host == "::1"


def test_cli_overrides_env() -> None:
    s = load_settings(env={"GATEWAY_PORT": "9100"}, overrides={("server", "port"): 9200})
    assert s.server.port == 9200


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        (
            "[server]\nport = 70000\n",
            {},
            "bad setting server.port = 70000: Expected `int` <= 65535",
        ),
        (
            "",
            {"GATEWAY_PORT": "http"},
            "bad environment variable GATEWAY_PORT='http': Expected `int`, got `str`",
        ),
        ("", {"GATEWAY_PORT": "70000"}, "GATEWAY_PORT='70000': Expected `int` <= 65535"),
        ("", {"GATEWAY_MOCK": "maybe"}, "GATEWAY_MOCK='maybe': expected 1/0, true/false"),
        (
            '[upstreams.local]\ndialect = "chatty"\n',
            {},
            "bad setting upstreams.local.dialect = 'chatty': Invalid enum value 'chatty'",
        ),
        (
            "[upstreams.local]\nmax_tokens_field = 5\n",
            {},
            "bad setting upstreams.local.max_tokens_field = 5: Expected `str`, got `int`",
        ),
        (
            "[upstreams.local]\nheaders = {api-key = 5}\n",
            {},
            "bad setting upstreams.local.headers.api-key = 5: expected a string",
        ),
        ("[upstreams.local]\nheaders = 5\n", {}, "bad setting upstreams.local.headers = 5"),
        ("[upstreams.local]\ncolour = 1\n", {}, "bad setting upstreams.local.colour: unknown key"),
        ("colour = 1\n", {}, "bad setting colour: unknown key"),
        ("[server]\nprot = 1\n", {}, "bad setting server.prot: unknown key"),
        (
            '[upstreams.default]\nbase_url = "ftp://x"\n',
            {},
            "bad setting upstreams.default.base_url = 'ftp://x': expected an http://",
        ),
        (
            '[[routes]]\nmatch = ["*"]\nmodel = "m"\nupstream = "nope"\n',
            {},
            "bad setting routes[0].upstream = 'nope': no such upstream (defined: default)",
        ),
        (
            '[[routes]]\nmatch = []\nmodel = "m"\n',
            {},
            "bad setting routes[0].match = []: Expected `array` of length >= 1",
        ),
        ("[server\n", {}, "is not valid TOML"),
    ],
)
def test_bad_settings_name_key_and_value(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(toml)
    with pytest.raises(SettingsError) as info:
        load_settings(cfg, env=env)
    assert message in str(info.value)


def test_missing_config_file() -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings("/nonexistent/gateway.toml", env={})


def test_bad_setting_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "messages-gateway: bad setting server.port = 99999: Expected `int` <= 65535"
    ]


def test_default_routes_by_tier() -> None:
    router = Router(load_settings(env={}), env={"OPENAI_API_KEY": "sk-x"})
    assert router.resolve("claude-haiku-5-5").upstream_model == "gpt-5-mini"
    assert router.resolve("claude-sonnet-5-5").upstream_model == "gpt-5"
    assert router.resolve("claude-opus-5-5").upstream_model == "gpt-5"
    assert router.resolve("something-else").upstream_model == "gpt-5"
    assert router.resolve("CLAUDE-3-HAIKU").upstream_model == "gpt-5-mini"


def test_configured_routes_exact_then_glob(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        '[[routes]]\nmatch = ["claude-opus-5-5"]\nmodel = "o-exact"\nmax_output_tokens = 32000\n'
        '[[routes]]\nmatch = ["claude-*"]\nmodel = "small"\n'
    )
    router = Router(load_settings(cfg, env={}), env={})
    opus = router.resolve("claude-opus-5-5")
    assert (opus.upstream_model, opus.max_output_tokens) == ("o-exact", 32000)
    assert router.resolve("claude-sonnet-5-5").upstream_model == "gpt-5-mini"
    from gateway.errors import NotFoundError

    with pytest.raises(NotFoundError):
        router.resolve("gpt-4o")


def test_route_key_never_in_repr() -> None:
    router = Router(load_settings(env={}), env={"OPENAI_API_KEY": "sk-secret-abcdef"})
    route = router.resolve("claude-opus-5-5")
    assert isinstance(route.api_key, Secret)
    assert route.api_key == "sk-secret-abcdef"
    assert "sk-secret" not in repr(route)
    assert "sk-secret" not in repr(route.api_key)
