"""Command line: ``python -m kio URL [--file-hash H] [--extract] [--cache-dir D]``.

Downloads (or finds in the cache) the file at URL and prints its local path on stdout.
Errors go to stderr with exit status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kio._archive import UnsafeArchiveError
from kio._errors import DownloadError
from kio._get_file import get_file

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kio",
        description="Download a file into the cache (if not there yet) and print its path.",
    )
    parser.add_argument("url", help="http://, https:// or file:// URL")
    parser.add_argument("--fname", default=None, help="name in the cache (default: from URL)")
    parser.add_argument("--file-hash", default=None, help="expected hex digest")
    parser.add_argument(
        "--hash-algorithm", default="auto", help="auto (default), md5, sha256, sha1, sha512"
    )
    parser.add_argument("--extract", action="store_true", help="extract the archive")
    parser.add_argument("--archive-format", default="auto", help="auto (default), tar, zip")
    parser.add_argument("--cache-dir", default=None, help="cache root (default $KIO_HOME)")
    parser.add_argument("--cache-subdir", default="datasets", help="default: datasets")
    parser.add_argument("--force-download", action="store_true", help="download again")
    parser.add_argument("--retries", type=int, default=3, help="default: 3")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--offline", action="store_true", default=None, help="cache only")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None)
    group.add_argument("--quiet", "-q", dest="progress", action="store_false")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
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
        )
    except (DownloadError, UnsafeArchiveError, ValueError, TypeError, OSError) as exc:
        print(f"kio: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kio: interrupted (a partial download is kept and will resume)", file=sys.stderr)
        return 130
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
