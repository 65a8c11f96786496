"""The SIP I/O driver: sockets, framing, timers and the loop that runs the sans-IO SIP core."""
