"""Typed config values (Mopidy's config/types.py idea, for TOML).

Each type turns a raw TOML value into the value the code uses, or raises
``ValueError`` with a message that completes "<file>:<line>: [section] key: ".
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Any, ClassVar

_LISTEN_RE = re.compile(
    r"^(?P<transport>udp|tcp|tls):(?:\[(?P<ipv6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})$"
)
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?$"
)


class ConfigValue:
    """Base type: accepts anything.  ``secret`` values are masked on display."""

    secret: ClassVar[bool] = False

    def deserialize(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "any value"


@dataclass
class String(ConfigValue):
    optional: bool = True  # "" allowed
    choices: tuple[str, ...] = ()

    def deserialize(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {kind_name(value)}")
        if not value and not self.optional:
            raise ValueError("must not be empty")
        if self.choices and value not in self.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(self.choices)}")
        return value


class Secret(String):
    secret = True


@dataclass
class Integer(ConfigValue):
    minimum: int | None = None
    maximum: int | None = None

    def deserialize(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {kind_name(value)}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{value} is below the minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{value} is above the maximum {self.maximum}")
        return value


@dataclass
class Float(ConfigValue):
    minimum: float | None = None
    maximum: float | None = None

    def deserialize(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {kind_name(value)}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{value} is below the minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{value} is above the maximum {self.maximum}")
        return float(value)


class Boolean(ConfigValue):
    def deserialize(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {kind_name(value)}")
        return value


class Port(Integer):
    """A TCP/UDP port; 0 means "not set" where the key allows it."""

    def __init__(self, *, allow_zero: bool = True) -> None:
        super().__init__(minimum=0 if allow_zero else 1, maximum=65535)


class Hostname(ConfigValue):
    """A DNS name or an IP address; "" means not set."""

    def deserialize(self, value: Any) -> str:
        text = String().deserialize(value)
        if not text:
            return text
        try:
            ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            if not _HOSTNAME_RE.match(text):
                raise ValueError(f"{text!r} is not a hostname or IP address") from None
        return text


class HostPort(ConfigValue):
    """``host:port`` (``[v6]:port``); "" means not set."""

    def deserialize(self, value: Any) -> str:
        text = String().deserialize(value)
        if not text:
            return text
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r} is not host:port")
        Hostname().deserialize(host)
        return text


class IpPort(ConfigValue):
    """``IP:PORT`` (``[v6]:port``), an address literal: no name to resolve; "" means not set."""

    def deserialize(self, value: Any) -> str:
        text = String().deserialize(value)
        if not text:
            return text
        host, sep, port = text.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        try:
            address = ipaddress.ip_address(host[1:-1] if bracketed else host)
        except ValueError:
            address = None
        if (
            not sep
            or address is None
            or not port.isdigit()
            or not 0 < int(port) < 65536
            or (address.version == 6) != bracketed
        ):
            raise ValueError(
                f'{text!r} is not IP:PORT (e.g. "10.0.0.5:5060" or "[2001:db8::5]:5060")'
            )
        return text


class NodeName(ConfigValue):
    """A cluster node's name: kept in the database and shown to operators; "" means none."""

    def deserialize(self, value: Any) -> str:
        text = String().deserialize(value)
        if text and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", text):
            raise ValueError(
                f"{text!r} is not a node name (letters, digits, '.', '_', '-'; at most 64)"
            )
        return text


class Identifier(ConfigValue):
    """An SQL table name: it is put into statements, so only a bare identifier."""

    def deserialize(self, value: Any) -> str:
        text = String(optional=False).deserialize(value)
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", text):
            raise ValueError(f"{text!r} is not a table name (letters, digits, _; at most 64)")
        return text


class Path(String):
    """A filesystem path; relative paths are resolved by the loader."""


class ListenAddress(ConfigValue):
    def deserialize(self, value: Any) -> str:
        text = String(optional=False).deserialize(value)
        match = _LISTEN_RE.match(text)
        if not match or not 0 < int(match["port"]) < 65536:
            raise ValueError(
                f"{text!r} is not a listen address (expected udp|tcp|tls:HOST:PORT, "
                'e.g. "udp:127.0.0.1:5060" or "tcp:[::1]:5060")'
            )
        if match["ipv6"]:
            try:
                ipaddress.IPv6Address(match["ipv6"])
            except ValueError:
                raise ValueError(f"{text!r}: {match['ipv6']!r} is not an IPv6 address") from None
        return text


class Network(ConfigValue):
    """An IP network in CIDR form (a bare address means a /32 or /128)."""

    def deserialize(self, value: Any) -> str:
        text = String(optional=False).deserialize(value)
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP network (e.g. 10.0.0.0/8)") from None
        return text


@dataclass
class List(ConfigValue):
    item: ConfigValue

    def deserialize(self, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {kind_name(value)}")
        out = []
        for index, entry in enumerate(value):
            try:
                out.append(self.item.deserialize(entry))
            except ValueError as exc:
                raise ValueError(f"item {index}: {exc}") from None
        return out


class LogLevel(ConfigValue):
    LEVELS: ClassVar[tuple[str, ...]] = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

    def deserialize(self, value: Any) -> str:
        text = String(optional=False).deserialize(value).upper()
        if text not in self.LEVELS:
            raise ValueError(f"{text!r} is not a log level ({', '.join(self.LEVELS)})")
        return text


@dataclass
class Deprecated(ConfigValue):
    """A key that used to exist: accepted, ignored, and reported as a warning."""

    hint: str = ""

    def deserialize(self, value: Any) -> None:  # noqa: ARG002 - the ConfigValue interface; a deprecated key's value is ignored
        logging.getLogger("purplegw.config").warning(
            "deprecated config key ignored%s", f" ({self.hint})" if self.hint else ""
        )


def kind_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
