"""The ``nbce`` command: ``nbce bench [options]`` (see ``nbce bench --help``)."""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: nbce bench [--help] [options]\n\n  bench    time nbce against its memory roofline, scipy and PyTorch")
        return 0
    if argv[0] != "bench":
        print(f"nbce: unknown command {argv[0]!r} (try: nbce bench --help)", file=sys.stderr)
        return 2
    from .bench import main as bench_main

    return bench_main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
