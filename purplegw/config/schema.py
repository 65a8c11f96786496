"""The config schema: every section and key purplegw knows, with its type.

Defaults are not here: they live, documented, in ``etc/purplegw.toml``
(packaged as ``purplegw/config/default.toml``), and a test checks that file
and this schema name exactly the same keys.  Per-protocol sections
(``[protocols.<name>]``) are checked against each adapter's own defaults.
"""

from __future__ import annotations

from purplegw.config import types as t

SCHEMA: dict[str, dict[str, t.ConfigValue]] = {
    "sip": {
        "listen": t.List(t.ListenAddress()),
        "domain": t.Hostname(),
        "outbound_proxy": t.String(),
        "trusted": t.List(t.Network()),
        "tls_certificate": t.Path(),
        "tls_private_key": t.Path(),
        "max_message_size": t.Integer(minimum=1024, maximum=16 * 1024 * 1024),
        "max_header_size": t.Integer(minimum=1024, maximum=16 * 1024 * 1024),
        "max_headers": t.Integer(minimum=16),
        "tcp_idle_timeout": t.Integer(minimum=1),
        "tcp_message_timeout": t.Float(minimum=0.1),
        "max_connections": t.Integer(minimum=1),
        "max_connections_per_source": t.Integer(minimum=0),
        "max_outgoing_connections": t.Integer(minimum=1),
        "evict_busiest": t.Boolean(),
        "rate_per_source": t.Float(minimum=0.0),
        "burst_per_source": t.Integer(minimum=1),
        "rate_per_user": t.Float(minimum=0.0),
        "burst_per_user": t.Integer(minimum=1),
        "rate_limit_table_size": t.Integer(minimum=16),
        "t1_ms": t.Integer(minimum=1),
        "t2_ms": t.Integer(minimum=1),
        "t4_ms": t.Integer(minimum=1),
        "auth_algorithms": t.List(t.String(optional=False, choices=("MD5", "SHA-256"))),
    },
    "store": {
        "data_dir": t.Path(optional=False),
        "db_url": t.Secret(),  # may carry a MySQL password
        "db_table": t.Identifier(),
        "subscriber_table": t.Identifier(),
        "key_file": t.Path(),
        "connect_timeout": t.Integer(minimum=1),
    },
    "proxy": {
        "http_host": t.Hostname(),
        "http_port": t.Port(),
        "username": t.String(),
        "password": t.Secret(),
    },
    "actors": {
        "workers": t.Integer(minimum=0, maximum=256),
        "runtime": t.String(optional=False, choices=("shared_loop", "thread_per_account")),
        "login_timeout": t.Float(minimum=0.1),
        "max_concurrent_logins": t.Integer(minimum=1),
        "send_timeout": t.Float(minimum=0.1),
        "logout_timeout": t.Float(minimum=0.1),
        "backoff_initial": t.Float(minimum=0.01),
        "backoff_max": t.Float(minimum=0.01),
        "backoff_jitter": t.Float(minimum=0.0, maximum=1.0),
        "flap_attempts": t.Integer(minimum=1),
        "flap_window": t.Float(minimum=0.1),
        "flap_retry_in": t.Float(minimum=0.1),
        "flap_max_retry": t.Integer(minimum=-1),
        "queue_limit": t.Integer(minimum=0),
        "shutdown_timeout": t.Float(minimum=0.1),
        "worker_restart_delay": t.Float(minimum=0.0),
        "worker_start_timeout": t.Float(minimum=0.1),
        "gc_threshold": t.Integer(minimum=0),
    },
    "presence": {
        "authorization": t.String(optional=False, choices=("ask", "allow_roster", "deny")),
        "keep_online": t.Boolean(),
        "publish_min_expires": t.Integer(minimum=1),
        "publish_max_expires": t.Integer(minimum=1),
        "publish_default_expires": t.Integer(minimum=1),
        "subscribe_min_expires": t.Integer(minimum=1),
        "subscribe_max_expires": t.Integer(minimum=1),
        "subscribe_default_expires": t.Integer(minimum=1),
        "upstream": t.String(),
        "upstream_expires": t.Integer(minimum=60),
        "max_publications_per_user": t.Integer(minimum=1),
        "max_subscriptions_per_user": t.Integer(minimum=1),
        "buddy_list_user": t.String(),
    },
    "messaging": {
        "max_text_bytes": t.Integer(minimum=0),
        "retry_attempts": t.Integer(minimum=1),
        "retry_max_age": t.Float(minimum=0.0),
        "notify_failures": t.Boolean(),
        "outbox_max_messages": t.Integer(minimum=0),
        "outbox_max_bytes": t.Integer(minimum=0),
        "sender_rate": t.Float(minimum=0.0),
        "sender_burst": t.Integer(minimum=1),
        "dead_binding_timeouts": t.Integer(minimum=0),
        "strangers": t.String(optional=False, choices=("allow", "deny")),
    },
    "gateway": {
        "contact_user": t.String(),
        "notify_account_trouble": t.Boolean(),
        "trouble_min_interval": t.Float(minimum=0.0),
    },
    "groupchat": {
        "nick": t.String(optional=False),
        "prefix_nick": t.Boolean(),
        "history": t.Integer(minimum=0, maximum=1000),
        "room_rate": t.Float(minimum=0.0),
        "room_burst": t.Integer(minimum=1),
    },
    "metrics": {
        "listen": t.HostPort(),
        "cache_seconds": t.Float(minimum=0.0),
    },
    "daemon": {
        "pid_file": t.Path(),
        "control_socket": t.Path(),
    },
    "cluster": {
        "node": t.NodeName(),
        "advertise": t.IpPort(),
        "lease_seconds": t.Integer(minimum=3, maximum=3600),
    },
    "logging": {
        "level": t.LogLevel(),
        "format": t.String(optional=False),
        "file": t.Path(),
        "sip_wire": t.Boolean(),
    },
}

# Sections whose keys are free-form (name -> value).
FREE_SECTIONS: dict[str, t.ConfigValue] = {
    "loglevels": t.LogLevel(),
}

# Sections holding one sub-table per plugin: [protocols.<name>].
PLUGIN_SECTIONS = ("protocols",)
