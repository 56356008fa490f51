"""The one redaction: applied to everything this project writes (result files, history,
baselines, reports, junit properties, failure text, server logs).

Two keys find a secret: a name with a secret word in it (``HF_TOKEN``, ``VLLM_API_KEY``,
``DB_PASSWORD``; not ``prompt_tokens``) holds one, as does the argument after a flag named
for one (``--hf-token X``, ``--api-key=X``; not ``--long-prefill-token-threshold 128``);
and the value of every secret seen so far is hidden wherever it appears, in any text (a
token echoed in an engine's log line, an error body). Secrets are registered as they are
met: the session's API key, env values under secret names, secret flags' arguments.

A process that never saw the secrets (the reaper of a killed session's server) hides them
by their fingerprints: keyed digests the session left in its server records.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

HIDDEN = "<redacted>"
SECRET_WORDS = frozenset({"token", "key", "apikey", "secret", "password", "passwd",
                          "credential", "credentials"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def secret_name(name: str) -> bool:
    """Whether an env var, field or flag name holds a secret: one of its words (split at
    _, -, . and camelCase) is a secret word."""
    return any(w.lower() in SECRET_WORDS for w in _WORD.findall(name))


def secret_flag(arg: str) -> bool:
    """Whether a command-line flag takes a secret: its last word is a secret word
    (``--hf-token``, ``--api-key``); a flag that names a figure or a switch with such a word
    inside (``--long-prefill-token-threshold``, ``--return-tokens-as-token-ids``) does not."""
    words = _WORD.findall(arg)
    return arg.startswith("-") and bool(words) and words[-1].lower() in SECRET_WORDS


MIN_SECRET_LEN = 6
"""Shorter values are not hidden inside other text (they would blank out ordinary words)."""

_known: set[str] = set()


def register(*values: str | None) -> None:
    """Remember secret values, so they are hidden wherever they turn up."""
    for value in values:
        if value and len(value) >= MIN_SECRET_LEN:
            _known.add(value)


def register_env(env: Mapping[str, str]) -> None:
    """Remember the values of secret-named env entries."""
    register(*(v for k, v in env.items() if secret_name(k)))


def register_argv(argv: Iterable[str]) -> None:
    """Remember the arguments of secret flags on a command line."""
    previous = ""
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if eq and secret_flag(flag):
            register(value)
        elif secret_flag(previous):
            register(arg)
        previous = arg


def register_process_env() -> None:
    """This process's own secret-named env (HF_TOKEN and kin reach engines through it)."""
    register_env(dict(os.environ))


def text(value: str) -> str:
    """``value`` with every known secret hidden."""
    for secret in sorted(_known, key=len, reverse=True):
        if secret in value:
            value = value.replace(secret, HIDDEN)
    return value


def argv(args: Iterable[str]) -> list[str]:
    """A command line with secret flags' arguments and known secrets hidden."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        flag, eq, _ = arg.partition("=")
        if hide_next:
            out.append(HIDDEN)
        elif eq and secret_flag(flag):
            out.append(f"{flag}={HIDDEN}")
        else:
            out.append(text(arg))
        hide_next = not eq and secret_flag(arg)
    return out


def redact(obj: Any) -> Any:
    """A JSON-like document with every secret hidden: values under secret names, secret
    flags' arguments in lists, and known secret values anywhere in strings."""
    if isinstance(obj, Mapping):
        # Secrets are strings (env values, tokens): a number under a name such as
        # total_token_throughput is a figure.
        return {k: (HIDDEN if isinstance(k, str) and secret_name(k) and isinstance(v, str)
                    and v != "" else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        if all(isinstance(x, str) for x in obj):
            return argv(obj)
        return [redact(x) for x in obj]
    if isinstance(obj, str):
        return text(obj)
    return obj


Fingerprint = tuple[int, str]
"""(length in bytes, keyed digest) of one secret."""


def _digest(value: bytes, salt: bytes) -> str:
    return hashlib.blake2b(value, key=salt, digest_size=16).hexdigest()


def fingerprints(salt: bytes) -> list[Fingerprint]:
    """The known secrets as keyed digests: what a record may keep so that another process
    can find them in a log without ever holding them."""
    return sorted({(len(s.encode()), _digest(s.encode(), salt)) for s in _known})


def text_by_fingerprints(value: str, salt: bytes, prints: Iterable[Fingerprint]) -> str:
    """``value`` with every span whose keyed digest is one of ``prints`` hidden (a window
    of each secret's length slides over the text: a few seconds for megabytes)."""
    wanted: dict[int, set[str]] = {}
    for length, digest in prints:
        if length >= MIN_SECRET_LEN:
            wanted.setdefault(int(length), set()).add(str(digest))
    data = value.encode()
    for length in sorted(wanted, reverse=True):
        digests, out, i, last = wanted[length], [], 0, 0
        while i + length <= len(data):
            if _digest(data[i:i + length], salt) in digests:
                out += [data[last:i], HIDDEN.encode()]
                i = last = i + length
            else:
                i += 1
        data = b"".join([*out, data[last:]])
    return data.decode(errors="replace")
