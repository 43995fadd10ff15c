import argparse
import sys

from . import load, render


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="relnotes")
    parser.add_argument("changelog", type=argparse.FileType("r", encoding="utf-8"))
    parser.add_argument("--pre", action="store_true", help="include pre-releases")
    args = parser.parse_args(argv)
    sys.stdout.write(render(load(args.changelog.read()), include_pre=args.pre))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
