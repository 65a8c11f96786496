"""Exception families shared by the whole gateway.

Each carries a message written for an operator: what is wrong and where.
"""


class GatewayError(Exception):
    """Base of every error purplegw raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class StoreError(GatewayError):
    """The store cannot be used (unreachable, wrong schema, bad URL...)."""


class SchemaTooNewError(StoreError):
    """The database was upgraded by a newer purplegw than this one."""


class AdapterError(GatewayError):
    """A protocol adapter failed to load or to do what it was asked."""


class UnknownProtocolError(GatewayError):
    """A protocol id is neither a known adapter nor one of its aliases."""
