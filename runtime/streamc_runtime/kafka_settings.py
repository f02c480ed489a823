"""`KafkaSettings`: what the Kafka transport (`streamc_runtime.kafka`) passes to aiokafka,
read from the environment and the broker URL; and the errors that transport raises on
purpose, with `str()` meant for the user.

Settings
--------
Every `KafkaSettings` field can be set from the environment as `STREAMC_KAFKA_<FIELD>` (upper
case) or passed to `from_url` as a keyword override (overrides win). The ones users need most:

==================================  ===========================================================
`STREAMC_KAFKA_SECURITY_PROTOCOL`   `PLAINTEXT` (default), `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`
`STREAMC_KAFKA_SASL_MECHANISM`      `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `GSSAPI`
`STREAMC_KAFKA_SASL_USERNAME`       user for PLAIN/SCRAM
`STREAMC_KAFKA_SASL_PASSWORD`       password for PLAIN/SCRAM
`STREAMC_KAFKA_SSL_CAFILE`          CA bundle that signed the brokers' certificates
                                    (default: the system's trusted CAs)
`STREAMC_KAFKA_SSL_CERTFILE`        client certificate, for mutual TLS
`STREAMC_KAFKA_SSL_KEYFILE`         the client certificate's private key
`STREAMC_KAFKA_SSL_PASSWORD`        the private key's password, if it is encrypted
`STREAMC_KAFKA_ENABLE_IDEMPOTENCE`  `true` (default): no duplicates from producer retries.
                                    Set `false` for brokers without idempotent producers
                                    (Tansu); at-least-once does not depend on it.
`STREAMC_KAFKA_REPLICATION_FACTOR`  for topics streamc creates (default: min(3, brokers))
`STREAMC_KAFKA_SESSION_TIMEOUT_MS`  group session timeout (default 10000): how long a dead
                                    worker keeps its partitions before they move
`STREAMC_KAFKA_CONNECT_ATTEMPTS`    start-up attempts before giving up (default 8, about 35 s)
`STREAMC_KAFKA_MAX_REQUEST_SIZE`    the largest record the producer sends, in bytes (default
                                    1048576); a larger one is dead-lettered, truncated
==================================  ===========================================================

TLS and SASL settings are refused unless `SECURITY_PROTOCOL` uses them (they would be
ignored), and a TLS file that does not exist is reported at once. A broker URL holding
credentials is refused without being echoed.

Booleans accept `1/true/yes/on` and `0/false/no/off`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import errors as kerrors  # type: ignore[import-untyped]
from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]

from .transport import (
    DeliveryError,
    RecordTooLargeError,
    TransientTransportError,
    TransportError,
    redact_url,
)

__all__ = [
    "ENV_PREFIX",
    "KafkaCommitRefusedError",
    "KafkaConfigError",
    "KafkaDeliveryError",
    "KafkaRecordTooLargeError",
    "KafkaSendError",
    "KafkaSettings",
    "KafkaTransportError",
    "KafkaUnavailableError",
    "parse_kafka_url",
]

ENV_PREFIX = "STREAMC_KAFKA_"

_SECURITY_PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
_SASL_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# aiokafka's default `max_request_size`, and a bound on what a record adds to its key, value
# and headers in a batch (varints, attributes, deltas): below `limit - overhead` no record
# needs its exact size computed.
_MAX_REQUEST_SIZE = 1_048_576
_RECORD_OVERHEAD = 512


class KafkaTransportError(TransportError):
    """Base of the errors this module raises on purpose; `str()` is meant for the user."""


class KafkaConfigError(KafkaTransportError, ValueError):
    """A broker URL or `STREAMC_KAFKA_*` setting that cannot work."""


class KafkaUnavailableError(KafkaTransportError):
    """The brokers could not be reached (or refused us) at start-up, after every retry."""


class KafkaDeliveryError(KafkaTransportError, DeliveryError):
    """A produced record was not stored; raised by `flush` (and so by `commit`)."""


class KafkaSendError(KafkaTransportError, TransientTransportError):
    """The producer could not queue a record for a reason that may pass (a timeout waiting
    for metadata or buffer space, no leader, a lost connection): the worker retries."""


class KafkaRecordTooLargeError(KafkaTransportError, RecordTooLargeError):
    """`send_many` refused records larger than the producer's `max_request_size`."""


class KafkaCommitRefusedError(KafkaTransportError):
    """The group refused a commit because it is rebalancing: normal, and retried after it."""


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Everything the transport passes to aiokafka. Defaults suit a production cluster."""

    bootstrap_servers: tuple[str, ...]
    group_id: str
    client_id: str = "streamc"
    # Producer
    enable_idempotence: bool = True
    linger_ms: int = 0
    # Bytes per partition batch. Larger than aiokafka's 16 KiB (librdkafka's is 1 MB): with
    # linger 0 a batch still goes out as soon as the connection is free, but forwarding
    # (`group_by`, `through`) fills batches while the previous one is in flight, and a full
    # batch makes it wait a broker round trip.
    max_batch_size: int = 262_144
    compression_type: str | None = None
    # Consumer
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    fetch_max_wait_ms: int = 500
    fetch_max_bytes: int = 52_428_800
    max_partition_fetch_bytes: int = 1_048_576
    # Both
    request_timeout_ms: int = 40_000
    retry_backoff_ms: int = 100
    metadata_max_age_ms: int = 300_000
    # The largest record (as aiokafka measures it) the producer sends; larger ones are data
    # errors, dead-lettered with a truncated value.
    max_request_size: int = _MAX_REQUEST_SIZE
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = dataclasses.field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = dataclasses.field(default=None, repr=False)
    # Topics streamc creates; None: min(3, number of brokers).
    replication_factor: int | None = None
    # Start-up: attempts, first delay, delay cap, and the time one attempt may take.
    connect_attempts: int = 8
    connect_backoff_s: float = 0.5
    connect_backoff_max_s: float = 10.0
    connect_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise KafkaConfigError("no Kafka bootstrap servers given")
        if self.security_protocol not in _SECURITY_PROTOCOLS:
            raise KafkaConfigError(
                f"{ENV_PREFIX}SECURITY_PROTOCOL={self.security_protocol!r} is not one of "
                f"{', '.join(sorted(_SECURITY_PROTOCOLS))}"
            )
        uses_sasl = self.security_protocol.startswith("SASL_")
        if uses_sasl and self.sasl_mechanism is None:
            raise KafkaConfigError(
                f"{ENV_PREFIX}SECURITY_PROTOCOL={self.security_protocol} needs "
                f"{ENV_PREFIX}SASL_MECHANISM ({', '.join(sorted(_SASL_MECHANISMS))})"
            )
        if self.sasl_mechanism is not None:
            if not uses_sasl:
                raise KafkaConfigError(
                    f"{ENV_PREFIX}SASL_MECHANISM is set but {ENV_PREFIX}SECURITY_PROTOCOL is "
                    f"{self.security_protocol}; use SASL_SSL (or SASL_PLAINTEXT)"
                )
            if self.sasl_mechanism not in _SASL_MECHANISMS:
                raise KafkaConfigError(
                    f"{ENV_PREFIX}SASL_MECHANISM={self.sasl_mechanism!r} is not supported; use "
                    f"one of {', '.join(sorted(_SASL_MECHANISMS))}"
                )
            if self.sasl_mechanism != "GSSAPI" and (
                self.sasl_username is None or self.sasl_password is None
            ):
                raise KafkaConfigError(
                    f"SASL {self.sasl_mechanism} needs {ENV_PREFIX}SASL_USERNAME and "
                    f"{ENV_PREFIX}SASL_PASSWORD"
                )
        self._check_tls_and_sasl()
        if self.max_request_size < 1024:
            raise KafkaConfigError(f"{ENV_PREFIX}MAX_REQUEST_SIZE must be at least 1024")
        if self.replication_factor is not None and self.replication_factor < 1:
            raise KafkaConfigError(f"{ENV_PREFIX}REPLICATION_FACTOR must be at least 1")
        if self.connect_attempts < 1:
            raise KafkaConfigError(f"{ENV_PREFIX}CONNECT_ATTEMPTS must be at least 1")

    def _check_tls_and_sasl(self) -> None:
        """Settings the protocol would silently ignore are refused; TLS files must exist."""
        protocol = self.security_protocol
        tls = {
            "SSL_CAFILE": self.ssl_cafile,
            "SSL_CERTFILE": self.ssl_certfile,
            "SSL_KEYFILE": self.ssl_keyfile,
            "SSL_PASSWORD": self.ssl_password,
        }
        tls_set = [name for name, value in tls.items() if value is not None]
        if tls_set and protocol not in ("SSL", "SASL_SSL"):
            raise KafkaConfigError(
                f"{', '.join(ENV_PREFIX + n for n in tls_set)} set, but "
                f"{ENV_PREFIX}SECURITY_PROTOCOL is {protocol}, which does not use TLS; set "
                f"{ENV_PREFIX}SECURITY_PROTOCOL=SSL (or SASL_SSL)"
            )
        sasl = {"SASL_USERNAME": self.sasl_username, "SASL_PASSWORD": self.sasl_password}
        sasl_set = [name for name, value in sasl.items() if value is not None]
        if sasl_set and not protocol.startswith("SASL_"):
            raise KafkaConfigError(
                f"{', '.join(ENV_PREFIX + n for n in sasl_set)} set, but "
                f"{ENV_PREFIX}SECURITY_PROTOCOL is {protocol}, which does not use SASL; set "
                f"{ENV_PREFIX}SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT) and "
                f"{ENV_PREFIX}SASL_MECHANISM"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise KafkaConfigError(
                f"{ENV_PREFIX}SSL_KEYFILE is the key of a client certificate: set "
                f"{ENV_PREFIX}SSL_CERTFILE too"
            )
        for name in ("SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE"):
            path = tls[name]
            if path is not None and not os.path.isfile(path):
                raise KafkaConfigError(f"{ENV_PREFIX}{name}: no such file: {path}")

    @classmethod
    def from_env(
        cls,
        bootstrap_servers: Sequence[str],
        group_id: str,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> KafkaSettings:
        """Defaults, then `STREAMC_KAFKA_*` variables, then `overrides`."""
        env = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, f in fields.items():
            if name in ("bootstrap_servers", "group_id"):
                continue
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = _parse_env(ENV_PREFIX + name.upper(), raw, f.default)
        settable = set(fields) - {"bootstrap_servers", "group_id"}
        unknown = set(overrides) - settable
        if unknown:
            raise TypeError(f"unknown Kafka setting(s): {', '.join(sorted(unknown))}")
        values.update(overrides)
        return cls(bootstrap_servers=tuple(bootstrap_servers), group_id=group_id, **values)

    def client_kwargs(self) -> dict[str, Any]:
        """The connection settings shared by the consumer, producer and admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "metadata_max_age_ms": self.metadata_max_age_ms,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            try:
                kwargs["ssl_context"] = create_ssl_context(
                    cafile=self.ssl_cafile,
                    certfile=self.ssl_certfile,
                    keyfile=self.ssl_keyfile,
                    password=self.ssl_password,
                )
            except (OSError, ValueError) as exc:  # unreadable, not PEM (SSLError), bad password
                files = [f for f in (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile) if f]
                raise KafkaConfigError(
                    f"cannot load the TLS files {', '.join(files) or '(system CAs)'}: {exc}"
                ) from exc
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        return kwargs


def _parse_env(name: str, raw: str, default: Any) -> Any:
    """Parse one variable by the type of its field's default."""
    try:
        if isinstance(default, bool):
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)
        if isinstance(default, int) or name.endswith("REPLICATION_FACTOR"):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise KafkaConfigError(f"{name}={raw!r} is not a valid value") from None
    return raw


def parse_kafka_url(url: str) -> tuple[str, ...]:
    """`kafka://host:port[,host:port...]` → `("host:port", ...)`."""
    shown = redact_url(url)  # a URL may hold a password: never echo it
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "kafka":
        raise KafkaConfigError(f"not a Kafka broker URL: {shown!r} (expected kafka://host:port)")
    if "@" in rest:
        raise KafkaConfigError(
            f"credentials do not go in the broker URL ({shown!r}); set "
            f"{ENV_PREFIX}SASL_USERNAME and {ENV_PREFIX}SASL_PASSWORD"
        )
    rest = rest.rstrip("/")
    servers: list[str] = []
    for part in rest.split(","):
        hostport = part.strip()
        host, colon, port = hostport.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise KafkaConfigError(
                f"bad Kafka broker address {hostport!r} in {shown!r} (expected host:port)"
            )
        servers.append(hostport)
    return tuple(servers)


def _describe(exc: BaseException) -> str:
    """`Name: text` once (aiokafka's messages often start with their class name already)."""
    name, text = type(exc).__name__, str(exc)
    if not text:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def _fatal_start_error(exc: BaseException, settings: KafkaSettings) -> str | None:
    """A start-up failure that retrying cannot fix, described for the user; else None."""
    if isinstance(exc, KafkaConfigError):
        return str(exc)
    if isinstance(
        exc,
        kerrors.AuthenticationFailedError
        | kerrors.UnsupportedSaslMechanismError
        | kerrors.IllegalSaslStateError,
    ):
        return (
            f"authentication failed ({_describe(exc)}); check {ENV_PREFIX}SASL_MECHANISM, "
            f"{ENV_PREFIX}SASL_USERNAME and {ENV_PREFIX}SASL_PASSWORD"
        )
    if isinstance(exc, kerrors.UnknownError | kerrors.UnsupportedVersionError) and (
        settings.enable_idempotence
    ):
        # aiokafka speaks only the oldest InitProducerId; brokers that cannot serve it answer
        # with one of these (Tansu: UnknownError).
        return (
            f"the broker refused an idempotent producer ({_describe(exc)}). If it does not "
            f"support idempotence, set {ENV_PREFIX}ENABLE_IDEMPOTENCE=false"
        )
    return None
