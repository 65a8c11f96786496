"""Reading, merging and validating the configuration.

Layers, later ones win: the packaged defaults (default.toml beside this
module, package data; etc/purplegw.toml is the same text), the user's file,
PURPLEGW_<SECTION>__<KEY> environment variables.  Validation collects every
problem before failing, and each message names the file, the line and the
key, because an operator fixing a config wants one round trip, not one per
mistake.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from purplegw.config import types as t
from purplegw.config.schema import FREE_SECTIONS, PLUGIN_SECTIONS, SCHEMA
from purplegw.exceptions import ConfigError
from purplegw.redact import MASK, mask_url

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")
ENV_CONFIG = "PURPLEGW_CONFIG"
ENV_PREFIX = "PURPLEGW_"

_TABLE_RE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY_RE = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|[A-Za-z0-9_.-]+)\s*=')


@dataclass
class Config:
    """The effective configuration: ``config["sip"]["listen"]``."""

    sections: dict[str, dict[str, Any]]
    path: Path | None = None
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)  # key path -> "file:line"

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.sections[section]

    def get(self, section: str, default: Any = None) -> Any:
        return self.sections.get(section, default)

    def protocol(self, name: str) -> dict[str, Any]:
        protocols: dict[str, dict[str, Any]] = self.sections.get("protocols", {})
        return protocols.get(name, {})

    # --- derived values --------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return Path(self["store"]["data_dir"])

    @property
    def db_url(self) -> str:
        return self["store"]["db_url"] or f"sqlite://{(self.data_dir / 'purplegw.db').absolute()}"

    @property
    def key_file(self) -> Path:
        return Path(self["store"]["key_file"] or self.data_dir / "purplegw.key")

    @property
    def pid_file(self) -> Path:
        return Path(self["daemon"]["pid_file"] or self.data_dir / "purplegw.pid")

    @property
    def control_socket(self) -> Path:
        return Path(self["daemon"]["control_socket"] or self.data_dir / "purplegw.sock")

    def masked(self) -> dict[str, Any]:
        """A copy with every secret replaced, for display."""
        out = copy.deepcopy(self.sections)
        for section, keys in SCHEMA.items():
            for key, kind in keys.items():
                if kind.secret and out.get(section, {}).get(key) and not key.endswith("url"):
                    out[section][key] = MASK
        for values in out.get("protocols", {}).values():
            for key in values:
                if _looks_secret(key) and values[key] and not key.endswith("url"):
                    values[key] = MASK
        # A URL keeps its host and user; its password is masked (purplegw.redact).
        for values in [*out.values(), *out.get("protocols", {}).values()]:
            for key, value in values.items():
                if key.endswith("url") and isinstance(value, str):
                    values[key] = mask_url(value)
        return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    protocol_defaults: dict[str, dict[str, Any]] | None = None,
) -> Config:
    """Load and validate; raise ``ConfigError`` listing every problem found.

    ``path`` None means $PURPLEGW_CONFIG, else the packaged defaults alone.
    ``protocol_defaults`` maps adapter name -> its default section, used to
    check ``[protocols.<name>]`` keys (unknown adapters are reported).
    """
    environ = dict(os.environ if environ is None else environ)
    if path is None and environ.get(ENV_CONFIG):
        path = environ[ENV_CONFIG]
    errors: list[str] = []

    defaults, _ = _read(DEFAULT_CONFIG, errors)
    sections: dict[str, dict[str, Any]] = copy.deepcopy(defaults)
    origins: dict[tuple[str, ...], str] = {}
    for name, values in (protocol_defaults or {}).items():
        merged = dict(values)
        merged.update(sections.get("protocols", {}).get(name, {}))
        sections.setdefault("protocols", {})[name] = merged

    user_path = Path(path) if path is not None else None
    if user_path is not None:
        if not user_path.is_file():
            raise ConfigError([f"{user_path}: config file not found"])
        user, lines = _read(user_path, errors)
        _merge(user, sections, user_path, lines, origins, errors, protocol_defaults)

    _apply_environment(environ, sections, origins, errors, protocol_defaults)
    _check_relations(sections, origins, errors)
    if errors:
        raise ConfigError(errors)
    return Config(sections=sections, path=user_path, origins=origins)


# --- reading -----------------------------------------------------------------


def _read(path: Path, errors: list[str]) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"{path}: cannot read: {exc}")
        return {}, {}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        errors.append(f"{path}: TOML syntax error: {exc}")
        return {}, {}
    return data, _key_lines(text)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line number of each ``key =`` under its ``[table]`` (tomllib gives none)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _TABLE_RE.match(line):
            table = tuple(part.strip().strip('"') for part in m.group(1).split("."))
            lines.setdefault(table, number)
        elif m := _KEY_RE.match(line):
            key = tuple(part.strip('"') for part in m.group(1).split("."))
            lines.setdefault(table + key, number)
    return lines


# --- merging and validation ---------------------------------------------------------


def _merge(  # noqa: PLR0913, C901, PLR0917 - one pass needs all of these
    user: dict[str, Any],
    sections: dict[str, dict[str, Any]],
    path: Path,
    lines: dict[tuple[str, ...], int],
    origins: dict[tuple[str, ...], str],
    errors: list[str],
    protocol_defaults: dict[str, dict[str, Any]] | None,
) -> None:
    def where(*key: str) -> str:
        line = lines.get(key) or lines.get(key[:1])
        return f"{path}:{line}" if line else str(path)

    for section, values in user.items():
        if not isinstance(values, dict):
            errors.append(
                f"{where(section)}: {section}: top-level keys are not allowed, "
                f"put them under a [section]{_suggest(section, _sections())}"
            )
            continue
        if section in PLUGIN_SECTIONS:
            for plugin, plugin_values in values.items():
                key_path = (section, plugin)
                if not isinstance(plugin_values, dict):
                    errors.append(
                        f"{where(*key_path)}: [{section}] {plugin}: expected a table "
                        f"[{section}.{plugin}]"
                    )
                    continue
                _merge_plugin(
                    plugin, plugin_values, sections, where, origins, errors, protocol_defaults
                )
            continue
        if section in FREE_SECTIONS:
            kind = FREE_SECTIONS[section]
            for key, value in values.items():
                _set(sections, (section, key), kind, value, where(section, key), origins, errors)
            continue
        if section not in SCHEMA:
            errors.append(
                f"{where(section)}: [{section}]: unknown section{_suggest(section, _sections())}"
            )
            continue
        for key, value in values.items():
            known = SCHEMA[section].get(key)
            if known is None:
                errors.append(
                    f"{where(section, key)}: [{section}] {key}: unknown key"
                    f"{_suggest(key, SCHEMA[section])}"
                )
                continue
            _set(sections, (section, key), known, value, where(section, key), origins, errors)


def _merge_plugin(  # noqa: PLR0913, PLR0917 - the state of one merge pass
    plugin: str,
    values: dict[str, Any],
    sections: dict[str, dict[str, Any]],
    where: Any,
    origins: dict[tuple[str, ...], str],
    errors: list[str],
    protocol_defaults: dict[str, dict[str, Any]] | None,
) -> None:
    target = sections.setdefault("protocols", {}).setdefault(plugin, {})
    known = None if protocol_defaults is None else protocol_defaults.get(plugin)
    if protocol_defaults is not None and known is None:
        errors.append(
            f"{where('protocols', plugin)}: [protocols.{plugin}]: no such protocol "
            f"adapter is installed{_suggest(plugin, protocol_defaults)}"
        )
        return
    for key, value in values.items():
        if known is not None and key not in known:
            errors.append(
                f"{where('protocols', plugin, key)}: [protocols.{plugin}] {key}: "
                f"unknown key{_suggest(key, known)}"
            )
            continue
        default = known.get(key) if known is not None else None
        if (
            default is not None
            and type(default) is not type(value)
            and not (
                isinstance(default, float)
                and isinstance(value, int)
                and not isinstance(value, bool)
            )
        ):
            errors.append(
                f"{where('protocols', plugin, key)}: [protocols.{plugin}] {key}: "
                f"expected {t.kind_name(default)}, got {t.kind_name(value)}"
            )
            continue
        target[key] = value
        origins[("protocols", plugin, key)] = where("protocols", plugin, key)


def _set(  # noqa: PLR0913, PLR0917 - the state of one merge pass
    sections: dict[str, dict[str, Any]],
    key_path: tuple[str, str],
    kind: t.ConfigValue,
    value: Any,
    origin: str,
    origins: dict[tuple[str, ...], str],
    errors: list[str],
) -> None:
    section, key = key_path
    try:
        sections.setdefault(section, {})[key] = kind.deserialize(value)
    except ValueError as exc:
        errors.append(f"{origin}: [{section}] {key}: {exc}")
        return
    origins[key_path] = origin


def _apply_environment(
    environ: dict[str, str],
    sections: dict[str, dict[str, Any]],
    origins: dict[tuple[str, ...], str],
    errors: list[str],
    protocol_defaults: dict[str, dict[str, Any]] | None,
) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == ENV_CONFIG:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        value = _parse_env_value(raw)
        if len(parts) == 3 and parts[0] in PLUGIN_SECTIONS:
            _merge_plugin(
                parts[1],
                {parts[2]: value},
                sections,
                lambda *_: f"${name}",  # noqa: B023 - called in this turn
                origins,
                errors,
                protocol_defaults,
            )
            continue
        if len(parts) != 2:
            errors.append(f"${name}: expected PURPLEGW_<SECTION>__<KEY>")
            continue
        section, key = parts
        kind = SCHEMA.get(section, {}).get(key) or FREE_SECTIONS.get(section)
        if kind is None:
            errors.append(f"${name}: [{section}] {key}: unknown key")
            continue
        _set(sections, (section, key), kind, value, f"${name}", origins, errors)


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _check_relations(
    sections: dict[str, dict[str, Any]],
    origins: dict[tuple[str, ...], str],
    errors: list[str],
) -> None:
    """Rules that involve more than one key."""
    sip = sections.get("sip", {})
    if any(addr.startswith("tls:") for addr in sip.get("listen", [])) and not (
        sip.get("tls_certificate") and sip.get("tls_private_key")
    ):
        origin = origins.get(("sip", "listen"), "config")
        errors.append(
            f"{origin}: [sip] listen: a tls: listener needs tls_certificate and tls_private_key"
        )
    proxy = sections.get("proxy", {})
    if bool(proxy.get("http_host")) != bool(proxy.get("http_port")):
        proxy_origin = origins.get(("proxy", "http_host")) or origins.get(("proxy", "http_port"))
        errors.append(f"{proxy_origin or 'config'}: [proxy] http_host and http_port go together")
    actors = sections.get("actors", {})
    if actors.get("backoff_initial", 0) > actors.get("backoff_max", 0):
        origin = origins.get(("actors", "backoff_initial"), "config")
        errors.append(f"{origin}: [actors] backoff_initial is larger than backoff_max")
    _check_cluster(sections, origins, errors)


# Schemes of a database every node of a cluster can share (purplegw.store registers them).
SHARED_DB_SCHEMES = ("mysql", "mariadb", "mysql+pymysql")
CLUSTER_MIN_MARGIN = 1.0  # purplegw.gateway.cluster.MIN_MARGIN


def _check_cluster(
    sections: dict[str, dict[str, Any]],
    origins: dict[tuple[str, ...], str],
    errors: list[str],
) -> None:
    """Cluster mode (a node name) needs a shared database and an address for the others."""
    cluster = sections.get("cluster", {})
    if not cluster.get("node"):
        return  # single node, exactly as before [cluster] existed
    origin = origins.get(("cluster", "node"), "config")
    db_url = sections.get("store", {}).get("db_url", "")
    scheme = db_url.split(":", 1)[0].lower() if ":" in db_url else ""
    if scheme not in SHARED_DB_SCHEMES:
        shown = f"{scheme}://" if scheme else "SQLite (db_url is empty)"
        db_origin = origins.get(("store", "db_url"))
        errors.append(
            f"{origin}: [cluster] node: cluster mode needs a mysql:// db_url shared by "
            f"every node, not {shown}" + (f" (set at {db_origin})" if db_origin else "")
        )
    already = any("[cluster] advertise:" in error for error in errors)  # invalid, reported
    if not cluster.get("advertise") and not already:
        errors.append(
            f"{origin}: [cluster] advertise: cluster mode needs the IP:PORT other "
            "nodes reach this node's SIP front at"
        )
    # A node that cannot renew logs its accounts out within the lease's margin
    # (purplegw.gateway.cluster.Timing: max(1 s, a third of the lease)); an
    # account allowed longer to log out could still be online on the old node
    # when another takes it.
    lease = cluster.get("lease_seconds")
    logout = sections.get("actors", {}).get("logout_timeout")
    if isinstance(lease, int) and isinstance(logout, (int, float)):
        margin = max(CLUSTER_MIN_MARGIN, lease / 3)
        if logout > margin:
            lease_origin = origins.get(("cluster", "lease_seconds"), origin)
            errors.append(
                f"{lease_origin}: [cluster] lease_seconds: {lease} leaves {margin:g} s to log "
                f"accounts out when fencing, less than [actors] logout_timeout ({logout:g} s): "
                f"raise lease_seconds to {int(3 * logout + 0.999)} or lower logout_timeout"
            )


def _suggest(word: str, choices: Any) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _sections() -> list[str]:
    return [*SCHEMA, *FREE_SECTIONS, *PLUGIN_SECTIONS]


def _looks_secret(key: str) -> bool:
    return any(word in key.lower() for word in ("password", "secret", "token", "key"))
