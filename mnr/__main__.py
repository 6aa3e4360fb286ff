"""`python -m mnr` is the same as the `mnr` console script (and what `torchrun -m mnr` runs)."""

from mnr.cli import main

if __name__ == "__main__":
    main()
