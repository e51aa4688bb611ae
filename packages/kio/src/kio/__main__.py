"""Command line: ``kio URL [--file-hash H] [--extract] [--cache-dir D]`` (also
``python -m kio``).

Downloads (or finds in the cache) the file at URL and prints its local path on stdout.
Exit status: 0 on success; 2 for a usage error (a bad flag or flag value), with the usage
line; 1 for any other error, reported as one line on stderr without a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from kio._cache import ENV_HOME, ENV_OFFLINE
from kio._get_file import get_file

__all__ = ["main"]

# get_file's argument names and the flags that set them, so that messages speak of flags.
_FLAGS = {
    "fname": "--fname",
    "origin": "URL",
    "file_hash": "--file-hash",
    "md5_hash": "--file-hash",
    "hash_algorithm": "--hash-algorithm",
    "extract": "--extract",
    "archive_format": "--archive-format",
    "cache_dir": "--cache-dir",
    "cache_subdir": "--cache-subdir",
    "force_download": "--force-download",
    "retries": "--retries",
    "timeout": "--timeout",
    "offline": "--offline",
    "unsafe": "--unsafe",
    "lock_timeout": "--lock-timeout",
    "max_retry_after": "--max-retry-after",
}
_MENTION = re.compile(
    r"\b(" + "|".join(sorted(_FLAGS, key=len, reverse=True)) + r")\b"
    r"(?:=(True|'[^']*'|\"[^\"]*\"|[^\s,;:)]+))?"
)


def _in_flags(message: str) -> str:
    """``message`` with ``file_hash=...`` / ``file_hash must`` told as flags."""

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        spelled = _FLAGS[name]
        if value is None:
            # A bare word: only where it is clearly the argument ("retries must ...").
            rest = message[match.end() : match.end() + 6]
            return spelled if ("_" in name or rest.startswith((" must", " has"))) else name
        if value == "True":
            return spelled
        if len(value) > 2 and value[0] == value[-1] and value[0] in "'\"":
            inner = value[1:-1]
            if inner and not any(c.isspace() or c in "'\"$;&|" for c in inner):
                value = inner  # as typed on a command line
        return f"URL {value}" if spelled == "URL" else f"{spelled} {value}"

    return _MENTION.sub(flag, message)


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Download a file into the cache (if not there yet) and print its path.",
        epilog=(
            f"The cache root is --cache-dir, else ${ENV_HOME}, else $KERAS_HOME, else "
            f"~/.keras. ${ENV_OFFLINE}=1 is --offline. Exit status: 0 done, 1 error, "
            "2 usage error."
        ),
    )
    parser.add_argument("url", help="http://, https:// or file:// URL")
    parser.add_argument("--fname", default=None, help="name in the cache (default: from URL)")
    parser.add_argument(
        "--file-hash", default=None, help="expected hex digest (or sha256:<hex>, md5:<hex>)"
    )
    parser.add_argument(
        "--hash-algorithm", default="auto", help="auto (default), md5, sha256, sha1, sha512"
    )
    parser.add_argument("--extract", action="store_true", help="extract the archive")
    parser.add_argument("--archive-format", default="auto", help="auto (default), tar, zip")
    parser.add_argument(
        "--unsafe",
        choices=("raise", "skip"),
        default="raise",
        help="unsafe archive members: raise (default) or skip them with a warning",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help=f"cache root (default: ${ENV_HOME}, else $KERAS_HOME, else ~/.keras)",
    )
    parser.add_argument("--cache-subdir", default="datasets", help="default: datasets")
    parser.add_argument("--force-download", action="store_true", help="download again")
    parser.add_argument("--retries", type=int, default=3, help="default: 3")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--lock-timeout", type=float, default=None, help="seconds (default: wait)")
    parser.add_argument("--max-retry-after", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help=f"serve from the cache only (also ${ENV_OFFLINE}=1)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None)
    group.add_argument("--quiet", "-q", dest="progress", action="store_false")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        prog: the program name shown in messages (default: ``kio``).

    Returns:
        0 on success, 1 on an error, 2 on a usage error (argparse exits with 2 itself).
    """
    parser = _parser(prog or "kio")
    args = parser.parse_args(argv)
    try:
        path = get_file(
            args.fname,
            args.url,
            file_hash=args.file_hash,
            hash_algorithm=args.hash_algorithm,
            extract=args.extract,
            archive_format=args.archive_format,
            cache_dir=args.cache_dir,
            cache_subdir=args.cache_subdir,
            force_download=args.force_download,
            retries=args.retries,
            timeout=args.timeout,
            offline=args.offline,
            progress=args.progress,
            unsafe=args.unsafe,
            lock_timeout=args.lock_timeout,
            max_retry_after=args.max_retry_after,
        )
    except KeyboardInterrupt:
        print(
            f"{parser.prog}: interrupted (a partial download is kept and resumes)", file=sys.stderr
        )
        return 130
    except Exception as exc:  # every error: one line, no traceback
        message = _one_line(_in_flags(str(exc)) or type(exc).__name__)
        if getattr(exc, "kio_bad_argument", False):
            parser.print_usage(sys.stderr)
            print(f"{parser.prog}: error: {message}", file=sys.stderr)
            return 2
        kind = "" if isinstance(exc, (OSError, ValueError)) else f"{type(exc).__name__}: "
        print(f"{parser.prog}: error: {kind}{message}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _console() -> None:
    """The ``kio`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main(prog="python -m kio"))
