"""Entry point. `python main.py` opens the viewer on the bundled sample; `python main.py --help`
lists the commands (view, info, convert, bench)."""
import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
