"""Settings from the environment and secret files: clear one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from couchops.errors import SettingsError
from couchops.settings import load_settings


def test_defaults_are_the_platform_s() -> None:
    s = load_settings({})
    assert (s.purge_retention_days, s.backup_retention_days, s.gdpr_max_age_days) == (30, 7, 30)
    assert s.purge_timestamp_field == "createdAt"
    assert s.pushgateway_url is None and s.credentials() is None


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=30))
def test_any_retention_from_1_to_30_days_is_accepted(days: int) -> None:
    s = load_settings({"PURGE_RETENTION_DAYS": str(days), "BACKUP_RETENTION_DAYS": str(days)})
    assert s.purge_retention_days == s.backup_retention_days == days


@settings(deadline=None)
@given(st.integers().filter(lambda d: d < 1 or d > 30))
def test_a_retention_outside_1_to_30_days_is_refused_naming_the_variable(days: int) -> None:
    for var in ("PURGE_RETENTION_DAYS", "BACKUP_RETENTION_DAYS"):
        with pytest.raises(SettingsError, match=f"bad setting {var}={days}: .*GDPR"):
            load_settings({var: str(days)})


def test_secrets_come_from_mounted_files_without_their_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "user").write_text("admin\n")
    (tmp_path / "password").write_text("s3cret\n")
    s = load_settings(
        {
            "COUCHDB_ADMIN_USER_FILE": str(tmp_path / "user"),
            "COUCHDB_ADMIN_PASSWORD_FILE": str(tmp_path / "password"),
        }
    )
    assert s.credentials() == ("admin", "s3cret")
    assert "s3cret" not in repr(s)


def test_a_missing_secret_file_or_a_double_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"COUCHDB_ADMIN_PASSWORD_FILE=.*cannot read"):
        load_settings({"COUCHDB_ADMIN_PASSWORD_FILE": str(tmp_path / "absent")})
    (tmp_path / "p").write_text("x")
    with pytest.raises(SettingsError, match="not both"):
        load_settings(
            {"COUCHDB_ADMIN_PASSWORD": "x", "COUCHDB_ADMIN_PASSWORD_FILE": str(tmp_path / "p")}
        )


def test_half_set_credentials_are_refused() -> None:
    with pytest.raises(SettingsError, match="half set"):
        load_settings({"COUCHDB_ADMIN_USER": "admin"}).credentials()


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"COUCHDB_URL": "http://admin:pw@couchdb:5984"}, "must not carry credentials"),
        ({"COUCHDB_URL": "couchdb:5984"}, "COUCHDB_URL=couchdb:5984"),
        ({"COUCHDB_SHARDS": "zero"}, "COUCHDB_SHARDS=zero"),
        ({"COUCHDB_NODES": "couchdb@a,not a node"}, "not an Erlang node name"),
        ({"COUCHDB_DATABASE": "Onboarding"}, "COUCHDB_DATABASE=Onboarding"),
        ({"PURGE_TIMESTAMP_FIELD": "created at"}, "PURGE_TIMESTAMP_FIELD"),
        ({"PUSHGATEWAY_URL": "pushgateway:9091"}, "PUSHGATEWAY_URL"),
        ({"COUCHDB_NODE_URLS": "{host}:5984"}, "COUCHDB_NODE_URLS=.*not an http"),
        ({"COUCHDB_NODE_URLS": "http://a:pw@{host}:5984"}, "must not carry credentials"),
        ({"COUCHDB_NODE_URLS": "couchdb@a http://a:5984"}, "is not <node name>=<url>"),
        ({"COUCHDB_NODE_URLS": "couchdb@a=ftp://a:5984"}, "not an http"),
        ({"COUCHDB_NODE_URLS": ","}, "names no node"),
        ({"COUCHDB_ADMIN_PASSWORD": ""}, None),
    ],
)
def test_bad_settings_name_the_variable_and_the_rule(
    env: dict[str, str], fragment: str | None
) -> None:
    if fragment is None:
        load_settings(env)
        return
    with pytest.raises(SettingsError, match=fragment):
        load_settings(env)


@pytest.mark.parametrize(
    "env",
    [
        {"COUCHDB_URL": "http://admin:pw-s3cret@couchdb:5984"},
        {"COUCHDB_NODE_URLS": "http://a:pw-s3cret@{host}:5984"},
        {"COUCHDB_NODE_URLS": "couchdb@a=http://a:pw-s3cret@a:5984"},
    ],
)
def test_a_url_with_credentials_is_refused_without_showing_them(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="must not carry credentials") as refused:
        load_settings(env)
    assert "pw-s3cret" not in str(refused.value)
    assert "<credentials>@" in str(refused.value)


def test_nodes_are_a_comma_list_and_an_empty_pushgateway_means_none() -> None:
    s = load_settings({"COUCHDB_NODES": "couchdb@a.svc, couchdb@b.svc,", "PUSHGATEWAY_URL": ""})
    assert s.nodes == ("couchdb@a.svc", "couchdb@b.svc")
    assert s.pushgateway_url is None


def test_the_ca_file_is_a_readable_pem_certificate(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert load_settings({"COUCHDB_CA_FILE": str(ca)}).ca_file == ca
    assert load_settings({}).ca_file is None
    with pytest.raises(SettingsError, match=r"bad setting COUCHDB_CA_FILE=.*cannot be read"):
        load_settings({"COUCHDB_CA_FILE": str(tmp_path / "absent.crt")})
    key = tmp_path / "tls.key"
    key.write_text("-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n")
    with pytest.raises(SettingsError, match=r"COUCHDB_CA_FILE=.*holds no PEM certificate"):
        load_settings({"COUCHDB_CA_FILE": str(key)})
