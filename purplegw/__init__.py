"""purplegw: SIP <-> instant messaging and presence gateway."""

import logging

__version__ = "0.1.0"

# A library never configures logging; the CLI does (purplegw.logs).
logging.getLogger(__name__).addHandler(logging.NullHandler())
