"""Allow ``python -m genguard`` as well as the ``genguard`` console script."""
from genguard.cli import main

if __name__ == "__main__":
    main()
