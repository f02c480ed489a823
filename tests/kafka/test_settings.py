"""The Kafka transport's settings, URL parsing and partitioner reference: no broker needed."""

from __future__ import annotations

import pytest
from kafkatest import murmur2
from streamc_runtime.kafka import (
    KafkaConfigError,
    KafkaSettings,
    KafkaTransport,
    parse_kafka_url,
)


def test_murmur2_matches_kafka_reference_values() -> None:
    # From Apache Kafka's UtilsTest.testMurmur2.
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107


def test_url_with_several_brokers() -> None:
    assert parse_kafka_url("kafka://a:9092,b.example.com:19092/") == (
        "a:9092",
        "b.example.com:19092",
    )


@pytest.mark.parametrize(
    "url", ["memory://", "kafka://", "kafka://host", "kafka://host:port", "host:9092", "kafka://:1"]
)
def test_bad_urls_are_rejected_with_the_url_in_the_message(url: str) -> None:
    with pytest.raises(KafkaConfigError, match=r"[Kk]afka"):
        parse_kafka_url(url)


def test_environment_then_overrides() -> None:
    env = {
        "STREAMC_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "STREAMC_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "STREAMC_KAFKA_REPLICATION_FACTOR": "2",
        "STREAMC_KAFKA_CONNECT_BACKOFF_S": "0.25",
        "STREAMC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMC_KAFKA_SASL_USERNAME": "svc",
        "STREAMC_KAFKA_SASL_PASSWORD": "s3cret",
        "STREAMC_KAFKA_SSL_CAFILE": "",  # empty means unset
    }
    s = KafkaSettings.from_env(("h:1",), "orders", env, session_timeout_ms=7000)
    assert s.enable_idempotence is False
    assert s.session_timeout_ms == 7000  # the override wins
    assert s.replication_factor == 2
    assert s.connect_backoff_s == 0.25
    assert (s.sasl_mechanism, s.sasl_username, s.sasl_password) == (
        "SCRAM-SHA-512",
        "svc",
        "s3cret",
    )
    assert s.ssl_cafile is None
    assert "s3cret" not in repr(s)
    kwargs = s.client_kwargs()
    assert kwargs["sasl_plain_username"] == "svc"
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["ssl_context"] is not None


def test_defaults_suit_a_production_cluster() -> None:
    s = KafkaSettings.from_env(("h:1",), "orders", {})
    assert s.enable_idempotence is True
    assert s.security_protocol == "PLAINTEXT"
    assert "ssl_context" not in s.client_kwargs()


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"STREAMC_KAFKA_ENABLE_IDEMPOTENCE": "maybe"}, "ENABLE_IDEMPOTENCE"),
        ({"STREAMC_KAFKA_SESSION_TIMEOUT_MS": "10s"}, "SESSION_TIMEOUT_MS"),
        ({"STREAMC_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SECURITY_PROTOCOL"),
        ({"STREAMC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "SASL_MECHANISM"),
        ({"STREAMC_KAFKA_SASL_MECHANISM": "PLAIN"}, "SECURITY_PROTOCOL"),
        (
            {
                "STREAMC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "STREAMC_KAFKA_SASL_MECHANISM": "PLAIN",
            },
            "SASL_USERNAME",
        ),
        (
            {
                "STREAMC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "STREAMC_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
            },
            "not supported",
        ),
        ({"STREAMC_KAFKA_REPLICATION_FACTOR": "0"}, "REPLICATION_FACTOR"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(KafkaConfigError, match=complaint):
        KafkaSettings.from_env(("h:1",), "orders", env)


def test_unknown_override_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="sesion_timeout_ms"):
        KafkaTransport.from_url("kafka://h:1", group_id="g", sesion_timeout_ms=1)
    with pytest.raises(TypeError, match="group_id"):
        KafkaSettings.from_env(("h:1",), "g", {}, **{"group_id": "other"})
