"""Protocol adapters, discovered through the ``purplegw.protocols`` entry points."""
