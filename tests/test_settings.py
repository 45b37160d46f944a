"""Settings: the README's table is the declaration, and parsing keeps to it."""

from __future__ import annotations

import math
import random
import re
from dataclasses import fields
from pathlib import Path

import pytest

from newsq.config.settings import SETTINGS, AllowPrivate, Settings, SettingSpec
from newsq.errors import ConfigError

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SECTION = README.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
# | `NEWSQ_X` | meaning | default |   (the default cell holds no "|")
ROWS = re.findall(r"^\| `(NEWSQ_\w+)` \| (.*) \| ([^|]*) \|$", SECTION, re.M)
TABLE = {env: (meaning, default) for env, meaning, default in ROWS}

# Defaults the README words as prose, each beside the declared default it stands for,
# so a changed default fails here until its README cell (and this entry) follow.
PROSE: dict[str, tuple[object, str]] = {
    "NEWSQ_BROKER_URL": (None, "unset: `run`/`demo` start a private Redis"),
    "NEWSQ_STATE_URL": (None, "the broker's"),
    "NEWSQ_ALLOW_PRIVATE": (AllowPrivate(), "off"),
    "NEWSQ_WEBHOOK_ALLOW": (AllowPrivate(), "off"),
    "NEWSQ_HOST_RATES": ((), "none"),
    "NEWSQ_STUCK_AFTER": (0.0, "twice `NEWSQ_VISIBILITY_TIMEOUT`"),
}

NUMBERS = [s for s in SETTINGS if s.kind in ("number", "integer")]
INTEGERS = [s for s in SETTINGS if s.kind == "integer"]


def readme_default(spec: SettingSpec) -> str:
    """The default as the README's table prints it."""
    if spec.env in PROSE:
        declared, shown = PROSE[spec.env]
        assert spec.default == declared, f"{spec.env}'s default changed: update the README"
        return shown
    if spec.default is None:
        return "unset"
    if isinstance(spec.default, bool):
        return "1" if spec.default else "0"
    if isinstance(spec.default, float):
        return f"{spec.default:g}"
    return str(spec.default)


def test_readme_table_lists_exactly_the_declared_settings() -> None:
    names = [env for env, _, _ in ROWS]
    assert len(names) == len(set(names)), "a setting has two rows"
    assert set(names) == {s.env for s in SETTINGS}


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda s: s.env)
def test_readme_row_shows_the_declared_help_and_default(spec: SettingSpec) -> None:
    meaning, default = TABLE[spec.env]
    assert meaning.startswith(spec.help)  # the README may say more than the one line
    shown = readme_default(spec)
    assert default in (shown, f"`{shown}`")


def test_unset_or_blank_variables_give_the_declared_defaults() -> None:
    declared = {s.name: s.default for s in SETTINGS}
    assert [f.name for f in fields(Settings)] == list(declared)
    for env in ({}, {s.env: "  " for s in SETTINGS}):
        settings = Settings.from_env(env)
        assert {name: getattr(settings, name) for name in declared} == declared


@pytest.mark.parametrize("spec", NUMBERS, ids=lambda s: s.env)
def test_a_number_that_is_not_one_or_is_too_small_is_refused(spec: SettingSpec) -> None:
    assert spec.minimum is not None
    at_least = f"must be a number >= {spec.minimum:g}$"
    for raw, message in [
        ("many", "is not a number$"),
        (f"{spec.minimum - 0.5:g}", at_least),
        ("nan", at_least),
    ]:
        with pytest.raises(ConfigError, match=f"^{spec.env}: {re.escape(repr(raw))} {message}"):
            Settings.from_env({spec.env: raw})


@pytest.mark.parametrize("spec", NUMBERS, ids=lambda s: s.env)
def test_a_number_too_large_or_infinite_is_refused(spec: SettingSpec) -> None:
    # past its bound a value overflows a timer, a socket timeout or a Redis bitmap
    assert spec.maximum is not None and spec.maximum < math.inf
    at_most = f"must be a number <= {spec.maximum:.15g}$"
    for raw in (f"{spec.maximum * 1.5 + 1:.17g}", "inf", "1e400", "1e300"):
        with pytest.raises(ConfigError, match=f"^{spec.env}: {re.escape(repr(raw))} {at_most}"):
            Settings.from_env({spec.env: raw})
    assert getattr(Settings.from_env({spec.env: f"{spec.maximum:.17g}"}), spec.name) == spec.maximum


@pytest.mark.parametrize("spec", INTEGERS, ids=lambda s: s.env)
def test_an_integer_must_be_whole(spec: SettingSpec) -> None:
    assert spec.minimum is not None
    for raw in (f"{spec.minimum + 0.5:g}",):
        with pytest.raises(
            ConfigError, match=f"^{spec.env}: {re.escape(repr(raw))} must be a whole number$"
        ):
            Settings.from_env({spec.env: raw})
    whole = int(spec.minimum) + 2
    assert getattr(Settings.from_env({spec.env: f" {whole}.0 "}), spec.name) == whole


@pytest.mark.parametrize(
    ("env", "raw", "message"),
    [
        ("NEWSQ_DATABASE_URL", "mysql://x", "is not a sqlite:/// or postgresql:// URL"),
        ("NEWSQ_BROKER_URL", "amqp://x", "is not a redis:// or sentinel:// URL"),
        ("NEWSQ_LOG_FORMAT", "XML", "'xml' is not 'text' or 'json'"),
        ("NEWSQ_HOST_RATES", "a=1,b", "'b' is not host=rate"),
        ("NEWSQ_HOST_RATES", "a=-1", "'-1' must be a number >= 0"),
        ("NEWSQ_ALLOW_PRIVATE", "no where", "'no where' is not a host, host:port or CIDR"),
        ("NEWSQ_ALLOW_PRIVATE", "db:http", "'db:http' is not a host, host:port or CIDR"),
        ("NEWSQ_ALLOW_PRIVATE", "db:65536", "'db:65536' is not a host, host:port or CIDR"),
        ("NEWSQ_ALLOW_PRIVATE", "db:0", "'db:0' is not a host, host:port or CIDR"),
        ("NEWSQ_ALLOW_PRIVATE", "10.0.0.0/33", "'10.0.0.0/33' is not a host, host:port or CIDR"),
        ("NEWSQ_LOG_LEVEL", "verbose",
         "'verbose' is not 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_naming_its_variable(env: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{env}: .*{re.escape(message)}"):
        Settings.from_env({env: raw})


@pytest.mark.parametrize(
    ("env", "raw", "message"),
    [
        ("NEWSQ_BROKER_URL", "redis://cache:63x9/0", "'redis://cache:63x9/0': the port must"),
        ("NEWSQ_BROKER_URL", "redis://cache:65536", "the port must be 1 to 65535"),
        ("NEWSQ_BROKER_URL", "redis://cache:0", "the port must be 1 to 65535"),  # redis-py: 6379
        ("NEWSQ_BROKER_URL", "redis://u:secret@cache:-1", "'redis://u:***@cache:-1': the port"),
        ("NEWSQ_BROKER_URL", "redis://[::1/0", "the IPv6 address has no closing ]"),
        ("NEWSQ_BROKER_URL", "redis://u:pa/ss@cache:6379", "'redis://u:***@cache:6379': a '/'"),
        ("NEWSQ_BROKER_URL", "redis://u:p@cache:6x", "'redis://u:***@cache:6x': the port"),
        ("NEWSQ_BROKER_URL", "redis://cache/db1", "the database 'db1' is not a number"),
        ("NEWSQ_BROKER_URL", "redis://cache?socket_timeout=soon", "Invalid value for"),
        ("NEWSQ_BROKER_URL", "redis://cache?socket_timeout=inf", "=inf is out of range"),
        ("NEWSQ_BROKER_URL", "redis://cache/0?colour=red", "unknown option 'colour'"),
        ("NEWSQ_BROKER_URL", "sentinel://s1:26379;redis://s2", "'redis://s2' does not start"),
        ("NEWSQ_BROKER_URL", "sentinel://:pw@s1:99999", "'sentinel://:***@s1:99999'"),
        ("NEWSQ_BROKER_URL", "sentinel://s1/zero", "the database 'zero' is not a number"),
        ("NEWSQ_BROKER_URL", "sentinel://;", "names no host"),
        ("NEWSQ_BROKER_URL", "sentinel://s1:26379", "needs NEWSQ_SENTINEL_MASTER"),
        ("NEWSQ_STATE_URL", "amqp://x", "is not a redis://, sentinel:// or redis+cluster:// URL"),
        ("NEWSQ_STATE_URL", "redis://state:0", "the port must be 1 to 65535"),
        ("NEWSQ_SENTINEL_MASTER", "my master", "is not a Sentinel master name"),
        ("NEWSQ_DATABASE_URL", "postgresql://u@db:pg/news", "the port must be 1 to 65535"),
        ("NEWSQ_DATABASE_URL", "postgresql://u:pw@db:99999/news", "'postgresql://u:***@db:99999/news'"),
        ("NEWSQ_DATABASE_URL", "postgresql://u@[::1/news", "the IPv6 address has no closing ]"),
        ("NEWSQ_DATABASE_URL", "sqlite:", "'sqlite:' is not a database URL"),
        ("NEWSQ_METRICS_PORT", "65536", "'65536' must be a number <= 65535"),
        ("NEWSQ_METRICS_ADDR", "local host", "'local host' is not an address or host name"),
        ("NEWSQ_CELERY_CONFIG", ".settings", "'.settings' is not a Python module name"),
        ("NEWSQ_KEY_PREFIX", "news\nq", "holds a control character"),
        ("NEWSQ_KEY_PREFIX", "news\udcffq", "bytes that are not UTF-8"),
    ],
)  # fmt: skip
def test_a_url_or_address_that_cannot_be_used_is_refused(env: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{env}: .*{re.escape(message)}"):
        Settings.from_env({env: raw})


def test_urls_that_can_be_used_are_kept() -> None:
    for broker in ("redis://", "redis://[::1]:6379/2", "rediss://u:p@cache:6380/1?ssl_cert_reqs=none",
                   "unix:///run/redis.sock?db=1", "redis://cache:6379/"):  # fmt: skip
        assert Settings.from_env({"NEWSQ_BROKER_URL": broker}).broker_url == broker
    for database in ("sqlite://", "sqlite:///news.db", "postgresql://u:p@[::1]:5432/news",
                     "postgresql://u:pa/s?s@db:5432/news",  # SQLAlchemy reads such a password
                     "postgresql+psycopg://u@db/news?connect_timeout=5"):  # fmt: skip
        assert Settings.from_env({"NEWSQ_DATABASE_URL": database}).database_url == database


GARBAGE = ["garbage", "inf", "-inf", "nan", "-1", "0", "1e400", "9" * 30, "a\nb", "\x00",
           "\udcff", "%", "[", "::", "\u202e", "é", "redis://h:abc", "redis://[::1",
           "postgresql://u@h:99999/d", "sqlite:", "unix://"]  # fmt: skip


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda s: s.env)
def test_no_value_of_any_setting_raises_but_config_error(spec: SettingSpec) -> None:
    rng = random.Random(spec.env)
    letters = "abc:/@[]%?=&.,*-+0123456789 \t\né\udcff"
    values = GARBAGE + ["".join(rng.choices(letters, k=rng.randint(1, 16))) for _ in range(200)]
    values += [pre + v for pre in ("redis://", "sqlite:", "postgresql://") for v in values[:40]]
    for raw in values:
        try:
            Settings.from_env({spec.env: raw})
        except ConfigError as exc:
            assert str(exc).startswith(f"{spec.env}: ") and "\n" not in str(exc)


def test_a_parser_whose_library_raises_gives_a_config_error() -> None:
    from newsq.config.settings import _parsed

    def parse(env: str, raw: str) -> str:
        with open(raw) as file:  # what a file setting's parser may do
            return file.read()

    spec = SettingSpec("rules", None, "a file", "file", parse)
    with pytest.raises(ConfigError, match=r"^NEWSQ_RULES: '/no/such/file': .*No such file"):
        _parsed(spec, "/no/such/file")


def test_allow_private_takes_hosts_and_addresses_on_any_port() -> None:
    allow = Settings.from_env({"NEWSQ_ALLOW_PRIVATE": "Localhost, 10.0.0.5, [::1], "
                               "db.internal:8080, 192.168.0.0/16"}).allow_private  # fmt: skip
    assert allow.allows("127.0.0.1", 1234, "localhost")
    assert allow.allows("10.0.0.5", 1) and allow.allows("10.0.0.5", 65535, "cache.internal")
    assert allow.allows("::1", 80) and allow.allows("0:0::1", 443)
    assert allow.allows("10.1.1.1", 8080, "db.internal")
    assert not allow.allows("10.1.1.1", 80, "db.internal")  # a port given is the only one
    assert allow.allows("192.168.3.4", 1)
    assert not allow.allows("10.0.0.6", 80) and not allow.allows("127.0.0.1", 80, "other")


def test_values_are_parsed_by_their_kind() -> None:
    settings = Settings.from_env(
        {
            "NEWSQ_KEEP_RAW": "Yes",
            "NEWSQ_ROBOTS": "off",
            "NEWSQ_LOG_FORMAT": " JSON ",
            "NEWSQ_LOG_LEVEL": "debug",
            "NEWSQ_HOST_RATES": "Example.com=0.5, b.org:8080=2",
            "NEWSQ_METRICS_PORT": "9100",
            "NEWSQ_BROKER_URL": "rediss://cache:6380/1",
        }
    )
    assert (settings.keep_raw, settings.robots) == (True, False)
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    assert settings.host_rates == (("example.com", 0.5), ("b.org:8080", 2.0))
    assert settings.metrics_port == 9100
    assert settings.broker_url == "rediss://cache:6380/1"
    # a flag given a word that is neither yes nor no is refused, not its default
    for env in ("NEWSQ_KEEP_RAW", "NEWSQ_ROBOTS"):
        with pytest.raises(ConfigError, match=f"^{env}: 'of' is not 1/true/yes/on or 0/false/"):
            Settings.from_env({env: "of"})


def test_celery_config_is_a_module_name_or_unset() -> None:
    assert Settings.from_env({}).celery_config is None
    assert Settings.from_env({"NEWSQ_CELERY_CONFIG": "   "}).celery_config is None
    parsed = Settings.from_env({"NEWSQ_CELERY_CONFIG": " myproject.celeryconfig "})
    assert parsed.celery_config == "myproject.celeryconfig"
