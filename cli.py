"""`python cli.py …` does what `ivbench …` does, from a checkout."""
from ivbench.cli import main

if __name__ == "__main__":
    main()
