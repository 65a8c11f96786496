"""The SIP I/O driver: sockets, framing, timers and the front loop that runs the sans-IO SIP core."""
