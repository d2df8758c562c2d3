"""The `gesture-cache` command: errors become one line and a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from gesture_cache.cli.commands import EXIT_SETUP
from gesture_cache.cli.parser import build_parser
from gesture_cache.common.errors import GestureCacheError
from gesture_cache.common.interrupts import acted_on, handled, watching

EXIT_BROKEN_PIPE = 141  # what a shell reports for a command whose reader went away (SIGPIPE)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a flag that cannot be used (already said)
        return stop.code
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # JAX says at INFO that it looked for a TPU
        logging.getLogger("jax").setLevel(logging.WARNING)
        # OpenCV prints its own "[ERROR...] imread_ ..." before the one line that names the
        # file; read when cv2 is first imported, which is later than this
        os.environ.setdefault("OPENCV_LOG_LEVEL", "FATAL")
    with watching():
        return dispatch(args)


def dispatch(args: argparse.Namespace) -> int:
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except KeyboardInterrupt:
        handled()
        print("interrupted; finished work is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `gesture-cache info CACHE | head -1`: the reader has gone, so say nothing more;
        # stdout is pointed at /dev/null so that Python's final flush cannot complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:
        if acted_on(error):  # a library turned the Ctrl-C into its own error
            print("interrupted; finished work is kept", file=sys.stderr)
            return 130
        if not isinstance(error, GestureCacheError):
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"gesture-cache {args.command}: error: {error}", file=sys.stderr)
        return EXIT_SETUP
