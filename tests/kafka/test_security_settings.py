"""TLS and SASL settings: never silently ignored, a bad TLS file reported at once with its path
(not after every connection retry as "cannot reach Kafka"), and a broker URL holding
credentials never echoed. No broker needed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from streamc_runtime.kafka import (
    KafkaConfigError,
    KafkaSettings,
    KafkaTransport,
    KafkaUnavailableError,
    parse_kafka_url,
)
from streamc_runtime.main import parse_broker


@pytest.fixture
def pem(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    return str(path)


@pytest.mark.parametrize("protocol", [None, "PLAINTEXT", "SASL_PLAINTEXT"])
@pytest.mark.parametrize("variable", ["SSL_CAFILE", "SSL_CERTFILE", "SSL_PASSWORD"])
def test_tls_settings_without_a_tls_protocol_are_refused(
    protocol: str | None, variable: str, pem: str
) -> None:
    env = {f"STREAMC_KAFKA_{variable}": pem}
    if protocol is not None:
        env["STREAMC_KAFKA_SECURITY_PROTOCOL"] = protocol
    if protocol == "SASL_PLAINTEXT":
        env |= {
            "STREAMC_KAFKA_SASL_MECHANISM": "PLAIN",
            "STREAMC_KAFKA_SASL_USERNAME": "u",
            "STREAMC_KAFKA_SASL_PASSWORD": "p",
        }
    shown = protocol or "PLAINTEXT"
    with pytest.raises(
        KafkaConfigError,
        match=rf"STREAMC_KAFKA_{variable} set, but STREAMC_KAFKA_SECURITY_PROTOCOL is {shown}, "
        r"which does not use TLS; set STREAMC_KAFKA_SECURITY_PROTOCOL=SSL \(or SASL_SSL\)",
    ):
        KafkaSettings.from_env(("h:1",), "g", env)


@pytest.mark.parametrize("protocol", [None, "SSL"])
def test_sasl_credentials_without_a_sasl_protocol_are_refused(protocol: str | None) -> None:
    env = {"STREAMC_KAFKA_SASL_USERNAME": "u", "STREAMC_KAFKA_SASL_PASSWORD": "p"}
    if protocol is not None:
        env["STREAMC_KAFKA_SECURITY_PROTOCOL"] = protocol
    with pytest.raises(
        KafkaConfigError,
        match=r"STREAMC_KAFKA_SASL_USERNAME, STREAMC_KAFKA_SASL_PASSWORD set, but "
        rf"STREAMC_KAFKA_SECURITY_PROTOCOL is {protocol or 'PLAINTEXT'}, which does not use SASL",
    ):
        KafkaSettings.from_env(("h:1",), "g", env)


def test_a_key_without_its_certificate_is_refused(pem: str) -> None:
    env = {"STREAMC_KAFKA_SECURITY_PROTOCOL": "SSL", "STREAMC_KAFKA_SSL_KEYFILE": pem}
    with pytest.raises(KafkaConfigError, match="set STREAMC_KAFKA_SSL_CERTFILE too"):
        KafkaSettings.from_env(("h:1",), "g", env)


@pytest.mark.parametrize("variable", ["SSL_CAFILE", "SSL_CERTFILE"])
def test_a_missing_tls_file_is_reported_at_once_with_its_path(
    variable: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "client.pem"
    env = {"STREAMC_KAFKA_SECURITY_PROTOCOL": "SSL", f"STREAMC_KAFKA_{variable}": str(missing)}
    with pytest.raises(KafkaConfigError) as refused:
        KafkaTransport.from_url("kafka://127.0.0.1:1", group_id="g", **_from(env))
    assert str(refused.value) == f"STREAMC_KAFKA_{variable}: no such file: {missing}"


def _from(env: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("STREAMC_KAFKA_").lower(): v for k, v in env.items()}


@pytest.mark.asyncio
async def test_an_unloadable_tls_file_fails_the_start_at_once_naming_it(pem: str) -> None:
    transport = KafkaTransport.from_url(
        "kafka://127.0.0.1:1",
        group_id="g",
        security_protocol="SSL",
        ssl_cafile=pem,
        connect_attempts=8,
        connect_backoff_s=60.0,
    )
    began = time.monotonic()
    with pytest.raises(KafkaUnavailableError) as failed:
        await asyncio.wait_for(transport.start(), 120)
    # Not retried (retrying cannot fix a file): one retry alone would wait a minute.
    assert time.monotonic() - began < 30
    assert f"cannot load the TLS files {pem}" in str(failed.value)
    assert "cannot reach" not in str(failed.value)
    await transport.stop()


def test_a_tls_protocol_with_readable_files_builds_its_context(tmp_path: Path) -> None:
    cafile = Path("/etc/ssl/certs/ca-certificates.crt")
    if not cafile.is_file():
        pytest.skip("no system CA bundle to load")
    settings = KafkaSettings.from_env(
        ("h:1",),
        "g",
        {"STREAMC_KAFKA_SECURITY_PROTOCOL": "SSL", "STREAMC_KAFKA_SSL_CAFILE": str(cafile)},
    )
    assert settings.client_kwargs()["ssl_context"] is not None


URLS = [
    "kafka://alice:s3cret@broker:9092",
    "kafka://alice:s3cret@broker:9092,other:9092",
    "kafka://alice:s3cret@broker",
    "kafka:/alice:s3cret@broker:9092",
]


@pytest.mark.parametrize("url", URLS)
def test_a_broker_url_holding_credentials_is_never_echoed(url: str) -> None:
    for parse in (parse_kafka_url, parse_broker):
        with pytest.raises(ValueError) as refused:
            parse(url)
        message = str(refused.value)
        assert "s3cret" not in message and "alice" not in message, message
    with pytest.raises(KafkaConfigError, match=r"\*\*\*@") as refused:
        KafkaTransport.from_url(url, group_id="g")
    assert "s3cret" not in str(refused.value)
