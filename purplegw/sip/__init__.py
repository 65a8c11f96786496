"""Sans-IO SIP core: parser, messages, transactions, dialogs, subscriptions, auth.

Nothing here opens a socket, starts a thread or reads a clock; see
docs/sip-core.md for the design and purplegw/actors/ for the I/O side.
"""
