"""Credentials out of printed URLs: one rule for every place a URL is shown.

``mask_url`` keeps the scheme, the user name and everything after the last
``@``, and replaces the password: ``mysql://kam:p@ss/w@rd@db1/kamailio``
becomes ``mysql://kam:********@db1/kamailio``.

The password is everything between the first ``:`` after ``//`` and the
*last* ``@``, because operators write passwords with ``@``, ``/`` or ``:``
in them without percent-encoding, and a rule that stops at the first ``@``
or ``/`` (as ``urllib.parse`` does) prints the rest of such a password as a
"host" or a "path".  ``purplegw.store.database.split_url`` reads URLs by
the same rule, so what is masked is exactly what is used as the password.
The user name stays visible: it is no secret, and the server's own errors
("Access denied for user ...") name it anyway.
"""

from __future__ import annotations

MASK = "********"


def mask_url(url: str) -> str:
    """``url`` with the password between ``user:`` and the last ``@`` masked.

    In text without ``//`` before the last ``@`` (a malformed URL, shown
    in its parse error) scheme and user cannot be told apart: everything
    from the first ``:`` to the last ``@`` is masked.
    """
    at = url.rfind("@")
    if at < 0:
        return url
    slashes = url.find("//", 0, at)
    colon = url.find(":", slashes + 2 if slashes >= 0 else 0, at)
    if colon < 0:
        return url  # a user name only: no password to hide
    return f"{url[: colon + 1]}{MASK}{url[at:]}"
