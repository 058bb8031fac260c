"""python -m bakery"""

from .cli import main

main()
