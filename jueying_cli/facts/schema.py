"""The facts document's version and key names: the one definition both ends read.

Runs on nodes inside the probe (Python 3.8, standard library only, imports nothing from jueying).
"""

FACTS_SCHEMA = 1
