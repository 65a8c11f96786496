"""One fuzz target under atheris (libFuzzer, coverage-guided), in its own process.

``python -m tests.kit.fuzz_atheris TARGET CORPUS_DIR [libFuzzer flags]``,
started by ``python -m tests.kit.fuzz``.  It lives outside the
``fuzz`` package so that the SIP core is first imported under
``instrument_imports`` (instrumenting everything already loaded instead costs
more time than a short run has).  The corpus directory starts with the
target's seeds and keeps what libFuzzer finds, so a later run resumes from it.
the corpus directory starts with the target's seeds and keeps what libFuzzer
finds, so a later long run resumes from it.  Crashes are written where
``-artifact_prefix`` says.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def main() -> None:
    import atheris  # optional: only the long run needs it

    with atheris.instrument_imports(include=["purplegw"]):
        from tests.kit.fuzz import TARGETS

    name, corpus = sys.argv[1], Path(sys.argv[2])
    target = TARGETS[name]
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for seed in target.seeds():
            digest = hashlib.sha1(seed).hexdigest()  # noqa: S324 - a file name
            (corpus / digest).write_bytes(seed[: target.max_len])

    def one_input(data: bytes) -> None:
        target.run(data, None)

    atheris.Setup(
        [sys.argv[0], f"-max_len={target.max_len}", *sys.argv[3:], str(corpus)], one_input
    )
    atheris.Fuzz()


if __name__ == "__main__":
    main()
